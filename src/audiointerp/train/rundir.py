"""Run directories: `<output_dir>/<experiment>/<run_id>/`, and which run `resume=auto` continues."""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.train.checkpoint import INFO_FILE, CheckpointStore

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"  # written when a run finishes
# Keys that may change between a run and its resumption without making it another experiment.
RESUMABLE_CHANGES = ("run_id", "train.resume", "train.progress", "train.epochs", "train.max_steps", "tracking")


@dataclass
class RunPlan:
    """Where a run writes, and the checkpoint it continues from (None: a fresh start)."""

    run_dir: Path
    run_id: str
    resume_from: Optional[Path]


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


def same_experiment(saved_config: Path, cfg: DictConfig) -> bool:
    """Whether a run directory's config.yaml describes the same experiment as `cfg`."""
    try:
        return _comparable(OmegaConf.load(saved_config)) == _comparable(cfg)
    except Exception:  # an unreadable config is not ours to resume
        return False


def plan_run(cfg: DictConfig) -> RunPlan:
    """Decide the run directory and the checkpoint to resume from (call on the main process)."""
    experiment_dir = Path(cfg.output_dir) / str(cfg.experiment)
    resume = str(cfg.train.resume)
    if resume not in ("auto", "never"):
        checkpoint = Path(resume)
        if not (checkpoint / INFO_FILE).is_file():
            raise CheckpointError(f"train.resume={resume!r} is not a complete checkpoint folder (no {INFO_FILE})")
        run_dir = checkpoint.resolve().parent.parent
        return RunPlan(run_dir, run_dir.name, checkpoint.resolve())
    if cfg.run_id:
        run_dir = experiment_dir / str(cfg.run_id)
        latest = CheckpointStore(run_dir).latest()
        if latest is not None and resume == "never":
            raise ConfigError(f"run {run_dir} already has checkpoints; use another run_id or train.resume=auto")
        return RunPlan(run_dir, str(cfg.run_id), latest if resume == "auto" else None)
    if resume == "auto" and experiment_dir.is_dir():
        runs = sorted((p for p in experiment_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for run_dir in runs:
            latest = CheckpointStore(run_dir).latest()
            if latest is None or (run_dir / SUMMARY_FILE).exists():
                continue
            if same_experiment(run_dir / "config.yaml", cfg):
                log.info("resuming unfinished run %s from %s", run_dir, latest.name)
                return RunPlan(run_dir, run_dir.name, latest)
            log.info("not resuming %s: its config differs from this one", run_dir)
            break
    run_id = new_run_id()
    return RunPlan(experiment_dir / run_id, run_id, None)
