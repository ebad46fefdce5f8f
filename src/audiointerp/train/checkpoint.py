"""Resumable checkpoints: written atomically, the last N kept plus `best`.

A checkpoint is Accelerate's `save_state` folder (model, optimiser, scheduler, RNG states, sampler, the
registered `TrainState`) written under a temporary name and renamed into place once complete, so a run
killed while saving never leaves a half-written `step-*` folder. Removal is atomic in the same way: a
checkpoint is renamed to `.del-step-N` first and only then deleted, so a run killed while pruning never
leaves a `step-*` folder without its `checkpoint.json`. `best` is a symlink swapped atomically.
`CheckpointStore.clean_temp` (on start and resume) removes whatever a kill left: `.tmp-*` and `.del-*`
leftovers and any `step-*` folder without `checkpoint.json` (never a complete one, never `best`'s target).

Finiteness: the trainer saves only after checking that every parameter and buffer is finite, and records
`"finite": true` in `checkpoint.json`. `CheckpointStore.last_finite` is the newest checkpoint known to be finite
(from that flag, or, for checkpoints without it, by reading their weights); `non_finite_tensors` reads a
checkpoint's weights files (`model*.safetensors`) and names any tensor holding a NaN or an infinity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from audiointerp.errors import CheckpointError

log = logging.getLogger("audiointerp")

STEP_PREFIX = "step-"
TMP_PREFIX = ".tmp-"
DEL_PREFIX = ".del-"  # a folder renamed for removal: never a checkpoint, removed on the next start
INFO_FILE = "checkpoint.json"
METADATA = "metadata.json"  # a run's (and an export's) task metadata
ARRAYS = "arrays.safetensors"  # a run's (and an export's) task arrays, when the task has any
FINITE = "finite"  # checkpoint.json key: true when every parameter and buffer was checked finite before saving
WEIGHTS_PATTERN = "model*.safetensors"  # the weights files of Accelerate's save_state (model.safetensors, model_1...)


@dataclass
class TrainState:
    """Loop position, registered with Accelerate so that it is saved and restored with every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer updates done
    batches_in_epoch: int = 0  # batches consumed in the current epoch
    best_value: Optional[float] = None  # best value of train.best_metric so far
    best_step: Optional[int] = None  # the update at which it was reached
    log_window: dict[str, float] = field(default_factory=dict)  # training logs summed since the last logging
    log_window_batches: float = 0.0  # batches in that window

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def write_text_atomic(path: Path, text: str) -> None:
    """Write text through a temporary file, fsync and rename: readers see the old or the new file, never half."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (indented, keys sorted) through `write_text_atomic`."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True))


def save_arrays(path: Path, arrays: dict[str, torch.Tensor]) -> None:
    """Task arrays as safetensors, written through a temporary file."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}")
    save_file({k: torch.as_tensor(v).contiguous() for k, v in arrays.items()}, str(tmp))
    os.replace(tmp, path)


def load_arrays(folder: Path) -> dict[str, torch.Tensor]:
    """The task arrays of a run or export folder ({} when it has none)."""
    path = Path(folder) / ARRAYS
    return load_file(str(path), device="cpu") if path.is_file() else {}


FROZEN = "frozen"  # checkpoint.json key: the frozen modules left out of the weights, with source and sha256


def is_frozen_key(key: str, frozen: Iterable[str]) -> bool:
    """Whether state-dict `key` belongs to one of the `frozen` submodules (named as in the task; a DDP
    `module.` prefix is ignored)."""
    key = key.removeprefix("module.")
    return any(key == name or key.startswith(name + ".") for name in frozen)


