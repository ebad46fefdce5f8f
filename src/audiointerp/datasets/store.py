"""The activation store: layer activations of a model over a data set, on disk, read by every analysis.

A store is a folder:

- `store.json`: the model (zoo name or export folder) and its weights' sha256, the front end and its
  parameters, the layers and each one's activation shape per patch (`layer_shapes`, what `forward_from` takes),
  dtype, time pooling and flattening, the data source, the clip count and chunk size, and how lengths were
  handled (`lengths`: the network's minimum input `min_samples`, the window `window_samples` of a fixed-length
  network or of `--max-input-seconds`, each
  layer's `time_axes`, the counts of `padded_clips` and `windowed_clips`);
- `clips.csv`: one row per clip, in store order: `index, path, label, fold, description`, the factor columns, and
  (extract) `samples` (the clip's length at the front end's rate), `padded` (1: zero-padded to `min_samples`) and
  `windows` (how many windows it ran in: a fixed-length network's input, or `--max-input-seconds`);
- `shard-*.h5` (HDF5 through h5py): each process's rows, `layers/<layer>` [rows, ...] and `index` [rows] (the
  clips' store indices), with the attributes `rows` and `done` (the chunks whose rows are complete).

Clips are processed in chunks; chunk c is written by process c mod world size. A shard is created valid: written
as a temporary file (no rows, `done` = []), fsynced and renamed into place before it is opened for appending, so
a kill at any moment leaves either no shard or a readable one. A shard's `rows` attribute is set only after a
chunk's rows are flushed, so a killed run leaves at most a partial chunk, which a resumed run cuts off before
recomputing that chunk alone. A shard that cannot be read at all (written by an older audiointerp killed before
its first chunk, or damaged) holds no chunk that can be used: a resumed run moves it aside to
`<shard>.unreadable` and starts it afresh, while `ActivationStore` refuses it by name.

One process writes a shard: `ShardWriter` holds `<shard>.lock` (a `FileLock`: host, pid, start time, command)
from before it opens the shard until `close`. A second writer of the same shard (the same extraction started
twice) is refused with a StoreError naming the holder, whatever HDF5's own file locking (often disabled on
shared file systems) does. The lock of a killed writer on this host is taken over; one recorded on another host
only with `force_unlock`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import h5py
import numpy as np

from audiointerp.errors import AudioInterpError, StorageError
from audiointerp.locks import LOCK_SUFFIX, FileLock, Holder, LockHeldError

STORE_FILE = "store.json"
CLIPS_FILE = "clips.csv"
SHARD_GLOB = "shard-*.h5"
FORMAT_VERSION = 2  # 2: layer_shapes
SPACE_MARGIN = 1 << 20  # bytes kept free beyond twice a chunk's size (HDF5 metadata, the next flush)
UNREADABLE_SUFFIX = ".unreadable"  # where a resumed run moves a shard it cannot open

log = logging.getLogger("audiointerp")


class StoreError(AudioInterpError):
    """A missing, incomplete or mismatched activation store."""


def shard_path(folder: Path, rank: int, world: int) -> Path:
    return Path(folder) / f"shard-{rank:05d}-of-{world:05d}.h5"


def chunks_of(num_clips: int, chunk_size: int) -> list[range]:
    """Clip index ranges of the chunks, in order."""
    return [range(start, min(start + chunk_size, num_clips)) for start in range(0, num_clips, chunk_size)]


class ShardWriter:
    """Appends chunks of rows to one process's shard; resumable (see the module docstring)."""

    def __init__(self, path: Path, layers: Sequence[str], dtype: str, force_unlock: bool = False) -> None:
        """Lock, then open (creating it valid and empty if absent) the shard at `path` for appending chunks.

        The lock `<name>.lock` is taken first and held until `close`: a shard another live process writes is a
        StoreError naming that process (host, pid, start time, command) and the lock file; a lock left by a dead
        process on this host is taken over; one recorded on another host only with `force_unlock`.

        An existing shard that HDF5 cannot parse is moved aside to `<name>.unreadable` (logged as a warning) and
        started afresh: its chunks are then not done, and the caller (which reads `done_chunks` with unreadable
        shards counting as holding none) recomputes them. A shard that cannot be opened for an OS reason (locked
        by another process, permissions) is a StoreError naming it, and is left untouched. A chunk left
        half-written by a kill is cut off.
        """
        self.path, self.layers, self.dtype = Path(path), list(layers), np.dtype(dtype)
        self.lock = FileLock(self.path.with_name(self.path.name + LOCK_SUFFIX), f"shard {self.path}",
                             "give `audiointerp extract --force-unlock` (force_unlock=True) to take it over")
        try:
            self.lock.acquire(force_unlock)
        except LockHeldError as err:
            raise ShardLockedError(f"cannot open shard {self.path}: {err}", err) from err
        try:
            self._open()
        except BaseException:
            file = getattr(self, "file", None)
            if file is not None:
                file.close()
            self.lock.release()
            raise

    def _open(self) -> None:
        """With the lock held: move an unparseable shard aside, create it if absent, open it and cut off a
        half-written chunk (see `__init__`)."""
        if self.path.exists():
            try:
                h5py.File(self.path, "r").close()
            except OSError as err:
                error = _open_error(self.path, err)
                if not isinstance(error, UnreadableShardError):
                    raise error from err
                aside = self.path.with_name(self.path.name + UNREADABLE_SUFFIX)
                os.replace(self.path, aside)
                log.warning("shard %s cannot be read (%s), so it holds no complete chunk: moved to %s, starting it "
                            "afresh", self.path, str(err).splitlines()[0], aside.name)
        if not self.path.exists():
            _create_empty_shard(self.path)
        try:
            self._open_and_cut()
        except (OSError, RuntimeError, KeyError, ValueError) as err:
            file, self.file = getattr(self, "file", None), None
            if isinstance(err, OSError) and err.errno is not None:  # locked by a reader, no permission, a full
                if file is not None:                                # disk: the shard is fine, say why it cannot
                    file.close()                                    # be opened and leave it alone
                raise _open_error(self.path, err) from err
            # HDF5 is not crash-safe: a kill during a flush can leave a shard that opens but whose metadata is
            # damaged (h5py then fails on a link or dataset). Its chunks cannot be trusted: redo them all.
            if file is not None:
                try:
                    file.close()
                except Exception:  # noqa: BLE001 (a damaged file may not even close)
                    pass
            aside = self.path.with_name(self.path.name + UNREADABLE_SUFFIX)
            os.replace(self.path, aside)
            log.warning("shard %s is damaged (%s: %s), so its chunks cannot be trusted: moved to %s, starting it "
                        "afresh", self.path, type(err).__name__, str(err).splitlines()[0] if str(err) else "", aside.name)
            _create_empty_shard(self.path)
            self._open_and_cut()

    def _open_and_cut(self) -> None:
        """Open the shard for appending, check that every dataset reads, and cut off a half-written chunk."""
        self.file = h5py.File(self.path, "r+")
        rows = int(self.file.attrs.get("rows", 0))
        for name in ["index", *(f"layers/{layer}" for layer in self.layers)]:
            if name in self.file:
                dataset = self.file[name]
                if dataset.shape[0] < rows:
                    raise KeyError(f"{name} holds {dataset.shape[0]} rows, the shard says {rows}")
                if rows:
                    dataset[rows - 1]  # the last complete row reads
                if dataset.shape[0] != rows:
                    dataset.resize(rows, axis=0)  # drop a chunk a killed run left half-written
            elif rows:
                raise KeyError(f"{name} is missing from a shard of {rows} rows")
        if int(self.file.attrs.get("rows", -1)) != rows:
            self.file.attrs["rows"] = rows
        if "done" not in self.file.attrs:
            self.file.attrs["done"] = "[]"
        self.file.flush()

    @property
    def done(self) -> set[int]:
        return set(json.loads(self.file.attrs["done"]))

    def write_chunk(self, chunk: int, index: np.ndarray, activations: dict[str, np.ndarray]) -> None:
        """Append one complete chunk. Its room is checked first: HDF5 cannot close a file whose write failed
        (the process then crashes at exit), so a device without twice the chunk's size plus 1 MiB free is a
        StorageError before anything is written; the chunks written before stay, and the command resumes."""
        needed = index.astype(np.int64).nbytes + sum(activations[layer].size for layer in self.layers) * self.dtype.itemsize
        free = shutil.disk_usage(self.path.parent).free
        if free < 2 * needed + SPACE_MARGIN:
            raise StorageError("activation store shard", self.path,
                               f"no space left on the device (chunk {chunk} needs about {needed / 2**20:.2f} MiB, "
                               f"{free / 2**20:.2f} MiB are free)")
        rows = int(self.file.attrs["rows"])
        new = rows + len(index)
        for name, values in [("index", index.astype(np.int64)),
                             *((f"layers/{layer}", activations[layer].astype(self.dtype)) for layer in self.layers)]:
            if name not in self.file:
                self.file.create_dataset(name, shape=(0, *values.shape[1:]), maxshape=(None, *values.shape[1:]),
                                         dtype=values.dtype, chunks=(max(1, min(len(values), 64)), *values.shape[1:]))
            dataset = self.file[name]
            if dataset.shape[1:] != values.shape[1:]:
                raise StoreError(f"{self.path}: {name} has shape {dataset.shape[1:]} per clip, chunk {chunk} gives "
                                 f"{values.shape[1:]} (clips of different lengths need time pooling)")
            dataset.resize(new, axis=0)
            dataset[rows:new] = values
        self.file.flush()
        self.file.attrs["rows"] = new
        self.file.attrs["done"] = json.dumps(sorted(self.done | {chunk}))
        self.file.flush()

    def close(self) -> None:
        """Close the shard, then release its lock."""
        try:
            self.file.close()
        finally:
            self.lock.release()


