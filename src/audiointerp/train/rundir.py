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


def config_differences(saved_config: Path, cfg: DictConfig) -> list[str]:
    """Keys whose values differ between a run directory's config.yaml and `cfg` (resumable keys aside)."""
    try:
        saved = _comparable(OmegaConf.load(saved_config))
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


def plan_run(cfg: DictConfig) -> RunPlan:
    """Decide the run directory and the checkpoint to resume from (call on the main process)."""
    experiment_dir = Path(cfg.output_dir) / str(cfg.experiment)
    resume = str(cfg.train.resume)
    if resume not in ("auto", "never"):
        checkpoint = Path(resume)
        if not (checkpoint / INFO_FILE).is_file():
            raise CheckpointError(f"train.resume={resume!r} is not a complete checkpoint folder (no {INFO_FILE})")
        run_dir = checkpoint.resolve().parent.parent
        _check_resumable(run_dir, cfg)
        return RunPlan(run_dir, run_dir.name, checkpoint.resolve())
    if cfg.run_id:
        run_dir = experiment_dir / str(cfg.run_id)
        latest = CheckpointStore(run_dir).latest()
        if latest is not None and resume == "never":
            raise ConfigError(f"run {run_dir} already has checkpoints; use another run_id or train.resume=auto")
        if latest is not None:
            _check_resumable(run_dir, cfg)
        return RunPlan(run_dir, str(cfg.run_id), latest if resume == "auto" else None)
    if resume == "auto" and experiment_dir.is_dir():
        runs = sorted((p for p in experiment_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for run_dir in runs:
            latest = CheckpointStore(run_dir).latest()
            if latest is None or (run_dir / SUMMARY_FILE).exists():
                continue
            if not config_differences(run_dir / "config.yaml", cfg):
                log.info("resuming unfinished run %s from %s", run_dir, latest.name)
                return RunPlan(run_dir, run_dir.name, latest)
    run_id = new_run_id()
    return RunPlan(experiment_dir / run_id, run_id, None)
