"""Run directories: `<output_dir>/<experiment>/<run_id>/`, which run `resume=auto` continues, and the run lock.

Run lock: `plan_run` (called by the main process of a launch only: the other ranks of a distributed launch are
the same run and receive its plan) locks the run it chooses before it looks at the run's checkpoints, with a
`FileLock` (see `audiointerp.locks`) at `<output_dir>/.locks/<experiment>/<run_id>.lock`. The lock lives
outside the run folder so that planning a fresh run does not create the folder (the trainer removes a fresh
run's folder when its set-up fails, and lists experiment folders as runs). A second process planning the same
run (the same command started twice: `resume=auto` picking the same unfinished run, or the same `run_id` or
checkpoint) gets `LockHeldError` naming the holder's host, pid, start time and the lock file, and starts nothing.
A lock left by a killed process on this host is taken over; one recorded on another host only with
`train.force_unlock=true`. The lock is held until the process exits, `release_run_lock`/`RunPlan.release_lock`
is called, or the process plans another run (a process trains one run at a time); releasing it removes the lock
file and the `.locks` folders it leaves empty.

`resume=auto` continues the newest unfinished run of the same config: from its latest checkpoint, or, for a run
stopped before its first checkpoint (its folder holds only its config and logs), from the start in the same folder
(emptied first), so a killed run never leaves an orphan folder and a stale lock behind. The same command started
again while such a run is still being set up or trained is refused with the holder's pid; only in the first
seconds, before the run has written its `config.yaml`, can two identical commands still start two runs (two
folders, each locked by its process: no folder is written by two).
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from omegaconf import DictConfig, OmegaConf

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.locks import FileLock, LockHeldError, acquire_lock
from audiointerp.train.checkpoint import INFO_FILE, CheckpointStore
from audiointerp.train.config import load_config

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"  # written when a run finishes
# Keys that may change between a run and its resumption without making it another experiment (the loader's
# workers and prefetching change how batches are made, never which: tests/train/test_loaders.py).
RESUMABLE_CHANGES = ("run_id", "train.resume", "train.progress", "train.epochs", "train.max_steps",
                     "train.force_unlock", "train.compile", "train.compile_backend", "data.num_workers",
                     "data.prefetch_factor", "tracking")
NO_CHECKPOINT = Path("(no checkpoint)")  # `_unfinished_match`: an unfinished run stopped before its first checkpoint
LOCKS_DIR = ".locks"  # <output_dir>/.locks/<experiment>/<run_id>.lock
FORCE_UNLOCK_HINT = "set train.force_unlock=true to take the run over"

T = TypeVar("T")
_run_lock: Optional[FileLock] = None  # the run lock this process holds (one run at a time)


@dataclass
class RunPlan:
    """Where a run writes, and the checkpoint it continues from (None: a fresh start)."""

    run_dir: Path
    run_id: str
    resume_from: Optional[Path]

    def release_lock(self) -> None:
        """Release this run's lock if this process holds it (a no-op on the other ranks, or when released)."""
        release_run_lock(self.run_dir)


def run_lock_path(run_dir: Path) -> Path:
    """Where the lock of `run_dir` (`<output_dir>/<experiment>/<run_id>`) lives: `<output_dir>/.locks/<experiment>/
    <run_id>.lock`, from the resolved path, so every way of naming the run finds the same lock."""
    resolved = Path(run_dir).resolve()
    return resolved.parent.parent / LOCKS_DIR / resolved.parent.name / f"{resolved.name}.lock"


def lock_run(run_dir: Path, force: bool = False) -> FileLock:
    """Lock `run_dir` for this process (re-entrant), releasing the lock of any other run this process held.

    LockHeldError (naming the holder: host, pid, start time, command, and the lock file) when another live
    process holds it, or when it was recorded on another host (or by a running pid that does not hold it) and
    `force` is false.
    """
    global _run_lock
    path = run_lock_path(run_dir)
    if _run_lock is not None and _run_lock.path != path:
        release_run_lock()
    _run_lock = acquire_lock(path, f"run {Path(run_dir).resolve()}", FORCE_UNLOCK_HINT, force, prune=2)
    return _run_lock


def release_run_lock(run_dir: Optional[Path] = None) -> None:
    """Release the run lock this process holds (only if it is `run_dir`'s, when given); otherwise a no-op."""
    global _run_lock
    if _run_lock is None or (run_dir is not None and _run_lock.path != run_lock_path(run_dir)):
        return
    lock, _run_lock = _run_lock, None
    lock.release()


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _comparable(cfg: DictConfig | dict) -> dict[str, Any]:
    data = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    for dotted in RESUMABLE_CHANGES:
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)
    return data


def config_differences(saved_config: Path, cfg: DictConfig) -> list[str]:
    """Keys whose values differ between a run directory's config.yaml and `cfg` (resumable keys aside). The saved
    config is read through `load_config`, so a key added to the schema since the run started counts at its
    default (a run started by an older version still resumes, unless the new key is set otherwise)."""
    try:
        saved = _comparable(load_config(saved_config))
    except Exception as err:  # an unreadable config is not ours to resume
        return [f"(cannot read {saved_config}: {err})"]
    current = _comparable(cfg)

    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for key in sorted(set(a) | set(b)) for d in walk(a.get(key), b.get(key), f"{prefix}{key}.")]
        return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]

    return walk(saved, current, "")