def module_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (keys in order, each tensor's dtype, shape and bytes): the same weights
    give the same hash on any device."""
    digest = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{data.dtype}|{tuple(data.shape)}|".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def frozen_records(task: nn.Module) -> dict[str, dict[str, Any]]:
    """Source, sha256 and parameter count of each frozen module of `task` (`Task.frozen_modules`), as
    checkpoint.json records them."""
    records = {}
    for name, source in task.frozen_modules().items():
        module = task.get_submodule(name)
        records[name] = {"source": source, "sha256": module_sha256(module),
                         "parameters": sum(p.numel() for p in module.parameters())}
    return records


def check_frozen_unchanged(checkpoint: Path, recorded: dict[str, Any], current: dict[str, Any],
                           action: str = "resume from") -> None:
    """Raise `CheckpointError` when a frozen module rebuilt to resume (or export, evaluate) a checkpoint is not the
    one the checkpoint was trained with (its weights are not in the checkpoint: they come from the recorded
    source, checked by sha256)."""
    for name, record in recorded.items():
        now = current.get(name)
        if now is None:
            raise CheckpointError(f"cannot {action} {checkpoint}: it was trained with the frozen module {name!r} "
                                  f"({record.get('source')}), which this config's task does not have")
        if now["sha256"] != record["sha256"]:
            raise CheckpointError(
                f"cannot {action} {checkpoint}: the frozen module {name!r} built now ({now.get('source')}, sha256 "
                f"{now['sha256'][:12]}) is not the one it was trained with ({record.get('source')}, sha256 "
                f"{record['sha256'][:12]}); its weights are not stored in checkpoints, so point the config back to "
                f"that source")


def check_weight_keys(task: nn.Module, weights: Path, frozen: Iterable[str] = ()) -> None:
    """Raise `CheckpointError` unless the keys of `weights` (a `model.safetensors`) are the task's state-dict keys,
    where the keys of the `frozen` submodules may be absent (checkpoints leave frozen modules out; older ones hold
    them, which is fine too). Reads the file's header only."""
    frozen = list(frozen)
    with safe_open(str(weights), framework="pt", device="cpu") as handle:
        held = set(handle.keys())
    expected = {key.removeprefix("module.") for key in task.state_dict()}
    held = {key.removeprefix("module.") for key in held}
    missing = sorted(k for k in expected - held if not is_frozen_key(k, frozen))
    unexpected = sorted(held - expected)
    if missing or unexpected:
        parts = ([f"{len(missing)} missing ({', '.join(missing[:5])})"] if missing else []) + (
            [f"{len(unexpected)} unexpected ({', '.join(unexpected[:5])})"] if unexpected else [])
        raise CheckpointError(f"{weights} does not fit the task {type(task).__name__}: {'; '.join(parts)} key(s)")


def load_task_weights(task: nn.Module, weights: Path, frozen: Iterable[str] = (), device: str = "cpu") -> None:
    """Load a checkpoint's `model.safetensors` into `task`, checked by :func:`check_weight_keys` (the frozen
    submodules' weights may be absent: the task rebuilt them from their source)."""
    check_weight_keys(task, weights, frozen)
    try:
        task.load_state_dict(load_file(str(weights), device=device), strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{weights} does not fit the task {type(task).__name__}: {str(err).splitlines()[-1]}") from err


def non_finite_tensors(checkpoint: Path) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity in a checkpoint's weights files
    (`model*.safetensors`), in file then key order; a tensor of a second model file is named `file:key`.

    Reads one tensor at a time on the CPU. Raises `CheckpointError` when the folder holds no weights file or a file
    cannot be read (it cannot then be verified finite).
    """
    files = sorted(Path(checkpoint).glob(WEIGHTS_PATTERN))
    if not files:
        raise CheckpointError(f"checkpoint {checkpoint} has no weights file ({WEIGHTS_PATTERN}) to verify")
    bad: list[str] = []
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                for key in handle.keys():
                    tensor = handle.get_tensor(key)
                    if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
                        bad.append(key if path.name == "model.safetensors" else f"{path.name}:{key}")
        except CheckpointError:
            raise
        except Exception as err:
            raise CheckpointError(f"cannot read {path} to check that it is finite "
                                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from err
    return bad


def read_info(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's `checkpoint.json` ({} when it is missing or unreadable)."""
    try:
        info = json.loads((Path(checkpoint) / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def is_finite(checkpoint: Path, verify: bool = False) -> bool:
    """Whether a checkpoint is known to hold only finite weights and buffers.

    Its `checkpoint.json` flag decides when present and `verify` is False; otherwise (checkpoints saved before
    the flag, or `verify=True`) its weights files are read. A checkpoint whose weights cannot be read is not finite.
    """
    flag = read_info(checkpoint).get(FINITE)
    if isinstance(flag, bool) and not verify:
        return flag
    if flag is False:
        return False
    try:
        return not non_finite_tensors(checkpoint)
    except CheckpointError:
        return False


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _step_number(path: Path) -> int:
    """The update number in a `step-N` folder name (resolving `best`); -1 for any other name."""
    name = Path(path).resolve().name if Path(path).is_symlink() else Path(path).name
    suffix = name[len(STEP_PREFIX) :] if name.startswith(STEP_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else -1


class CheckpointStore:
    """The `checkpoints/` folder of a run."""

    def __init__(self, run_dir: Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"train.keep_last must be >= 1, got {keep_last}")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def step_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.iterdir() if p.is_dir() and not p.is_symlink() and p.name.startswith(STEP_PREFIX)]
        found = [p for p in found if (p / INFO_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))

    def latest(self) -> Optional[Path]:
        dirs = self.step_dirs()
        return dirs[-1] if dirs else None

    def last_finite(self, before: Optional[Path] = None, verify: bool = False) -> Optional[Path]:
        """The newest complete checkpoint known to be finite (`is_finite`), older than `before` when given
        (a checkpoint folder of this store); None when there is none. `verify=True` reads the weights of every
        candidate even when its `checkpoint.json` says finite (after one such checkpoint was found damaged)."""
        limit = _step_number(before) if before is not None else None
        for path in reversed(self.step_dirs()):
            if limit is not None and _step_number(path) >= limit:
                continue
            if is_finite(path, verify):
                return path
        return None

    def best(self) -> Optional[Path]:
        link = self.dir / "best"
        return link.resolve() if link.is_symlink() and link.resolve().is_dir() else None

    def resolve(self, which: str) -> Path:
        """'best', 'last'/'latest', a step number, or a path to a checkpoint folder."""
        if which == "best":
            found = self.best() or self.latest()
        elif which in ("last", "latest"):
            found = self.latest()
        elif which.isdigit():
            candidate = self.dir / f"{STEP_PREFIX}{int(which):08d}"
            found = candidate if (candidate / INFO_FILE).is_file() else None
        else:
            candidate = Path(which)
            found = candidate if (candidate / INFO_FILE).is_file() else None
        if found is None:
            have = ", ".join(p.name for p in self.step_dirs()) or "none"
            raise CheckpointError(f"no checkpoint {which!r} in {self.dir} (complete checkpoints: {have})")
        return found

    def temp_dir(self, step: int) -> Path:
        return self.dir / f"{TMP_PREFIX}{STEP_PREFIX}{step:08d}"

    def clean_temp(self) -> list[str]:
        """Remove what a run killed while saving or pruning left (main process, on start and resume).

        Removed: `.tmp-*` entries (half-written checkpoints, files and the `best` link being swapped), `.del-*`
        folders (checkpoints renamed for removal) and `step-*` folders without `checkpoint.json` (never
        complete: a checkpoint gets its info file before it is renamed into place). Never removed: a complete
        checkpoint, the folder `best` points to, `best` itself. Returns the names removed, oldest first.
        """
        if not self.dir.is_dir():
            return []
        best = self.best()
        removed: list[str] = []
        for path in sorted(self.dir.iterdir(), key=lambda p: p.name):
            name = path.name
            if name.startswith((TMP_PREFIX, DEL_PREFIX)):
                if path.is_symlink() or not path.is_dir():
                    path.unlink(missing_ok=True)
                else:
                    shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
            elif (name.startswith(STEP_PREFIX) and path.is_dir() and not path.is_symlink()
                  and not (path / INFO_FILE).is_file() and path.resolve() != best):
                self._discard(path)
                removed.append(name)
        if removed:
            log.info("removed leftovers of an interrupted save or prune in %s: %s", self.dir, ", ".join(removed))
        return removed

    def _discard(self, path: Path) -> None:
        """Delete a checkpoint folder atomically: rename it to `.del-<name>` (one `os.rename`), then remove it.

        A kill before the rename leaves the checkpoint intact; after it, a `.del-*` folder that `clean_temp`
        removes on the next start. Errors while deleting the renamed folder are ignored for the same reason.
        """
        trash = self.dir / f"{DEL_PREFIX}{path.name}"
        if trash.exists() or trash.is_symlink():  # left by an earlier interrupted removal of the same step
            shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() and not trash.is_symlink() else trash.unlink()
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def commit(self, temp: Path, step: int, info: dict[str, Any], is_best: bool) -> Path:
        """Make a fully written temporary folder the checkpoint of `step` (main process only)."""
        write_json_atomic(temp / INFO_FILE, info)
        _fsync_tree(temp)
        final = self.dir / f"{STEP_PREFIX}{step:08d}"
        if final.exists():  # the same step saved again after a resume
            stale = self.dir / f"{DEL_PREFIX}{final.name}"
            if stale.exists():
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            os.replace(temp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.replace(temp, final)
        if is_best:
            self.link_best(final)
        self.prune()
        return final

    def link_best(self, checkpoint: Path) -> None:
        """Point `best` at `checkpoint` (a symlink swapped in atomically through `.tmp-best`)."""
        link = self.dir / f"{TMP_PREFIX}best"
        link.unlink(missing_ok=True)
        link.symlink_to(checkpoint.name)
        os.replace(link, self.dir / "best")

    def restore_best(self, best_step: Optional[int]) -> Optional[Path]:
        """On resume: point `best` at the checkpoint of `best_step` (the resumed state's) when a kill while swapping
        the link left it missing or pointing elsewhere; without it, later evaluations that are not better would
        never re-create it, and pruning would delete the best checkpoint. Returns the checkpoint relinked, if any."""
        if best_step is None:
            return None
        target = self.dir / f"{STEP_PREFIX}{int(best_step):08d}"
        if not (target / INFO_FILE).is_file() or self.best() == target.resolve():
            return None
        self.link_best(target)
        log.info("restored the link best -> %s (a kill had interrupted its update)", target.name)
        return target

    def prune(self) -> None:
        """Remove complete checkpoints beyond the last `keep_last` and `best`, each renamed away first."""
        keep = set(self.step_dirs()[-self.keep_last :])
        best = self.best()
        if best is not None:
            keep.add(best)
        for path in self.step_dirs():
            if path not in keep:
                try:
                    self._discard(path)
                except OSError as err:  # the checkpoint is still whole: keep training, retry at the next prune
                    log.warning("could not remove old checkpoint %s (%s: %s); it is kept",
                                path, type(err).__name__, err)
