"""Errors that name their cause. Every user-facing failure raises one of these."""

from __future__ import annotations


class AudioInterpError(Exception):
    """Base class of the project's errors."""


class ConfigError(AudioInterpError, ValueError):
    """A configuration key or value is wrong (unknown key, missing required value, bad type)."""


class AudioFileError(AudioInterpError, OSError):
    """An audio file is missing, corrupt, empty or otherwise unreadable. The message names the file."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"audio file {self.path!r}: {reason}")


class DatasetError(AudioInterpError, ValueError):
    """A manifest or dataset layout is wrong: missing column, unknown label, empty split."""


class CheckpointError(AudioInterpError, RuntimeError):
    """A checkpoint or export is missing, corrupt, tampered with, or of the wrong architecture."""


class NonFiniteLossError(AudioInterpError, FloatingPointError):
    """Training or evaluation became NaN or infinite: the loss, the gradients (20 fp16 updates in a row skipped by
    the gradient scaler) or an evaluation output. Nothing is saved after it; the message names the last good
    checkpoint (verified finite), or the output, metrics and run for an evaluation."""


class NonFiniteStateError(NonFiniteLossError):
    """A parameter or buffer of the network became NaN or infinite (e.g. a BatchNorm `running_var`, which can
    overflow while the loss is still finite). The message names the tensors, the update and the last checkpoint
    verified finite; nothing is saved after the bad update."""
