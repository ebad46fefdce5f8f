"""Audio decoding, channel mapping, resampling and length fitting.

Decoding uses soundfile (libsndfile); resampling uses ``torchaudio.functional.resample``.
Every failure to read a file raises :class:`~audiointerp.errors.AudioFileError` naming the file and the cause.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from audiointerp.errors import AudioFileError

__all__ = [
    "SilentAudioWarning",
    "SUPPORTED_CHANNELS",
    "check_audio_file",
    "check_audio_params",
    "fit_length",
    "load_audio",
]

SUPPORTED_CHANNELS = (1, 2)


class SilentAudioWarning(UserWarning):
    """An audio file decodes to all-zero samples."""


def check_audio_params(sample_rate: object, channels: object) -> None:
    """Raise ValueError unless ``sample_rate`` is a positive int and ``channels`` is 1 or 2."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    if isinstance(channels, bool) or channels not in SUPPORTED_CHANNELS:
        raise ValueError(f"channels must be one of {SUPPORTED_CHANNELS}, got {channels!r}")


def check_audio_file(path: str | os.PathLike[str], *, read_header: bool = True) -> int:
    """Cheaply check that ``path`` exists and has a readable header with frames > 0; return the frame count.

    With ``read_header=False`` only existence and a non-zero size are checked (and -1 is returned).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioFileError(p, "file not found") from None
    except OSError as exc:
        raise AudioFileError(p, f"cannot access ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise AudioFileError(p, "not a regular file")
    if st.st_size == 0:
        raise AudioFileError(p, "file is empty (0 bytes)")
    if not read_header:
        return -1
    try:
        info = sf.info(str(p))
    except Exception as exc:  # libsndfile raises several types for unreadable headers
        raise AudioFileError(p, f"unreadable audio header ({_short(exc)})") from exc
    if info.frames <= 0:
        raise AudioFileError(p, "contains no audio frames")
    return int(info.frames)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _map_channels(data: np.ndarray, channels: int) -> np.ndarray:
    """``data`` is [C_in, T]; return [channels, T]: mean to mono, duplicate mono, or keep the first two."""
    c_in = data.shape[0]
    if channels == 1:
        return data if c_in == 1 else data.mean(axis=0, keepdims=True, dtype=np.float32)
    if c_in == 1:
        return np.repeat(data, channels, axis=0)
    return data[:channels]


def load_audio(path: str | os.PathLike[str], sample_rate: int, channels: int = 1) -> torch.Tensor:
    """Decode ``path`` to float32 ``[channels, T]`` at ``sample_rate``.

    Multi-channel audio is averaged to mono (``channels=1``); mono is duplicated to stereo and stereo is
    kept (``channels=2``; files with more channels keep their first two). Missing, empty or corrupt files
    raise AudioFileError; all-zero audio emits a :class:`SilentAudioWarning` naming the file.
    """
    check_audio_params(sample_rate, channels)
    p = Path(path)
    if not p.is_file():
        raise AudioFileError(p, "file not found" if not p.exists() else "not a regular file")
    if p.stat().st_size == 0:
        raise AudioFileError(p, "file is empty (0 bytes)")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioFileError(p, f"cannot decode ({_short(exc)})") from exc
    if data.shape[0] == 0:
        raise AudioFileError(p, "contains no audio frames")
    if not np.isfinite(data).all():
        raise AudioFileError(p, "contains NaN or infinite samples")
    if not data.any():
        warnings.warn(SilentAudioWarning(f"audio file {str(p)!r} is silent (all samples are zero)"), stacklevel=2)
    mapped = _map_channels(np.ascontiguousarray(data.T), channels)
    audio = torch.from_numpy(np.ascontiguousarray(mapped, dtype=np.float32))
    if int(sr) != int(sample_rate):
        audio = AF.resample(audio, int(sr), int(sample_rate))
    return audio.to(torch.float32).contiguous()


def fit_length(audio: torch.Tensor, n_samples: int, offset: int | None = None) -> torch.Tensor:
    """Crop ``audio [..., T]`` to ``n_samples`` starting at ``offset`` (None: 0), or zero-pad at the end.

    ``offset`` must lie in ``[0, max(T - n_samples, 0)]``.
    """
    if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples <= 0:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    n = int(n_samples)
    length = audio.shape[-1]
    start = 0 if offset is None else int(offset)
    if start < 0 or start > max(length - n, 0):
        raise ValueError(f"offset {offset} out of range [0, {max(length - n, 0)}] for length {length} -> {n}")
    if length >= n:
        return audio[..., start : start + n]
    pad = torch.zeros(*audio.shape[:-1], n - length, dtype=audio.dtype, device=audio.device)
    return torch.cat([audio, pad], dim=-1)
