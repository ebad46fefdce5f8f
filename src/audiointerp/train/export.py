"""Exports for analysis: weights as safetensors, config, labels, metrics, and a manifest of sha256 sums.

`export_run(RUN_DIR)` writes the folder; `load_export(DIR)` checks every file's sha256 and returns the
network in eval mode. Nothing is unpickled: weights are safetensors, configs YAML, the rest JSON/text.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from audiointerp import __version__
from audiointerp.errors import CheckpointError, writing
from audiointerp.locks import FileLock
from audiointerp.models.registry import sha256  # noqa: F401  (also imported from here by extraction and tests)
from audiointerp.train.checkpoint import (
    ARRAYS,
    FROZEN,
    INFO_FILE,
    METADATA,
    CheckpointStore,
    check_frozen_unchanged,
    frozen_records,
    load_arrays,
    load_task_weights,
    read_info,
)
from audiointerp.train.config import load_config, to_yaml
from audiointerp.train.swa import averaged_parameters, read_average

log = logging.getLogger("audiointerp")
from audiointerp.train.tasks import Task, task_class

WEIGHTS = "model.safetensors"  # an export's weights; also what Accelerate's save_state names a checkpoint's model
MANIFEST = "manifest.json"
REQUIRED = (WEIGHTS, "config.yaml", METADATA)  # files every export must list in its manifest


def git_commit() -> Optional[str]:
    """The commit of the audiointerp source tree, when it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_config(run_dir: Path) -> DictConfig:
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory: {path.name} is missing")
    return load_config(path)


def run_metadata(folder: Path) -> dict[str, Any]:
    """The task metadata of a run or export folder."""
    path = Path(folder) / METADATA
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def rebuild_task(cfg: DictConfig, folder: Path) -> tuple[Task, dict[str, Any]]:
    """A task's models from the config and the metadata and arrays of a run or export folder, without data
    and without re-reading pretrained weights."""
    metadata = run_metadata(folder)
    task = task_class(str(cfg.task.name))(OmegaConf.merge(cfg, {"model": {"checkpoint": None}}))
    task.build_models(metadata, load_arrays(folder))
    return task, metadata


def looks_like_export(folder: Path) -> bool:
    """Whether `folder` holds an export's weights (`model.safetensors` at its top) and is no run (no `checkpoints/`)."""
    return (folder / WEIGHTS).is_file() and not (folder / "checkpoints").is_dir()


def task_from_checkpoint(run_dir: Path, checkpoint: str = "best") -> tuple[Task, DictConfig, dict[str, Any], Path]:
    """Rebuild a run's task (no data needed) with the weights of one of its checkpoints.

    A folder that holds an export's weights but no `manifest.json` (and no `checkpoints/`) raises
    `CheckpointError` saying it is not an export because its manifest is missing, rather than that it has no
    checkpoint; another non-run folder says it is not a run directory.
    """
    run_dir = Path(run_dir)
    if looks_like_export(run_dir) and not (run_dir / MANIFEST).is_file():
        raise CheckpointError(_missing_manifest(run_dir))
    cfg = run_config(run_dir)
    folder = CheckpointStore(run_dir).resolve(checkpoint)
    task, metadata = rebuild_task(cfg, run_dir)
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {WEIGHTS}")
    check_frozen_unchanged(folder, read_info(folder).get(FROZEN) or {}, frozen_records(task), "load")
    try:
        load_task_weights(task, weights, task.frozen_modules())
    except CheckpointError as err:
        raise CheckpointError(f"checkpoint {folder} does not fit the run's task {cfg.task.name!r}: {err}") from err
    task.eval()
    return task, cfg, metadata, folder


def export_run(run_dir: str | Path, out: str | Path | None = None, checkpoint: Optional[str] = None,
               swa: bool = False) -> Path:
    """Write an export folder from a run's checkpoint (default `best`); returns its path (default RUN_DIR/export).
    `swa`: export the checkpoint's averaged weights (`train.swa`; default checkpoint `last`, whose mean covers every
    averaged epoch; CheckpointError when it has none or no epoch averaged yet)."""
    run_dir = Path(run_dir)
    checkpoint = checkpoint or ("last" if swa else "best")
    task, cfg, metadata, folder = task_from_checkpoint(run_dir, checkpoint)
    averaged = None
    if swa:
        mean, averaged = read_average(folder)
        if averaged == 0:
            raise CheckpointError(f"{folder} was saved before the first averaged epoch (train.swa_start_epoch="
                                  f"{cfg.train.swa_start_epoch}): it has no averaged weights yet")
        params = averaged_parameters(task.export_module())
        if set(params) != set(mean):
            raise CheckpointError(f"{folder}'s averaged weights are of other parameters than its model's")
        with torch.no_grad():
            for name, parameter in params.items():
                parameter.copy_(mean[name])
        end = cfg.train.swa_end_epoch if cfg.train.swa_end_epoch is not None else cfg.train.epochs
        planned = int(end) - int(cfg.train.swa_start_epoch) + 1
        if averaged < planned:
            log.warning("%s averages %d epochs' weights of the %d train.swa asks for (a checkpoint from before the "
                        "end of averaging; `--checkpoint last` has them all)", folder, averaged, planned)
    out = Path(out) if out else run_dir / "export"
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise CheckpointError(f"--out {out} is a non-empty folder that is not an audiointerp export; choose another")
    with writing("export", out):  # a full or read-only disk: named, and no half export is left
        out.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(out.parent / f".{out.name}.lock", f"export {out}", "wait for that export to finish"):
            for leftover in out.parent.glob(f".{out.name}-*"):  # of an export killed before its last rename
                shutil.rmtree(leftover, ignore_errors=True)
            return _write_export(task, cfg, metadata, folder, run_dir, out, averaged)


