"""Errors that name their cause. Every user-facing failure raises one of these."""

from __future__ import annotations

import difflib
import errno
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional


def closest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate, or '' when nothing is close: for errors naming a bad key,
    name or value."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


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


class DownloadError(AudioInterpError, RuntimeError):
    """A download or a cached download failed: unreachable or refused URL, an HTML page, a truncated file, a hash
    mismatch, a file that does not load into its model, or a file missing while downloads are off. The message
    names the URL (or hub repository) and the cache path; nothing that failed is left in the cache."""


class NonFiniteLossError(AudioInterpError, FloatingPointError):
    """Training or evaluation became NaN or infinite: the loss, the gradients (20 fp16 updates in a row skipped by
    the gradient scaler) or an evaluation output. Nothing is saved after it; the message names the last good
    checkpoint (verified finite), or the output, metrics and run for an evaluation."""


class NonFiniteStateError(NonFiniteLossError):
    """A parameter or buffer of the network became NaN or infinite (e.g. a BatchNorm `running_var`, which can
    overflow while the loss is still finite). The message names the tensors, the update and the last checkpoint
    verified finite; nothing is saved after the bad update."""


# --- writes that fail for want of space or permission ------------------------------------------------------
_WRITE_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
_LOW_SPACE_BYTES = 1 << 20  # under 1 MiB free: the device is taken as full


class StorageError(AudioInterpError, OSError):
    """A file or folder could not be written: the device is full, read-only, over quota or not writable. The
    message names what was being written, its path and the cause; what was written before stays intact."""

    def __init__(self, what: str, path: object, cause: str) -> None:
        self.what, self.path, self.cause = what, str(path), cause
        super().__init__(f"cannot write the {what} {self.path}: {cause}")


def _existing(path: Path) -> Path:
    """`path` or its nearest existing parent."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(os.sep)


def write_failure_cause(err: BaseException, path: object) -> Optional[str]:
    """Why writing at `path` failed, when the cause is the storage (full, read-only, no permission), else None.

    An OSError's errno says it directly. C++ writers lose the errno (torch.save's "basic_ios::clear: iostream
    error" or "PytorchStreamWriter failed writing file", HDF5's "Can't write data"), so for those the place is
    probed: under 1 MiB free, or a folder that cannot be written, names the cause. Rust writers (safetensors)
    keep it in their message ("os error 28").
    """
    if isinstance(err, AudioInterpError):
        return None
    if isinstance(err, OSError) and err.errno in _WRITE_CAUSES:
        return _WRITE_CAUSES[err.errno]
    text = str(err)
    code = re.search(r"os error (\d+)", text)  # Rust writers (safetensors): "I/O error: ... (os error 28)"
    if code and int(code.group(1)) in _WRITE_CAUSES:
        return _WRITE_CAUSES[int(code.group(1))]
    if not isinstance(err, (OSError, RuntimeError)):
        return None
    place = _existing(Path(os.fspath(path)))  # type: ignore[arg-type]
    folder = place if place.is_dir() else place.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < _LOW_SPACE_BYTES:
        return _WRITE_CAUSES[errno.ENOSPC]
    if not os.access(folder, os.W_OK):
        return _WRITE_CAUSES[errno.EROFS] if stats.f_flag & os.ST_RDONLY else _WRITE_CAUSES[errno.EACCES]
    return None


@contextmanager
def writing(what: str, path: object) -> Iterator[None]:
    """Turn a storage failure inside the block into a StorageError naming `what`, the path (the failing file
    when the OSError names one, else `path`) and the cause; other errors pass through unchanged."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 (only storage failures are translated; the rest is re-raised as is)
        cause = write_failure_cause(err, getattr(err, "filename", None) or path)
        if cause is None:
            raise
        raise StorageError(what, getattr(err, "filename", None) or path, cause) from err