class ShardLockedError(StoreError):
    """Another process writes (or may write) this shard; the message names it and the lock file."""

    def __init__(self, message: str, cause: LockHeldError) -> None:
        super().__init__(message)
        self.lock_path = cause.path
        self.holder = cause.holder


def _create_empty_shard(path: Path) -> None:
    """Create `path` as a valid shard with no rows (`rows` 0, `done` []), atomically.

    Written as `.<name>.tmp`, closed, fsynced and renamed into place (then the folder fsynced), so that a kill at
    any moment leaves either no shard or a complete empty one, never a truncated file. A `.tmp` file left by an
    earlier kill is overwritten.
    """
    temp = path.with_name(f".{path.name}.tmp")
    with h5py.File(temp, "w") as handle:
        handle.attrs["rows"] = 0
        handle.attrs["done"] = "[]"
    with open(temp, "rb") as raw:
        os.fsync(raw.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class UnreadableShardError(StoreError):
    """A shard file that HDF5 cannot parse (truncated by a kill while an older audiointerp created it, or damaged).

    It holds no chunk that can be used: resuming the extraction starts it afresh. OS-level failures to open a
    shard (locked by another process, permission denied) are plain StoreErrors: the file is left alone.
    """


def _open_error(path: Path, err: OSError) -> StoreError:
    """The StoreError for h5py failing to open shard `path`: UnreadableShardError when HDF5 could not parse it.

    h5py reports a parse failure (truncated file, no signature, bad address) as an OSError without errno, and
    an OS failure (EAGAIN when another process holds the file's lock, EACCES) with one; the latter names the
    writer recorded in the shard's lock file, when there is one.
    """
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if err.errno is None:
        return UnreadableShardError(f"shard {path} cannot be read ({first}): an extraction was probably killed while "
                                    "creating it; run the same `audiointerp extract` command again to redo its chunks")
    lock = path.with_name(path.name + LOCK_SUFFIX)
    try:
        holder = Holder.parse(lock.read_text(encoding="utf-8"))
    except OSError:
        holder = None
    if holder is not None:
        return StoreError(f"cannot open shard {path} ({first}): it is being written by {holder.describe()} (lock file "
                          f"{lock})")
    return StoreError(f"cannot open shard {path} ({first}): is another `audiointerp extract` writing to this store?")


def _shard_done(path: Path) -> set[int]:
    """The chunks complete in one shard; a StoreError (see `_open_error`) naming the shard when it cannot be opened."""
    try:
        with h5py.File(path, "r") as handle:
            rows = int(handle.attrs.get("rows", 0))
            names = ["index", *(f"layers/{name}" for name in handle.get("layers", {}))] if rows else []
            for name in names:  # a shard damaged by a kill during a flush opens, but its datasets do not read
                if name not in handle or handle[name].shape[0] < rows:
                    raise KeyError(f"{name} is missing or shorter than the shard's {rows} rows")
                handle[name][rows - 1]
            return set(json.loads(handle.attrs.get("done", "[]")))
    except OSError as err:
        raise _open_error(path, err) from err
    except (RuntimeError, KeyError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UnreadableShardError(f"shard {path} is damaged ({first}): an extraction was probably killed while "
                                   "writing it; run the same `audiointerp extract` command again to redo its chunks") from err


def done_chunks(folder: Path, strict: bool = False, exclude: Optional[Path] = None) -> set[int]:
    """Chunks complete in any shard of the store (but `exclude`: a writer's own shard, whose chunks it reads once
    it has opened, and possibly redone, that shard).

    A shard HDF5 cannot parse counts as holding no complete chunk (what resuming an extraction needs: its chunks
    are recomputed and `ShardWriter` starts it afresh); with `strict` it is an UnreadableShardError naming it.
    A shard that cannot be opened for another reason (locked, permissions) is always a StoreError.
    """
    done: set[int] = set()
    for path in sorted(Path(folder).glob(SHARD_GLOB)):
        if exclude is not None and path.resolve() == Path(exclude).resolve():
            continue
        try:
            done |= _shard_done(path)
        except UnreadableShardError:
            if strict:
                raise
            log.warning("shard %s cannot be read: its chunks count as not done and will be recomputed", path)
    return done


class ActivationStore:
    """Read a store: metadata, clip table, and each layer's activations in clip order."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        path = self.folder / STORE_FILE
        if not path.is_file():
            raise StoreError(f"{self.folder} is not an activation store: {STORE_FILE} is missing "
                             "(write one with `audiointerp extract`)")
        self.meta: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        with open(self.folder / CLIPS_FILE, newline="", encoding="utf-8") as handle:
            self.clips: list[dict[str, str]] = list(csv.DictReader(handle))
        expected = set(range(len(chunks_of(int(self.meta["num_clips"]), int(self.meta["chunk_size"])))))
        missing = expected - done_chunks(self.folder, strict=True)
        if missing:
            raise StoreError(f"{self.folder} is incomplete ({len(missing)} of {len(expected)} chunks missing): run the "
                             "same `audiointerp extract` command again to finish it")

    @property
    def layers(self) -> list[str]:
        return list(self.meta["layers"])

    def __len__(self) -> int:
        return int(self.meta["num_clips"])

    def column(self, name: str) -> np.ndarray:
        """A column of the clip table (e.g. `label`, a factor such as `material`) as strings, in clip order."""
        if self.clips and name not in self.clips[0]:
            raise StoreError(f"the store's clips have no column {name!r}; columns: {', '.join(self.clips[0])}")
        return np.array([row[name] for row in self.clips])

    def _shards(self) -> Iterator[Any]:
        for path in sorted(self.folder.glob(SHARD_GLOB)):
            with h5py.File(path, "r") as handle:
                yield handle

    def shape(self, layer: str) -> tuple[int, ...]:
        """The per-clip shape of a layer's stored activation."""
        self._check_layer(layer)
        for handle in self._shards():
            if f"layers/{layer}" in handle:
                return tuple(handle[f"layers/{layer}"].shape[1:])
        raise StoreError(f"{self.folder}: no shard holds layer {layer!r}")

    def model_identity(self) -> dict[str, Any]:
        """What identifies the network the store came from: its weights' sha256, or (a seeded random zoo model)
        its name, seed and class count."""
        meta = self.meta
        if meta.get("model_hash"):
            return {"model_hash": meta["model_hash"]}
        return {"model": meta.get("model"), "seed": meta.get("seed"), "num_classes": meta.get("num_classes")}

    def patch_shape(self, layer: str) -> tuple[int, ...]:
        """The layer's activation shape for one patch, as the network produces it (before pooling/flattening)."""
        self._check_layer(layer)
        shapes = self.meta.get("layer_shapes")
        if not shapes:
            raise StoreError(f"{self.folder} was written by an older audiointerp without layer shapes: extract it again")
        return tuple(shapes[layer])

    def as_patches(self, layer: str, values: np.ndarray) -> np.ndarray:
        """Stored activations [n, ...] (pooled or flattened or not) reshaped to [n, patches, *patch_shape]. A layer
        with a time axis stored with `--pooling time` cannot be: StoreError."""
        shape = self.patch_shape(layer)
        timed = (self.meta.get("lengths") or {}).get("time_axes", {}).get(layer)
        if self.meta.get("pooling") == "time" and timed:
            raise StoreError(f"{self.folder}: layer {layer!r} was averaged over its time axis (extract --pooling time), "
                             "so the network cannot continue from it; extract it with --pooling mean or none")
        per_clip = int(np.prod(values.shape[1:]))
        if per_clip % int(np.prod(shape)):
            raise StoreError(f"layer {layer!r}: {per_clip} values per clip are not whole patches of shape {shape}")
        return values.reshape(len(values), per_clip // int(np.prod(shape)), *shape)

    def load(self, layer: str, indices: Optional[Sequence[int]] = None, dtype: str = "float32") -> np.ndarray:
        """Activations [n, ...] of `layer` for the clips `indices` (default: all), in that order."""
        self._check_layer(layer)
        requested = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=np.int64)
        wanted, inverse = np.unique(requested, return_inverse=True)  # each clip read once, repeats allowed
        out = np.empty((len(wanted), *self.shape(layer)), dtype=dtype)
        position = {int(i): n for n, i in enumerate(wanted)}
        found = 0
        for handle in self._shards():
            index = handle["index"][: int(handle.attrs["rows"])]
            rows = [r for r, i in enumerate(index) if int(i) in position]
            if rows:
                values = handle[f"layers/{layer}"][rows]  # h5py reads increasing row lists directly
                for r, value in zip(rows, values):
                    out[position[int(index[r])]] = value
                found += len(rows)
        if found < len(wanted):
            raise StoreError(f"{self.folder}: {len(wanted) - found} requested clips are not in the store")
        return out if indices is None else out[inverse.reshape(-1)]

    def _check_layer(self, layer: str) -> None:
        if layer not in self.layers:
            raise StoreError(f"the store holds no layer {layer!r}; layers: {', '.join(self.layers)}")


def write_store(folder: str | Path, layers: dict[str, np.ndarray], columns: dict[str, Sequence[Any]],
                chunk_size: int = 1024, meta: Optional[dict[str, Any]] = None) -> Path:
    """A store from activations computed elsewhere: `layers` {name: [N, ...]} and the clip table's `columns`
    {name: N values} (e.g. label, fold, material). Analyses that need no network (decode, the flow) read it."""
    folder = Path(folder)
    if (folder / STORE_FILE).exists():
        raise StoreError(f"{folder} already holds a store")
    clips = len(next(iter(layers.values())))
    for name, values in [*layers.items(), *columns.items()]:
        if len(values) != clips:
            raise StoreError(f"{name} has {len(values)} rows, the first layer {clips}")
    folder.mkdir(parents=True, exist_ok=True)
    record = {"version": FORMAT_VERSION, "layers": list(layers), "num_clips": clips, "chunk_size": chunk_size,
              "layer_shapes": {name: list(np.shape(values)[1:]) for name, values in layers.items()}, **(meta or {})}
    with open(folder / CLIPS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", *columns])
        writer.writerows([i, *(values[i] for values in columns.values())] for i in range(clips))
    shard = ShardWriter(shard_path(folder, 0, 1), list(layers), str(np.asarray(next(iter(layers.values()))).dtype))
    try:
        for chunk, rows in enumerate(chunks_of(clips, chunk_size)):
            index = np.arange(rows.start, rows.stop)
            shard.write_chunk(chunk, index, {name: np.asarray(values)[index] for name, values in layers.items()})
    finally:
        shard.close()
    (folder / STORE_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")  # last: the store is complete
    return folder


def clip_embeddings(store: ActivationStore, layer: str, indices: Optional[np.ndarray] = None) -> np.ndarray:
    """One vector per clip: the layer's activation, its patches averaged when it has some."""
    values = store.load(layer, indices)
    if values.ndim > 2:  # [N, patches, d] (or wider): average every axis but the last
        values = values.reshape(len(values), -1, values.shape[-1]).mean(1)
    return values.astype(np.float64)