def _write_export(task: Any, cfg: DictConfig, metadata: dict[str, Any], folder: Path, run_dir: Path, out: Path,
                  averaged: Optional[int] = None) -> Path:
    """Write the export into a temporary sibling `.<out>-<random>`, then swap it in: an existing `out` is renamed
    aside first and removed after, so a kill at any moment leaves the old export, the new one, or no `out` (and
    temporary siblings that the next export removes), never a half-deleted folder."""
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    temp.chmod(0o755)
    try:
        module = task.export_module()
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(temp / WEIGHTS),
                  metadata={"format": "pt", "audiointerp": __version__})
        (temp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
        (temp / METADATA).write_text(json.dumps(metadata, indent=2), encoding="utf-8")
        if (run_dir / ARRAYS).is_file():
            shutil.copyfile(run_dir / ARRAYS, temp / ARRAYS)
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        (temp / "metrics.json").write_text(json.dumps(info.get("metrics", {}), indent=2, sort_keys=True), encoding="utf-8")
        task.write_export_files(temp, metadata)
        files = sorted(p for p in temp.rglob("*") if p.is_file())
        manifest = {
            "audiointerp_version": __version__,
            "git_commit": git_commit(),
            "run_dir": str(run_dir.resolve()),
            "checkpoint": folder.name,
            "swa_epochs": averaged,  # the weights are the mean of this many epochs' (train.swa), or null
            "step": info.get("step"),
            "epoch": info.get("epoch"),
            "task": str(cfg.task.name),
            "model": str(cfg.model.name),
            "files": {str(p.relative_to(temp)): sha256(p) for p in files},
        }
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
            os.replace(out, old)
            os.replace(temp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, out)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return out


def _missing_manifest(folder: Path) -> str:
    held = f" (it holds {WEIGHTS} but no checkpoints/, so it is no run either)" if looks_like_export(folder) else ""
    return (f"{folder} is not an export: {MANIFEST} is missing{held}; an export lists the sha256 of every file in "
            f"{MANIFEST}: re-export its run with `audiointerp export RUN_DIR`")


def verify_export(export_dir: str | Path) -> dict[str, Any]:
    """Check every file listed in manifest.json against its sha256; returns the manifest.

    A folder without manifest.json raises `CheckpointError` "... is not an export: manifest.json is missing".
    """
    export_dir = Path(export_dir)
    manifest_path = export_dir / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(_missing_manifest(export_dir))
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    unlisted = [name for name in REQUIRED if name not in manifest.get("files", {})]
    if unlisted:
        raise CheckpointError(f"export {export_dir}: {MANIFEST} does not list {', '.join(unlisted)} (modified or corrupt)")
    for name, expected in manifest["files"].items():
        path = export_dir / name
        if not path.is_file():
            raise CheckpointError(f"export {export_dir}: {name} is missing")
        if sha256(path) != expected:
            raise CheckpointError(f"export {export_dir}: {name} does not match its sha256 in {MANIFEST} (modified or corrupt)")
    return manifest


def load_export_task(export_dir: str | Path) -> tuple[Task, dict[str, Any]]:
    """The task of an export, its exported module loaded, in eval mode; and the metadata."""
    export_dir = Path(export_dir)
    verify_export(export_dir)
    cfg = load_config(export_dir / "config.yaml")
    task, metadata = rebuild_task(cfg, export_dir)
    module = task.export_module()
    state = load_file(str(export_dir / WEIGHTS), device="cpu")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"export {export_dir}: weights do not fit model {cfg.model.name!r}: {err}") from err
    task.eval()
    return task, metadata


def load_export(export_dir: str | Path) -> nn.Module:
    """The exported network in eval mode (sha256 of every file checked first)."""
    task, _ = load_export_task(export_dir)
    module = task.export_module()
    module.eval()
    return module
