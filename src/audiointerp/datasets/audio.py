"""Audio decoding, channel mapping, resampling and length fitting.

Decoding uses soundfile (libsndfile); resampling uses ``torchaudio.functional.resample``.
Every failure to read a file raises :class:`~audiointerp.errors.AudioFileError` naming the file and the cause,
including a WAV or AIFF cut short of the length its header states (libsndfile alone reads it as a shorter clip).
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

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
    "header_truncation",
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

    A WAV or AIFF cut short of the length its header states raises AudioFileError naming both lengths
    (:func:`header_truncation`).

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
    truncated = header_truncation(p)
    if truncated is not None:
        raise AudioFileError(p, truncated)
    return int(info.frames)


# WAVE format tags whose frames are fixed-size blocks of ``block_align`` bytes: PCM, IEEE float, A-law, mu-law
_FIXED_FRAME_TAGS = frozenset({0x0001, 0x0003, 0x0006, 0x0007})
_EXTENSIBLE_TAG = 0xFFFE
_UNKNOWN_SIZES = frozenset({0, 0xFFFFFFFF})  # what streaming writers leave when they cannot seek back
# AIFF-C compression types whose frames are channels * ceil(sample bits / 8) bytes (big/little-endian PCM, floats)
_AIFC_PLAIN = frozenset({b"NONE", b"sowt", b"twos", b"raw ", b"in24", b"in32", b"fl32", b"FL32", b"fl64", b"FL64"})
_AIFC_WIDTH = {b"fl32": 32, b"FL32": 32, b"fl64": 64, b"FL64": 64, b"in24": 24, b"in32": 32}


def _truncated(declared_frames: int, held_frames: int) -> str:
    return f"truncated: the header declares {declared_frames} frames but the file holds only {held_frames}"


def header_truncation(path: str | os.PathLike[str]) -> str | None:
    """Why the WAV or AIFF file ``path`` is cut short of the length its header states, or None when it is not
    (or when there is no stated length to compare with).

    libsndfile quietly shortens a data chunk that runs past the end of the file, so a file cut short reads as a
    shorter clip. This reads the chunk headers itself: for WAV (RIFF, RIFX, RF64), the data chunk size against
    the bytes after it; for AIFF / AIFF-C, the COMM chunk's frame count against the frames the SSND chunk holds.
    The reason ("truncated: the header declares N frames but the file holds only M") names both lengths in frames,
    or in bytes for WAV encodings without fixed-size frames (ADPCM, GSM, ...). None for other formats (FLAC,
    OGG, MP3 ... state no such count), for a WAV data size left unknown by a streaming writer (0 or 0xFFFFFFFF),
    for compressed AIFF-C, and for headers it cannot parse (libsndfile reports those).
    """
    try:
        with open(path, "rb") as fh:
            file_size = os.fstat(fh.fileno()).st_size
            head = fh.read(12)
            if len(head) < 12:
                return None
            if head[8:12] == b"WAVE" and head[:4] in (b"RIFF", b"RIFX", b"RF64"):
                return _wav_truncation(fh, head[:4], file_size)
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                return _aiff_truncation(fh, head[8:12] == b"AIFC", file_size)
    except (OSError, struct.error):
        return None
    return None


def _wav_truncation(fh: BinaryIO, riff: bytes, file_size: int) -> str | None:
    """:func:`header_truncation` for a WAV whose 12-byte RIFF header ``fh`` has just been read."""
    endian = ">" if riff == b"RIFX" else "<"
    rf64_data_size: int | None = None
    block_align = 0
    format_tag: int | None = None
    pos = 12
    while pos + 8 <= file_size:
        fh.seek(pos)
        chunk_id, size = struct.unpack(endian + "4sI", fh.read(8))
        body = pos + 8
        if chunk_id == b"ds64" and size >= 16:
            rf64_data_size = struct.unpack("<QQ", fh.read(16))[1]
        elif chunk_id == b"fmt " and size >= 14:
            fmt = fh.read(min(size, 26))
            format_tag, _, _, _, block_align = struct.unpack(endian + "HHIIH", fmt[:14])
            if format_tag == _EXTENSIBLE_TAG and len(fmt) >= 26:
                format_tag = struct.unpack(endian + "H", fmt[24:26])[0]  # first field of the SubFormat GUID
        elif chunk_id == b"data":
            if riff == b"RF64" and size == 0xFFFFFFFF:
                if rf64_data_size is None:
                    return None
                size = rf64_data_size
            elif size in _UNKNOWN_SIZES:
                return None
            held = file_size - body
            if size <= held:
                return None
            if format_tag in _FIXED_FRAME_TAGS and block_align > 0:
                return _truncated(size // block_align, held // block_align)
            return f"truncated: the header declares a data chunk of {size} bytes but the file holds only {held}"
        pos = body + size + (size & 1)
    return None


def _aiff_truncation(fh: BinaryIO, aifc: bool, file_size: int) -> str | None:
    """:func:`header_truncation` for an AIFF / AIFF-C whose 12-byte FORM header ``fh`` has just been read."""
    frames: int | None = None
    frame_bytes = 0
    pos = 12
    while pos + 8 <= file_size:
        fh.seek(pos)
        chunk_id, size = struct.unpack(">4sI", fh.read(8))
        body = pos + 8
        if chunk_id == b"COMM" and size >= 18:
            comm = fh.read(min(size, 22))
            channels, frames, bits = struct.unpack(">hIh", comm[:8])
            compression = comm[18:22] if aifc and len(comm) >= 22 else b"NONE"
            if compression not in _AIFC_PLAIN:
                return None
            bits = _AIFC_WIDTH.get(compression, bits)
            frame_bytes = channels * ((bits + 7) // 8)
        elif chunk_id == b"SSND" and size >= 8:
            if frames is None or frame_bytes <= 0:
                return None
            offset = struct.unpack(">I", fh.read(4))[0]
            held = (file_size - (body + 8 + offset)) // frame_bytes
            return None if held >= frames else _truncated(frames, max(held, 0))
        pos = body + size + (size & 1)
    return None


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
    kept (``channels=2``; files with more channels keep their first two). Missing, empty, corrupt or
    truncated (WAV / AIFF cut short of its header's length: :func:`header_truncation`) files raise AudioFileError; all-zero
    audio emits a :class:`SilentAudioWarning` naming the file.
    """
    check_audio_params(sample_rate, channels)
    p = Path(path)
    if not p.is_file():
        raise AudioFileError(p, "file not found" if not p.exists() else "not a regular file")
    if p.stat().st_size == 0:
        raise AudioFileError(p, "file is empty (0 bytes)")
    truncated = header_truncation(p)
    if truncated is not None:
        raise AudioFileError(p, truncated)
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
