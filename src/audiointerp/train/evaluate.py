"""Evaluate a trained run or an export on any dataset, without retraining (optionally on several processes)."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf

from audiointerp.errors import ConfigError
from audiointerp.evaluation.plots import amcss_curves, ranking_bars, rdm_panels, save_figure
from audiointerp.train.checkpoint import write_json_atomic
from audiointerp.train.config import load_config
from audiointerp.train.export import MANIFEST, load_export_task, task_from_checkpoint
from audiointerp.train.tasks import EvalResult
from audiointerp.train.tracking import Tracking
from audiointerp.train.trainer import make_accelerator, make_loader, run_evaluation, setup_logging, summarize_on_main

log = logging.getLogger("audiointerp")


def apply_settings(cfg: DictConfig, settings: Sequence[str]) -> DictConfig:
    """A run's config with `key=value` changes of its `task.*` and `data.*` keys, checked against the schema."""

    for item in settings:
        if not item.startswith(("task.", "data.")) or item.startswith("task.name"):
            raise ConfigError(f"evaluation setting {item!r}: only task.* and data.* keys can change at evaluation")
    return load_config(OmegaConf.to_container(cfg, resolve=True), list(settings))


def data_name(data: Optional[str]) -> str:
    """A folder-safe name of a data source: a manifest's folder, or a dataset root's name."""
    if data is None:
        return "validation"
    path = Path(data)
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.parent.name if path.suffix == ".csv" else path.name)


def describe_set(cfg: DictConfig, data: Optional[str], folds: Optional[Sequence[str]]) -> dict[str, Any]:
    """Which set an evaluation is on: {"set", "source", "folds"}.

    `set` is "valid", "test" or "train" when the data is the run's own source (or None) and the folds are exactly
    its `data.valid_folds`, `data.test_folds` or within `data.train_folds`; "folds" for another selection of its
    folds; "external" for any other data. `folds` None on the run's data means its validation folds.
    """
    own = data is None or Path(str(data)).expanduser().resolve() == Path(str(cfg.data.source)).expanduser().resolve()
    if not own:
        return {"set": "external", "source": str(data), "folds": None if folds is None else [str(f) for f in folds]}
    chosen = [str(f) for f in (cfg.data.valid_folds if folds is None else folds)]
    name = "folds"
    if set(chosen) == {str(f) for f in cfg.data.valid_folds}:
        name = "valid"
    elif cfg.data.test_folds and set(chosen) == {str(f) for f in cfg.data.test_folds}:
        name = "test"
    elif set(chosen) <= {str(f) for f in cfg.data.train_folds}:
        name = "train"
    return {"set": name, "source": str(cfg.data.source), "folds": chosen}


def evaluate(
    source: str | Path,
    data: Optional[str] = None,
    data_format: str = "auto",
    folds: Optional[Sequence[str]] = None,
    checkpoint: str = "best",
    out_dir: Optional[str | Path] = None,
    batch_size: Optional[int] = None,
    progress: bool = True,
    settings: Sequence[str] = (),
) -> EvalResult:
    """Metrics of a run (its `checkpoint`) or an export on `data` (default: the run's validation folds).

    `settings` are `key=value` changes of the run's evaluation settings (`task.*` or `data.*` keys, e.g.
    `task.macro_column=label` for MSOS's macro classes). Writes `metrics.json`, `metrics.csv/.md` (with the set:
    valid, test, train, folds or external, see `describe_set`), `evaluation.json` (the set, its source and folds,
    the checkpoint, and how the figures were computed, e.g. the ranking's tie rule) and figures to `out_dir`
    (default `<run>/eval/<data name>/`).
    """
    source = Path(source)
    if (source / MANIFEST).is_file():
        task, _ = load_export_task(source)
    else:
        task, _, _, _ = task_from_checkpoint(source, checkpoint)
    if settings:
        task.cfg = apply_settings(task.cfg, settings)
    cfg = task.cfg
    accelerator = make_accelerator(cfg)
    setup_logging(None, accelerator.is_main_process)
    run_dir = source.parent if (source / MANIFEST).is_file() else source  # never write into an export
    out = Path(out_dir) if out_dir else run_dir / "eval" / data_name(data)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    # an evaluation is a W&B run of its own (job type "eval") in the training run's group
    tracking = Tracking(accelerator, cfg, out, f"{run_dir.name}-eval-{data_name(data)}", task.tags(), "eval")
    evaluated = describe_set(cfg, data, folds)
    if data is None:  # the run's own data: its validation folds unless `folds` names others (e.g. its test folds)
        data, data_format = str(cfg.data.source), str(cfg.data.format)
        folds = list(cfg.data.valid_folds) if not folds else [str(f) for f in folds]
    with accelerator.main_process_first():
        dataset = task.build_eval_data(data, data_format, folds)
    loader = make_loader(dataset, batch_size or int(cfg.data.eval_batch_size), False, int(cfg.data.num_workers), 0)
    task, loader = accelerator.prepare(task, loader)
    outputs = run_evaluation(accelerator, task, loader, progress, desc=f"evaluate {Path(data).stem}", run_dir=run_dir)
    tracking.start()
    result = summarize_on_main(accelerator, task, outputs, dataset)
    core = accelerator.unwrap_model(task)
    result.notes = {**evaluated, "checkpoint": None if (source / MANIFEST).is_file() else checkpoint,
                    "resolved": {**run_resolved(source), **core.evaluation_notes()}}
    if accelerator.is_main_process:
        write_json_atomic(out / "metrics.json", result.metrics)
        write_json_atomic(out / "evaluation.json", result.notes)
        write_tables([{"model": str(cfg.experiment), "data": data_name(data), "set": evaluated["set"], **result.metrics}],
                     out / "metrics")
        tracking.log({f"eval/{k}": v for k, v in result.metrics.items()}, 0, 0.0)
        tracking.log_figures(result.figures, 0, "eval")
        tracking.log_tables(result.tables, 0, "eval")
        for fig_name, figure in result.figures.items():
            save_figure(figure, out / f"{fig_name}.png")
        for array_name, array in result.arrays.items():
            np.save(out / f"{array_name}.npy", array, allow_pickle=False)
        log.info("evaluation of %s on %s (%s set, folds %s): %s (written to %s)", source, data, evaluated["set"], evaluated["folds"],
                 {k: round(v, 4) for k, v in result.metrics.items()}, out)
    accelerator.wait_for_everyone()
    tracking.finish()
    return result


