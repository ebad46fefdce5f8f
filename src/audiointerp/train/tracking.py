"""Tracking: every scalar to the run's `metrics.jsonl`, and to Weights & Biases through Accelerate's tracker.

W&B mode: `auto` is online when an API key is configured (`wandb login` / WANDB_API_KEY), offline otherwise
(sync later with `wandb sync RUN_DIR/wandb/offline-run-*`); a WANDB_MODE in the environment wins over `auto`.
Only the main process creates a run.

For comparison on the dashboard: the config goes to W&B flattened (`optim.lr`, `tracking.condition`, ...: every
key filters and groups on its own); every scalar is logged with `step` (and `epoch`), and `train/*`, `valid/*`,
`test/*` and `data/*` are plotted against `step` (`define_metric`); each `valid/` and `test/` metric's summary is
its best value where the name says which way is better (`summary_goal`: `max` for accuracies, mAP, scores,
correlations, ...; `min` for losses, errors and distances). Inside a W&B sweep summaries keep W&B's default
(the last value): the sweep controller needs a plain number for its metric and takes the best over the history
itself; the sweep's run id, project and entity are the sweep's.
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


# Words of a metric name (split at anything not a letter or digit, lower case) saying that higher is better, and
# that lower is better. A name with words of both kinds, or of neither, keeps W&B's default summary (the last value).
HIGHER_IS_BETTER = frozenset({
    "accuracy", "acc", "map", "auc", "auroc", "f1", "score", "spearman", "pearson", "correlation", "r2", "r2cv",
    "precision", "recall", "amcss", "snr", "sdr", "iou", "dice", "knn", "top1", "top5"})
LOWER_IS_BETTER = frozenset({
    "loss", "error", "err", "eer", "wer", "mse", "mae", "rmse", "nll", "ce", "distance", "dist", "bits",
    "perplexity"})
STEP_KEY = "step"  # the x-axis every scalar is logged with
AXIS_PREFIXES = ("train", "valid", "test", "data")  # metric families plotted against STEP_KEY
SUMMARY_PREFIXES = ("valid", "test")  # families whose summary is their best value


def summary_goal(name: str) -> str | None:
    """'max', 'min' or None (W&B's default summary, the last value) for a metric name such as `valid/accuracy`.

    The words of the name's last part (after the final '/', split at every character that is not a letter or
    digit, lower-cased) decide: a word of `HIGHER_IS_BETTER` gives max, one of `LOWER_IS_BETTER` min; both
    kinds, or neither (`train/lr`, `valid/examples`, `valid/chance_material`), None."""
    words = set(re.split(r"[^a-z0-9]+", name.rsplit("/", 1)[-1].lower())) - {""}
    higher, lower = bool(words & HIGHER_IS_BETTER), bool(words & LOWER_IS_BETTER)
    return "max" if higher and not lower else "min" if lower and not higher else None


def flat_config(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config (dicts) as {dotted.key: value}, as W&B gets it; lists stay lists, an empty mapping stays
    `{}` under its key."""
    if isinstance(node, dict) and (node or not prefix):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flat_config(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: node}


def in_sweep() -> bool:
    """True inside a W&B sweep's trial (the agent sets WANDB_SWEEP_ID for it and its child processes)."""
    return bool(os.environ.get("WANDB_SWEEP_ID"))


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
        self._defined: set[str] = set()  # metric names given their summary through define_metric

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
        if in_sweep():  # the sweep names the run, its project and entity (W&B would ignore ours, with a warning)
            for key in ("id", "resume", "entity"):
                init_kwargs.pop(key)
        config = flat_config(OmegaConf.to_container(self.cfg, resolve=True))
        self.accelerator.init_trackers(str(tracking.project), config=config, init_kwargs={"wandb": init_kwargs})
        if self.accelerator.is_main_process:
            self._run = self.accelerator.get_tracker("wandb", unwrap=True)
            self._run.define_metric(STEP_KEY, hidden=True)
            for prefix in AXIS_PREFIXES:
                self._run.define_metric(f"{prefix}/*", step_metric=STEP_KEY)
            log.info("W&B run %s (%s mode) in %s", self._run.id, self.mode, self.run_dir / "wandb")

    def _define_summaries(self, names: Any) -> None:
        """`define_metric` for each new name of `SUMMARY_PREFIXES` with a `summary_goal`: its step axis and its
        best value as summary (not inside a sweep: see the module's notes)."""
        for name in names:
            if name in self._defined:
                continue
            self._defined.add(name)
            goal = summary_goal(name)
            if goal and name.split("/", 1)[0] in SUMMARY_PREFIXES and not in_sweep():
                # a '.' in a metric name is a nesting separator to define_metric: escaped, it is the name's own
                self._run.define_metric(name.replace(".", "\\."), step_metric=STEP_KEY, summary=goal)

    def log(self, scalars: dict[str, float], step: int, epoch: float) -> None:
        """Scalars to metrics.jsonl and W&B (call on every process; only the main one writes)."""
        if not self.accelerator.is_main_process:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        self.metrics.append({"step": step, "epoch": round(epoch, 4), "time": round(time.time(), 3), **clean})
        if self._run is not None:
            self._define_summaries(clean)
            self._run.log({**clean, STEP_KEY: step, "epoch": round(epoch, 4)}, step=step)

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
    """A started `Tracking` for an analysis writing into `out` (backend `none`: metrics.jsonl only). Its Accelerator
    is a CPU one, unless a training run in this process already set Accelerate's (process-wide) state on a GPU:
    then it shares that state (an analysis tracker computes nothing on the device)."""
    tracking_cfg = OmegaConf.merge(OmegaConf.structured(TrackingConfig),
                                   {"backend": backend, "mode": mode, "project": project, "group": group or experiment})
    cfg = OmegaConf.create({"experiment": experiment, "tracking": tracking_cfg, "analysis": settings})
    log_with = "wandb" if backend == "wandb" else None
    try:
        accelerator = Accelerator(cpu=True, log_with=log_with, project_dir=str(out))
    except ValueError as err:  # a GPU training run in this process (a grid, the quickstart) set Accelerate's state
        if "already been initialized" not in str(err):
            raise
        accelerator = Accelerator(log_with=log_with, project_dir=str(out))
    tracking = Tracking(accelerator, cfg, Path(out), experiment, ["analysis"], "analysis")
    tracking.start()
    return tracking