def _check_resumable(run_dir: Path, cfg: DictConfig) -> None:
    if (run_dir / "config.yaml").is_file():
        changed = config_differences(run_dir / "config.yaml", cfg)
        if changed:
            raise ConfigError(f"cannot resume {run_dir} with another experiment config; changed: {'; '.join(changed[:10])}. "
                              "Start a new run (another run_id, or train.resume=never) instead")


def _locked(run_dir: Path, force: bool, decide: Callable[[], T]) -> T:
    """Lock `run_dir`, then `decide` the plan with the lock held; the lock is released when `decide` raises or
    returns None (the run is not to be used after all)."""
    lock_run(run_dir, force)
    try:
        plan = decide()
    except BaseException:
        release_run_lock(run_dir)
        raise
    if plan is None:
        release_run_lock(run_dir)
    return plan


def plan_run(cfg: DictConfig) -> RunPlan:
    """Decide the run directory and the checkpoint to resume from, and lock the run (call on the main process).

    The run is locked before its checkpoints are read, so two processes never plan the same run: the second gets
    LockHeldError naming the first (see the module docstring), `train.force_unlock` taking over a lock recorded on
    another host. The lock stays held after return (see `release_run_lock`); on any error it is released.
    """
    experiment_dir = Path(cfg.output_dir) / str(cfg.experiment)
    resume = str(cfg.train.resume)
    force = bool(cfg.train.get("force_unlock", False))
    if resume not in ("auto", "never"):
        checkpoint = Path(resume)
        if not (checkpoint / INFO_FILE).is_file():
            raise CheckpointError(f"train.resume={resume!r} is not a complete checkpoint folder (no {INFO_FILE})")
        run_dir = checkpoint.resolve().parent.parent

        def given() -> RunPlan:
            _check_resumable(run_dir, cfg)
            return RunPlan(run_dir, run_dir.name, checkpoint.resolve())

        return _locked(run_dir, force, given)
    if cfg.run_id:
        run_dir = experiment_dir / str(cfg.run_id)

        def named() -> RunPlan:
            latest = CheckpointStore(run_dir).latest()
            if latest is not None and resume == "never":
                raise ConfigError(f"run {run_dir} already has checkpoints; use another run_id or train.resume=auto")
            if latest is not None:
                _check_resumable(run_dir, cfg)
            return RunPlan(run_dir, str(cfg.run_id), latest if resume == "auto" else None)

        return _locked(run_dir, force, named)
    if resume == "auto" and experiment_dir.is_dir():
        runs = sorted((p for p in experiment_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=_mtime, reverse=True)
        for run_dir in runs:
            if run_dir.is_dir() and not any(run_dir.iterdir()):  # killed between creating its folder and its config
                _remove_if_abandoned(run_dir)
                continue
            found = _unfinished_match(run_dir, cfg)
            if found is None:
                continue

            def unfinished(run_dir: Path = run_dir) -> Optional[RunPlan]:
                found = _unfinished_match(run_dir, cfg)  # again, now that it is locked: it may have finished
                if found is None:
                    return None
                if found is NO_CHECKPOINT:  # killed before its first checkpoint: nothing to keep, start it afresh
                    shutil.rmtree(run_dir)
                    return RunPlan(run_dir, run_dir.name, None)
                return RunPlan(run_dir, run_dir.name, found)

            # a run without a checkpoint is emptied and restarted: never on a forced lock (another host's run may
            # be setting it up); train.force_unlock takes over only a run to resume from its checkpoint
            plan = _locked(run_dir, force and found is not NO_CHECKPOINT, unfinished)
            if plan is not None:
                log.info("resuming unfinished run %s from %s", run_dir, plan.resume_from.name if plan.resume_from else "its start")
                return plan
    run_id = new_run_id()
    run_dir = experiment_dir / run_id
    return _locked(run_dir, force, lambda: RunPlan(run_dir, run_id, None))


def _mtime(path: Path) -> float:
    """A folder's modification time; 0 for one another process removed meanwhile."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_if_abandoned(run_dir: Path) -> None:
    """Remove the empty run folder `run_dir` (and its lock) unless a process holds its lock or it was recorded on
    another host (never forced: that run may be starting there)."""
    def remove() -> None:
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
            log.info("removed the empty folder of a run killed while starting: %s", run_dir)
        return None

    try:
        _locked(run_dir, False, remove)
    except (LockHeldError, FileNotFoundError):
        pass  # being set up by another process right now


def _unfinished_match(run_dir: Path, cfg: DictConfig) -> Optional[Path]:
    """For an unfinished run (no summary) of the same config: its latest checkpoint, or `NO_CHECKPOINT` when it
    was stopped before its first one (it wrote its config, then was killed or failed); otherwise None."""
    if (run_dir / SUMMARY_FILE).exists() or not (run_dir / "config.yaml").is_file():
        return None
    if config_differences(run_dir / "config.yaml", cfg):
        return None
    latest = CheckpointStore(run_dir).latest()
    return NO_CHECKPOINT if latest is None else latest