def run_resolved(run_dir: Path) -> dict[str, str]:
    """What a run's config choices resolved to (e.g. the word vectors' source), from its metadata.json."""
    path = Path(run_dir) / "metadata.json"
    if not path.is_file():
        return {}
    import json

    resolved = json.loads(path.read_text(encoding="utf-8")).get("resolved")
    return dict(resolved) if isinstance(resolved, dict) else {}


def write_tables(rows: list[dict[str, object]], stem: Path) -> None:
    """Rows of metrics as `<stem>.csv` and a Markdown table `<stem>.md`."""
    first = [c for c in ("model", "data", "set") if any(c in row for row in rows)]
    columns = first + sorted({k for row in rows for k in row} - set(first), key=_metric_order)
    with open(stem.with_suffix(".csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def task_config(source: Path) -> DictConfig:
    """A run's or export's config.yaml, as written (for naming the evaluated set)."""
    return OmegaConf.load(Path(source) / "config.yaml")


def run_name(source: Path) -> str:
    """A run's or export's experiment name, for tables and legends."""
    return str(OmegaConf.load(Path(source) / "config.yaml").experiment)


def compare(
    sources: Sequence[str | Path],
    datas: Sequence[Optional[str]],
    out_dir: str | Path,
    data_format: str = "auto",
    checkpoint: str = "best",
    batch_size: Optional[int] = None,
    progress: bool = True,
    settings: Sequence[str] = (),
) -> list[dict[str, object]]:
    """Evaluate every run on every dataset, then write a comparison: `comparison.csv`, `comparison.md` and
    figures (ranking score per dataset and model, AMCSS against top-N, embedding RDMs side by side)."""

    out = Path(out_dir)
    rows: list[dict[str, object]] = []
    rdms: dict[str, np.ndarray] = {}
    rdm_labels: Optional[list[str]] = None
    for data in datas:
        for source in map(Path, sources):
            model, dataset = run_name(source), data_name(data)
            result = evaluate(source, data=data, data_format=data_format, checkpoint=checkpoint,
                              out_dir=out / dataset / model, batch_size=batch_size, progress=progress, settings=settings)
            rows.append({"model": model, "data": dataset,
                         "set": describe_set(task_config(source), data, None)["set"], **result.metrics})
            if "embedding_rdm" in result.arrays and data == datas[0]:
                labels = [str(v) for v in result.arrays["macro_labels"]]
                if rdm_labels is not None and labels != rdm_labels:  # side by side only over the same classes
                    log.warning("%s: its RDM is over %d classes, not the %d of the first run's; left out of rdms.png",
                                model, len(labels), len(rdm_labels))
                    continue
                rdms[model], rdm_labels = result.arrays["embedding_rdm"], labels
    out.mkdir(parents=True, exist_ok=True)
    write_tables(rows, out / "comparison")
    if any("ranking_score" in row for row in rows):
        table: dict[str, dict[str, float]] = {}
        for row in rows:
            if "ranking_score" in row:
                table.setdefault(str(row["data"]), {})[str(row["model"])] = float(row["ranking_score"])
        save_figure(ranking_bars(table), out / "ranking_score.png")
        first = data_name(datas[0])
        curves = {str(r["model"]): {int(k.split("@")[1]): float(v) for k, v in r.items() if k.startswith("amcss@")}
                  for r in rows if r["data"] == first and "ranking_score" in r}
        save_figure(amcss_curves(curves, title=f"AMCSS on {first}"), out / "amcss.png")
    if len(rdms) > 1 or (rdms and rdm_labels):
        save_figure(rdm_panels(rdms, labels=rdm_labels), out / "rdms.png")
    log.info("comparison of %d run(s) on %d data set(s) written to %s", len(sources), len(datas), out)
    return rows


def _metric_order(name: str) -> tuple[int, int, str]:
    """Table columns: main scores first, AMCSS by N, the rest alphabetically."""
    main = ["ranking_score", "accuracy", "mAP", "macro_rdm_correlation", "rsa_r2cv", "loss", "examples"]
    if name in main:
        return (0, main.index(name), name)
    if name.startswith("amcss@"):
        return (1, int(name.split("@")[1]), name)
    return (2, 0, name)
