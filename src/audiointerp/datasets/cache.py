"""On-disk cache of decoded, resampled audio: one memory-mapped float32 array per dataset and parameter set.

Layout in ``cache_dir`` for a key ``K`` (a hash of the resolved paths, file sizes, mtimes, sample rate,
channels, format version and torchaudio version):

- ``audio-K.f32``: the flat concatenation of every clip's ``[channels, T_i]`` samples (C order);
- ``audio-K.index.npy``: int64 ``[N, 2]``: float offset and per-channel length ``T_i`` (-1: clip failed to decode);
- ``audio-K.json``: the completion marker, written last (count, sizes, and the reasons of failed clips);
- ``audio-K.lock``: the lock file that serialises builders (``fcntl.flock``).

The data and index are written to temporary files and renamed into place before the marker is written,
so a reader that finds a marker consistent with the files sees a complete cache. A cache whose marker is
missing or does not match the files is rebuilt. Several processes may build at once: one holds the lock
and builds, the others wait and then open the finished cache read-only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torchaudio
from tqdm.auto import tqdm

from audiointerp.datasets import audio as _audio
from audiointerp.errors import AudioFileError, writing

__all__ = ["CACHE_FORMAT_VERSION", "AudioCache", "cache_key"]

CACHE_FORMAT_VERSION = 1


def cache_key(paths: Sequence[Path], sample_rate: int, channels: int) -> str:
    """Hash of (resolved paths, sizes, mtimes, sample_rate, channels); a missing file raises AudioFileError."""
    files = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise AudioFileError(p, f"cannot stat ({exc.strerror or exc})") from exc
        files.append([str(p), st.st_size, st.st_mtime_ns])
    blob = json.dumps(
        {
            "format": CACHE_FORMAT_VERSION,
            "torchaudio": torchaudio.__version__,
            "sample_rate": int(sample_rate),
            "channels": int(channels),
            "files": files,
        },
        separators=(",", ":"),
    ).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (blocking)."""
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class AudioCache:
    """Decoded audio of ``paths`` at ``sample_rate`` / ``channels`` stored under ``cache_dir``.

    Call :meth:`ensure` once (builds the cache if needed), then :meth:`read`. Picklable: the memmap is
    opened lazily in each process and never pickled.
    """

    def __init__(
        self, cache_dir: str | os.PathLike[str], paths: Sequence[Path], sample_rate: int, channels: int
    ) -> None:
        _audio.check_audio_params(sample_rate, channels)
        self.cache_dir = Path(cache_dir)
        self.paths = [Path(p) for p in paths]
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.key = cache_key(self.paths, self.sample_rate, self.channels)
        stem = self.cache_dir / f"audio-{self.key}"
        self.data_path = stem.with_suffix(".f32")
        self.index_path = stem.with_suffix(".index.npy")
        self.marker_path = stem.with_suffix(".json")
        self.lock_path = stem.with_suffix(".lock")
        self.index: np.ndarray | None = None
        self.failures: dict[int, str] = {}
        self.silent: list[int] = []  # clips whose decoded audio is all zeros
        self._total = 0
        self._mm: np.memmap | None = None

    # --- state -------------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mm"] = None
        return state

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> np.ndarray:
        """Per-channel length of every clip in samples (-1 for clips that failed to decode)."""
        if self.index is None:
            raise RuntimeError("cache not loaded; call ensure() first")
        return self.index[:, 1]

    def load(self) -> bool:
        """Load the cache if the one on disk is complete and consistent (no lock, no building)."""
        return self._load_valid()

    def _load_valid(self) -> bool:
        """Load index and marker if the cache on disk is complete and consistent."""
        try:
            marker = json.loads(self.marker_path.read_text())
            index = np.load(self.index_path, allow_pickle=False)
            data_bytes = self.data_path.stat().st_size
        except (OSError, ValueError):
            return False
        if not isinstance(marker, dict) or not isinstance(marker.get("failures", {}), dict):
            return False
        n = len(self.paths)
        total = marker.get("total_floats")
        if (
            not isinstance(total, int)
            or marker.get("key") != self.key
            or marker.get("format") != CACHE_FORMAT_VERSION
            or marker.get("count") != n
            or index.shape != (n, 2)
            or index.dtype != np.int64
            or total < 0
            or data_bytes != total * 4
            or marker.get("data_bytes") != data_bytes
        ):
            return False
        ok = index[:, 1] >= 0
        ends = index[ok, 0] + self.channels * index[ok, 1]
        if ok.any() and (index[ok, 0].min() < 0 or ends.max() > total):
            return False
        self.index = index
        self._total = total
        self.failures = {int(k): str(v) for k, v in marker.get("failures", {}).items()}
        self.silent = [int(i) for i in marker.get("silent", [])]
        self._mm = None
        return True

    # --- build -------------------------------------------------------------------------------
    def ensure(
        self,
        *,
        on_error: str = "raise",
        progress: bool = True,
        workers: int | None = None,
        known_failures: Mapping[int, str] | None = None,
    ) -> bool:
        """Make sure a valid cache exists (build it under the lock if not). Return True if this call built it.

        ``on_error="raise"``: a file that fails to decode raises AudioFileError and nothing is kept.
        ``on_error="skip"``: it is recorded in :attr:`failures` (index -> reason) and the build goes on.
        ``known_failures`` (index -> reason) are recorded as failed without being decoded.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if self._load_valid():
            return False
        with writing("audio cache (data.cache_dir)", self.cache_dir):  # a full cache disk is named as such
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with _locked(self.lock_path):
                if self._load_valid():  # another process finished it while we waited
                    return False
                self._build(on_error=on_error, progress=progress, workers=workers, known=dict(known_failures or {}))
            if not self._load_valid():
                raise RuntimeError(f"audio cache {self.data_path} is inconsistent right after building it")
        return True

    def _decode(self, i: int, on_error: str, known: Mapping[int, str]) -> tuple[np.ndarray | None, str | None]:
        if i in known:
            return None, known[i]
        path = self.paths[i]
        try:
            x = _audio.load_audio(path, self.sample_rate, self.channels)
        except AudioFileError as exc:
            if on_error == "raise":
                raise
            return None, exc.reason
        except Exception as exc:  # resampling or anything else unexpected: name the file
            if on_error == "raise":
                raise AudioFileError(path, f"cannot decode ({type(exc).__name__}: {exc})") from exc
            return None, f"cannot decode ({type(exc).__name__}: {exc})"
        arr = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != self.channels:
            raise AudioFileError(path, f"decoded to shape {tuple(arr.shape)}, expected [{self.channels}, T]")
        return arr, None

    def _build(self, *, on_error: str, progress: bool, workers: int | None, known: Mapping[int, str]) -> None:
        _unlink(self.marker_path)  # whatever is on disk is no longer trusted
        n = len(self.paths)
        tag = f".tmp{os.getpid()}"
        tmp_data = self.data_path.with_name(self.data_path.name + tag)
        tmp_index = self.index_path.with_name(self.index_path.name + tag + ".npy")
        index = np.zeros((n, 2), dtype=np.int64)
        failures: dict[int, str] = {}
        silent: list[int] = []
        offset = 0
        workers = max(1, min(8, os.cpu_count() or 1) if workers is None else int(workers))
        bar = tqdm(
            total=n,
            desc=f"caching audio @ {self.sample_rate} Hz",
            unit="file",
            disable=not progress,
            leave=False,
        )
        try:
            with open(tmp_data, "wb") as out, ThreadPoolExecutor(max_workers=workers) as pool:
                pending: deque[Future] = deque()
                next_i = 0
                for i in range(n):
                    while next_i < n and len(pending) < 2 * workers:
                        pending.append(pool.submit(self._decode, next_i, on_error, known))
                        next_i += 1
                    arr, reason = pending.popleft().result()
                    if arr is None:
                        index[i] = (offset, -1)
                        failures[i] = reason or "cannot decode"
                    else:
                        index[i] = (offset, arr.shape[1])
                        if not arr.any():
                            silent.append(i)
                        out.write(arr.tobytes())
                        offset += arr.size
                    bar.update(1)
                out.flush()
                os.fsync(out.fileno())
            np.save(tmp_index, index)
            os.replace(tmp_index, self.index_path)
            os.replace(tmp_data, self.data_path)
            marker = {
                "format": CACHE_FORMAT_VERSION,
                "key": self.key,
                "count": n,
                "total_floats": offset,
                "data_bytes": offset * 4,
                "sample_rate": self.sample_rate,
                "channels": self.channels,
                "failures": {str(k): v for k, v in failures.items()},
                "silent": silent,
            }
            tmp_marker = self.marker_path.with_name(self.marker_path.name + tag)
            tmp_marker.write_text(json.dumps(marker))
            os.replace(tmp_marker, self.marker_path)
        finally:
            bar.close()
            _unlink(tmp_data)
            _unlink(tmp_index)

    # --- read --------------------------------------------------------------------------------
    def _memmap(self) -> np.memmap | None:
        if self._mm is None and self._total > 0:
            self._mm = np.memmap(self.data_path, dtype=np.float32, mode="r", shape=(self._total,))
        return self._mm

    def read(self, i: int, start: int = 0, n: int | None = None) -> np.ndarray:
        """Copy of clip ``i``'s samples ``[:, start:start + n]`` (``n=None``: to the end) as float32 [C, m]."""
        if self.index is None and not self._load_valid():
            raise RuntimeError(f"audio cache {self.data_path} is missing or incomplete; call ensure() first")
        assert self.index is not None
        off, length = (int(v) for v in self.index[i])
        if length < 0:
            raise AudioFileError(self.paths[i], self.failures.get(i, "failed to decode when the cache was built"))
        mm = self._memmap()
        if mm is None:
            return np.zeros((self.channels, 0), dtype=np.float32)
        clip = mm[off : off + self.channels * length].reshape(self.channels, length)
        stop = length if n is None else min(length, start + n)
        return np.array(clip[:, start:stop], dtype=np.float32)
