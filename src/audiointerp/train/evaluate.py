"""Evaluate a trained run or an export on any dataset, without retraining (optionally on several processes)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional, Sequence

from accelerate.utils import broadcast_object_list
from omegaconf import OmegaConf

from audiointerp.evaluation.plots import save_figure
from audiointerp.train.checkpoint import write_json_atomic
from audiointerp.train.export import MANIFEST, load_export_task, task_from_checkpoint
from audiointerp.train.tasks import EvalResult
from audiointerp.train.trainer import make_accelerator, make_loader, run_evaluation, setup_logging

log = logging.getLogger("audiointerp")


def evaluate(
    source: str | Path,
    data: Optional[str] = None,
    data_format: str = "auto",
    folds: Optional[Sequence[str]] = None,
    checkpoint: str = "best",
    out_dir: Optional[str | Path] = None,
    batch_size: Optional[int] = None,
    progress: bool = True,
) -> EvalResult:
    """Metrics of a run (its `checkpoint`) or an export on `data` (default: the run's validation folds).

    Writes `metrics.json` and figures to `out_dir` (default `<source>/eval/<data name>/`).
    """
    source = Path(source)
    if (source / MANIFEST).is_file():
        task, _ = load_export_task(source)
    else:
        task, _, _, _ = task_from_checkpoint(source, checkpoint)
    cfg = task.cfg
    accelerator = make_accelerator(OmegaConf.merge(cfg, {"tracking": {"backend": "none"}}))
    setup_logging(None, accelerator.is_main_process)
    if data is None:
        data, data_format, folds = str(cfg.data.source), str(cfg.data.format), list(cfg.data.valid_folds)
    with accelerator.main_process_first():
        dataset = task.build_eval_data(data, data_format, folds)
    loader = make_loader(dataset, batch_size or int(cfg.data.eval_batch_size), False, int(cfg.data.num_workers), 0)
    task, loader = accelerator.prepare(task, loader)
    outputs = run_evaluation(accelerator, task, loader, progress, desc=f"evaluate {Path(data).stem}")
    result = [None]
    if accelerator.is_main_process:
        result = [accelerator.unwrap_model(task).summarize(outputs, dataset)]
        data_path = Path(data)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", data_path.parent.name if data_path.suffix == ".csv" else data_path.name)
        run_dir = source.parent if (source / MANIFEST).is_file() else source  # never write into an export
        out = Path(out_dir) if out_dir else run_dir / "eval" / name
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "metrics.json", result[0].metrics)
        for fig_name, figure in result[0].figures.items():
            save_figure(figure, out / f"{fig_name}.png")
        log.info("evaluation of %s on %s: %s (written to %s)", source, data,
                 {k: round(v, 4) for k, v in result[0].metrics.items()}, out)
    if accelerator.num_processes > 1:
        metrics = [result[0].metrics if result[0] is not None else None]
        broadcast_object_list(metrics)
        result = [result[0] or EvalResult(metrics[0])]
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result[0]
