"""Tracking: every scalar to the run's `metrics.jsonl`, and to Weights & Biases through Accelerate's tracker.

W&B mode: `auto` is online when an API key is configured (`wandb login` / WANDB_API_KEY), offline otherwise
(sync later with `wandb sync RUN_DIR/wandb/offline-run-*`); a WANDB_MODE in the environment wins over `auto`.
Only the main process creates a run.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from audiointerp.configs.schema import TrackingConfig
from audiointerp.evaluation.results import AudioClip, Table

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    """True when a W&B API key is configured (WANDB_API_KEY, or `wandb login`'s netrc entry); never prompts."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):  # no netrc file, or an unreadable one
        return False


def wandb_mode(requested: str) -> str:
    """online | offline, from the config's mode and the environment."""
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if wandb_logged_in() else "offline"


def wandb_run_id(experiment: str, run_id: str) -> str:
    """A stable W&B id for a run directory, so a resumed run continues the same W&B run."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{experiment}-{run_id}")[:128]


class MetricsLog:
    """Append-only `metrics.jsonl`: one record per logging call, with step, epoch and wall time."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (logged by a killed run after its last checkpoint), and a half-written last
        line; the file is replaced atomically."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # cut off by a kill
                continue
            if record.get("step", step + 1) <= step:
                kept.append(line)
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


class Tracking:
    """Scalars, figures, audio tables and checkpoint artifacts for one run."""

    def __init__(self, accelerator: Accelerator, cfg: DictConfig, run_dir: Path, run_id: str, tags: list[str], job_type: str) -> None:
        self.accelerator = accelerator
        self.cfg = cfg
        self.run_dir = run_dir
        self.run_id = run_id
        self.tags = tags
        self.job_type = job_type
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        self.enabled = cfg.tracking.backend == "wandb"
        self.mode = wandb_mode(str(cfg.tracking.mode)) if self.enabled else "none"
        self._run: Any = None

    def start(self) -> None:
        """Create (or resume) the W&B run on the main process."""
        if not self.enabled:
            return
        tracking = self.cfg.tracking
        init_kwargs = {
            "name": f"{self.cfg.experiment}/{self.run_id}",
            "group": str(tracking.group or self.cfg.experiment),
            "tags": sorted(set(self.tags) | set(tracking.tags)),
            "job_type": self.job_type,
            "id": wandb_run_id(str(self.cfg.experiment), self.run_id),
            "resume": "allow",
            "dir": str(self.run_dir),
            "mode": self.mode,
            "entity": tracking.entity,
            "notes": tracking.notes,
        }
        config = OmegaConf.to_container(self.cfg, resolve=True)
        self.accelerator.init_trackers(str(tracking.project), config=config, init_kwargs={"wandb": init_kwargs})
        if self.accelerator.is_main_process:
            self._run = self.accelerator.get_tracker("wandb", unwrap=True)
            log.info("W&B run %s (%s mode) in %s", init_kwargs["id"], self.mode, self.run_dir / "wandb")

    def log(self, scalars: dict[str, float], step: int, epoch: float) -> None:
        """Scalars to metrics.jsonl and W&B (call on every process; only the main one writes)."""
        if not self.accelerator.is_main_process:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        self.metrics.append({"step": step, "epoch": round(epoch, 4), "time": round(time.time(), 3), **clean})
        if self._run is not None:
            self._run.log(clean, step=step)

    def log_figures(self, figures: dict[str, Any], step: int, prefix: str) -> None:
        if self._run is None or not figures:
            return
        import wandb

        self._run.log({f"{prefix}/{name}": wandb.Image(fig) for name, fig in figures.items()}, step=step)

    def log_tables(self, tables: dict[str, Table], step: int, prefix: str) -> None:
        if self._run is None or not tables:
            return
        import wandb

        def cell(value: Any) -> Any:
            if isinstance(value, AudioClip):
                samples = value.samples.T if value.samples.ndim == 2 else value.samples
                return wandb.Audio(samples, sample_rate=value.sample_rate, caption=value.caption)
            return value

        for name, table in tables.items():
            data = [[cell(v) for v in row] for row in table.rows]
            self._run.log({f"{prefix}/{name}": wandb.Table(columns=table.columns, data=data)}, step=step)

    def log_checkpoint(self, path: Path, aliases: list[str]) -> None:
        """Upload a checkpoint's model weights (with the run's config and metadata) as a `type="model"` artifact;
        the optimizer and RNG states stay local."""
        if self._run is None:
            return
        import wandb

        artifact = wandb.Artifact(wandb_run_id(str(self.cfg.experiment), self.run_id) + "-model", type="model",
                                  metadata={"checkpoint": path.name})
        files = [path / "model.safetensors", path / "checkpoint.json", self.run_dir / "config.yaml",
                 self.run_dir / "metadata.json", self.run_dir / "arrays.safetensors"]
        for file in files:
            if file.is_file():
                artifact.add_file(str(file))
        self._run.log_artifact(artifact, aliases=aliases)

    def finish(self, failed: bool = False) -> None:
        """End the W&B run (marked failed, once, when the run raised) and Accelerate's training state.

        Never raises: it runs while another error (a full disk, a non-finite loss) is on its way to the user,
        and W&B's own failure to close (its files live in the run folder) must not replace that error."""
        run, self._run = self._run, None
        try:
            if failed and run is not None:
                run.finish(exit_code=1)
            self.accelerator.end_training()
        except Exception as err:  # noqa: BLE001 (reported, then the run's own error goes on)
            log.warning("could not close the W&B run cleanly: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)


def analysis_tracking(out: Path, experiment: str, settings: dict[str, Any], backend: str = "wandb", mode: str = "auto",
                      project: str = "audiointerp", group: str | None = None) -> Tracking:
    """A started `Tracking` for an analysis writing into `out` (backend `none`: metrics.jsonl only)."""
    tracking_cfg = OmegaConf.merge(OmegaConf.structured(TrackingConfig),
                                   {"backend": backend, "mode": mode, "project": project, "group": group or experiment})
    cfg = OmegaConf.create({"experiment": experiment, "tracking": tracking_cfg, "analysis": settings})
    accelerator = Accelerator(cpu=True, log_with="wandb" if backend == "wandb" else None, project_dir=str(out))
    tracking = Tracking(accelerator, cfg, Path(out), experiment, ["analysis"], "analysis")
    tracking.start()
    return tracking
