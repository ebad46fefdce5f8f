"""The one generic trainer: Accelerate's canonical loop around a task.

`Trainer(cfg).fit()` builds the task, prepares it with its optimiser, scheduler and data loaders, and runs
epochs of `task(batch) -> (loss, logs)` with gradient accumulation, clipping, non-finite guards (every batch's
loss and every parameter and buffer, read at each logging interval and before each checkpoint; fp16 updates skipped
in a row; evaluation outputs), evaluation gathered over processes, atomic checkpoints of finite states only, W&B
tracking, and exact resumption (never from a non-finite checkpoint).

On a GPU the loop never waits for the device for its bookkeeping: losses, logs and finiteness flags stay on the
device and are read in one host-device synchronisation per logging interval (and before each checkpoint).
`train.mixed_precision` runs the networks under autocast and the front ends and losses in float32
(`models.precision`); `train.compile` compiles the task's networks in place (plain state-dict keys). Frozen modules
(`Task.frozen_modules`) are left out of checkpoints: their source and sha256 are recorded instead.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from audiointerp import __version__
from audiointerp.errors import CheckpointError, ConfigError, NonFiniteLossError, NonFiniteStateError, closest, writing
from audiointerp.evaluation.plots import learning_curves, read_metrics, save_figure
from audiointerp.train.checkpoint import (
    ARRAYS,
    FINITE,
    FROZEN,
    METADATA,
    CheckpointStore,
    TrainState,
    check_frozen_unchanged,
    check_weight_keys,
    frozen_records,
    is_frozen_key,
    load_task_weights,
    non_finite_tensors,
    read_info,
    save_arrays,
    write_json_atomic,
    write_text_atomic,
)
from audiointerp.train.config import to_yaml
from audiointerp.train.export import WEIGHTS
from audiointerp.train.optim import build_optimizer, build_scheduler, total_updates
from audiointerp.train.rundir import SUMMARY_FILE, RunPlan, plan_run
from audiointerp.train.swa import PREFIX as SWA_PREFIX
from audiointerp.train.swa import WeightAverage, check_swa, check_swa_reached
from audiointerp.train.tasks import EvalResult, Task, TaskData, task_class
from audiointerp.train.tracking import Tracking

log = logging.getLogger("audiointerp")

MAX_SKIPPED_UPDATES = 20  # fp16 updates skipped in a row (inf/NaN gradients) before the run stops
NAMED_TENSORS = 5  # non-finite tensors named in an error message
PERF_FILE = "perf.jsonl"  # per logging window: seconds per update and the share of it spent waiting for data


@dataclass
class TrainResult:
    """What a finished run leaves: its folder, final validation metrics, its best checkpoint, and that
    checkpoint's metrics on `data.test_folds` (`test/...`; empty without test folds)."""

    run_dir: Path
    metrics: dict[str, float]
    best_checkpoint: Optional[Path]
    test_metrics: dict[str, float] = field(default_factory=dict)


def check_folds(data_cfg: DictConfig) -> None:
    """Fail before training when a test fold is also a training or validation fold (the test set must be held
    out of both the training and the choice of the best checkpoint)."""
    test = [str(f) for f in data_cfg.test_folds]
    for split in ("train", "valid"):
        shared = sorted(set(test) & {str(f) for f in data_cfg[f"{split}_folds"]})
        if shared:
            raise ConfigError(f"fold(s) {shared} are in both data.{split}_folds and data.test_folds; the test folds must "
                              f"be held out of training and of the choice of the best checkpoint")


def evaluated_sets(data_cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Which data each figure of a run is on: {"valid": {source, folds}, "test": {...} when there are test folds}."""
    sets = {"valid": {"source": str(data_cfg.source), "folds": [str(f) for f in data_cfg.valid_folds]}}
    if data_cfg.test_folds:
        sets["test"] = {"source": str(data_cfg.source), "folds": [str(f) for f in data_cfg.test_folds]}
    return sets


def resolved_comment(resolved: dict[str, str]) -> str:
    """YAML comment lines recording what the config's choices resolved to (e.g. the word vectors' source)."""
    return "".join(f"# resolved {key}: {value}\n" for key, value in resolved.items())


def use_cpu(cfg: DictConfig) -> bool:
    """CPU when asked, or when launched on several processes (torchrun / accelerate launch) without CUDA:
    Accelerate then runs DDP over gloo, as it does for multi-CPU training."""
    return bool(cfg.train.cpu) or (launched() and not torch.cuda.is_available())


def launched() -> bool:
    """Whether this process is one of a multi-process launch (torchrun / accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.environ.get("LOCAL_RANK") is not None


def reset_accelerate_state(cfg: DictConfig) -> None:
    """Let a run set its own precision and device in a process that ran another (an in-process grid over
    `train.mixed_precision`, the GPU benchmark, tests): Accelerate keeps one state per process and refuses a
    second `Accelerator` with another `mixed_precision` or `cpu`. Outside a multi-process launch the state is
    reset when it differs; inside one it is never touched (it holds the process group)."""
    if launched() or not AcceleratorState._shared_state:
        return
    state = AcceleratorState()
    wants_cpu = use_cpu(cfg) or not torch.cuda.is_available()
    if str(state.mixed_precision) != str(cfg.train.mixed_precision) or (state.device.type == "cpu") != wants_cpu:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def make_accelerator(cfg: DictConfig, project_dir: Optional[Path] = None) -> Accelerator:
    """The run's Accelerator; on CUDA, batches go from pinned memory to the device without blocking."""
    cuda = torch.cuda.is_available() and not use_cpu(cfg)
    return Accelerator(
        mixed_precision=str(cfg.train.mixed_precision),
        gradient_accumulation_steps=int(cfg.train.gradient_accumulation_steps),
        log_with="wandb" if cfg.tracking.backend == "wandb" else None,
        project_dir=str(project_dir) if project_dir else None,
        cpu=use_cpu(cfg),
        step_scheduler_with_optimizer=False,  # the scheduler counts optimizer updates (see optim.py)
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=cuda),
    )


def check_mixed_precision(cfg: DictConfig) -> None:
    """`train.mixed_precision=fp16` on the CPU is a `ConfigError` (before anything is written): Accelerate would
    silently train in float32 there, without fp16 autocast or a gradient scaler. bf16 works on the CPU."""
    cpu = use_cpu(cfg)
    accelerated = not cpu and (torch.cuda.is_available() or torch.backends.mps.is_available()
                               or bool(getattr(torch, "xpu", None) and torch.xpu.is_available()))
    if str(cfg.train.mixed_precision) == "fp16" and not accelerated:
        raise ConfigError("train.mixed_precision=fp16 needs a GPU: on the CPU Accelerate would train in float32 "
                          "without saying so; use train.mixed_precision=bf16 (or no) on the CPU")


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                sampler: Optional[Sampler] = None, pin_memory: bool = False, prefetch_factor: int = 2) -> DataLoader:
    """A loader with its own seeded generator; a dataset's `collate_fn` (e.g. padding whole clips of different
    lengths, `datasets.collate_clips`) replaces the default collate.

    Workers persist over epochs (no start-up cost per epoch) and still see each epoch: the datasets keep their
    epoch in shared memory (`datasets.SharedEpoch`). `pin_memory` (on CUDA) lets batches reach the GPU without
    blocking; each worker prepares `prefetch_factor` batches ahead."""
    workers = int(num_workers)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        collate_fn=getattr(dataset, "collate_fn", None),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=int(prefetch_factor) if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # shuffling and worker seeds never touch the global RNG
    )


def loader_options(cfg: DictConfig, accelerator: Accelerator) -> dict[str, Any]:
    """make_loader's device options from the config: pinned memory on CUDA, `data.prefetch_factor`."""
    return {"pin_memory": accelerator.device.type == "cuda", "prefetch_factor": int(cfg.data.prefetch_factor)}


def compile_networks(task: Task, backend: str) -> list[str]:
    """Compile the task's networks (`Task.compiled_modules`) in place with `torch.compile`: their `__call__` is
    compiled while their state-dict keys stay plain (no `_orig_mod.`), so checkpoints, exports and artifacts
    are the same as without compiling, and a compiled run resumes into an uncompiled one and back."""
    names = []
    for module in task.compiled_modules():
        module.compile(backend=backend)
        names.append(type(module).__name__)
    return names


def leave_out_frozen(frozen: Iterable[str]) -> Any:
    """A save-state pre-hook for Accelerate: drops the frozen modules' keys from the weights it is saving."""
    names = list(frozen)

    def hook(models: list[Any], weights: list[dict[str, Any]], output_dir: str) -> None:
        for state in weights:
            for key in [k for k in state if is_frozen_key(k, names)]:
                del state[key]

    return hook


def setup_logging(run_dir: Optional[Path], is_main: bool) -> None:
    """INFO to the console, and to `events.log` in the run directory (main process)."""
    log.setLevel(logging.INFO)
    close_logging()
    if not is_main:
        return
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if run_dir is not None:
        handlers.append(RunLogHandler(run_dir / "events.log"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._audiointerp = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False


class RunLogHandler(logging.FileHandler):
    """`events.log`, a copy of the console's lines. When it cannot be written (a full or read-only disk) it
    stops quietly: the error that stops the run names the cause once, instead of a "Logging error" traceback
    for every later line."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8", delay=True)
        self.broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.broken = True


def close_logging() -> None:
    """Detach and close the run's log handlers (before its folder is removed)."""
    for handler in list(log.handlers):
        if getattr(handler, "_audiointerp", False):
            log.removeHandler(handler)
            handler.close()


def check_best_metric(task: Task, best_metric: str, swa: bool = False) -> None:
    """Fail before training when train.best_metric cannot be one of the task's validation metrics (or, with
    `train.swa`, of the averaged weights': `valid/swa_<metric>`)."""
    names = task.metric_names()
    if names is None:
        return
    valid = [f"valid/{name}" for name in names] + ([f"valid/{SWA_PREFIX}{name}" for name in names] if swa else [])
    if best_metric not in valid:
        raise ConfigError(f"train.best_metric={best_metric!r} is not a validation metric of task {task.name!r}"
                          f"{closest(best_metric, valid)}; choose one of {', '.join(valid)}")


def check_outputs_finite(outputs: dict[str, torch.Tensor], desc: str, metrics: Optional[list[str]],
                         run_dir: Optional[Path] = None, last_good: Optional[str] = None) -> None:
    """Raise `NonFiniteLossError` when a floating-point evaluation output holds a NaN or an infinity.

    Called on the gathered outputs before `summarize`, so that a diverged network stops with the output, the
    metrics it feeds and the run named, instead of a metric library's bare "Input contains NaN". Every process
    holds the same gathered outputs, so every process raises together.
    """
    for key, value in outputs.items():
        if not (value.is_floating_point() or value.is_complex()):
            continue
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            where = f" of run {run_dir}" if run_dir is not None else ""
            names = f"the metrics ({', '.join(metrics)})" if metrics else "its metrics"
            resume = (f"{last_good}: resume from it with a lower optim.lr or optim.grad_clip" if last_good else
                      "resume from the last good checkpoint with a lower optim.lr or optim.grad_clip")
            raise NonFiniteLossError(
                f"{desc}{where}: evaluation output {key!r} holds {bad} non-finite value(s) of {value.numel()}, so "
                f"{names} cannot be computed. The network's weights or buffers went non-finite, or its activations "
                f"overflow, or the inputs hold NaN; {resume}.")


def run_evaluation(
    accelerator: Accelerator, task: Task, loader: DataLoader, progress: bool = True, desc: str = "evaluate",
    run_dir: Optional[Path] = None, last_good: Optional[str] = None,
) -> dict[str, torch.Tensor]:
    """Task's eval_step over a prepared loader; outputs gathered over processes, duplicates dropped.

    Raises `NonFiniteLossError` (naming the output, the metrics and `run_dir` when given) when a floating-point
    output is not finite, before any metric sees it."""
    unwrapped: Task = accelerator.unwrap_model(task)
    was_training = unwrapped.training
    unwrapped.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    bar = tqdm(loader, desc=desc, disable=not (progress and accelerator.is_main_process), leave=False)
    with torch.no_grad():
        for batch in bar:
            with accelerator.autocast():
                result = unwrapped.eval_step(batch)
            result = accelerator.gather_for_metrics(result)
            for key, value in result.items():
                outputs.setdefault(key, []).append(value.detach().cpu())
    unwrapped.train(was_training)
    if not outputs:
        raise ValueError(f"{desc}: the evaluation set is empty")
    gathered = {key: torch.cat(values) for key, values in outputs.items()}
    check_outputs_finite(gathered, desc, unwrapped.metric_names(), run_dir, last_good)
    return gathered


def report_skipped(run_dir: Path, datasets: dict[str, Dataset]) -> dict[str, int]:
    """Files skipped with data.on_error=skip: logged, listed in `skipped_files.tsv`; returns counts per split."""
    counts, lines = {}, []
    for split, dataset in datasets.items():
        skipped = getattr(dataset, "skipped", [])
        counts[split] = len(skipped)
        lines += [f"{split}\t{path}\t{reason}" for path, reason in skipped]
        if skipped:
            log.warning("%s: skipped %d unreadable audio file(s), e.g. %s (%s)", split, len(skipped), *skipped[0])
    if lines:
        (run_dir / "skipped_files.tsv").write_text("split\tpath\treason\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return {split: n for split, n in counts.items() if n}


def summarize_on_main(accelerator: Accelerator, task: Task, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
    """The task's summary on the main process (figures, tables); the other processes get its metrics only."""
    result = accelerator.unwrap_model(task).summarize(outputs, dataset) if accelerator.is_main_process else None
    if accelerator.num_processes > 1:
        metrics = [result.metrics if result is not None else None]
        broadcast_object_list(metrics)
        result = result or EvalResult(metrics[0])
    return result


def batch_size(batch: Any) -> int:
    """Examples in a batch: the first dimension of its first tensor (0 when it holds none)."""
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else [batch]
    return next((int(v.shape[0]) for v in values if isinstance(v, torch.Tensor) and v.dim()), 0)


def scalar_items(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {f"{prefix}/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}


def check_resume_finite(store: CheckpointStore, checkpoint: Path) -> None:
    """Refuse to resume from a checkpoint whose weights or buffers hold a NaN or an infinity.

    Reads the checkpoint's weights files whatever its `checkpoint.json` says (a file may have been damaged, or
    written before the trainer checked finiteness). Raises `CheckpointError` naming the bad tensors and the last
    checkpoint of the run whose weights are verified finite (read, not trusted from the flag), to resume instead.
    """
    bad = non_finite_tensors(checkpoint)
    if not bad:
        return
    last = store.last_finite(before=checkpoint, verify=True)
    advice = (f"The last finite checkpoint is {last}: resume it with train.resume={last}, with a lower optim.lr or "
              f"optim.grad_clip" if last is not None else
              "The run has no finite checkpoint before it: start a new run (another run_id, or train.resume=never)")
    raise CheckpointError(f"cannot resume from {checkpoint}: it holds non-finite values in {len(bad)} tensor(s) "
                          f"({_some(bad)}), saved after the training had diverged. {advice}.")


def _some(names: list[str]) -> str:
    """The first NAMED_TENSORS names, and how many more."""
    more = len(names) - NAMED_TENSORS
    return ", ".join(names[:NAMED_TENSORS]) + (f" and {more} more" if more > 0 else "")


class Trainer:
    """Runs one experiment config to the end (or resumes it)."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.resolved: dict[str, str] = {}  # what config choices resolved to (word vectors, tie rule...), for summary.json

    # --- set-up ---------------------------------------------------------------------------------------
    def _plan(self) -> RunPlan:
        state = PartialState(cpu=use_cpu(self.cfg))
        plan = [plan_run(self.cfg) if state.is_main_process else None]
        if state.num_processes > 1:
            broadcast_object_list(plan)
        return plan[0]

    def _write_run_files(self, plan: RunPlan, data: TaskData) -> None:
        """config.yaml, metadata and arrays, each replaced atomically: a kill while a resume rewrites them leaves
        the old file (an empty config.yaml no longer matched the run, so the next `resume=auto` started over)."""
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        resolved = dict(data.metadata.get("resolved") or {})
        write_text_atomic(plan.run_dir / "config.yaml", to_yaml(self.cfg) + resolved_comment(resolved))
        write_json_atomic(plan.run_dir / METADATA, data.metadata)
        if data.arrays:
            save_arrays(plan.run_dir / ARRAYS, data.arrays)

    # --- the loop -------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train (or resume) the run to its end. A full, read-only or unwritable output disk stops it with a
        StorageError naming the path and the cause (`audiointerp.errors.writing`); the checkpoints written before
        stay complete, and the same command resumes once space is freed."""
        with writing("output folder", self.cfg.output_dir):
            return self._fit()

    def _fit(self) -> TrainResult:
        cfg = self.cfg
        check_mixed_precision(cfg)
        reset_accelerate_state(cfg)
        plan = self._plan()
        accelerator = make_accelerator(cfg, plan.run_dir)
        is_main = accelerator.is_main_process
        fresh = is_main and not plan.run_dir.exists()
        if is_main:
            with writing("run folder", plan.run_dir):
                plan.run_dir.mkdir(parents=True, exist_ok=True)
                if fresh:  # at once, so that a run killed while setting up is recognised and restarted in place
                    write_text_atomic(plan.run_dir / "config.yaml", to_yaml(cfg))
        accelerator.wait_for_everyone()
        setup_logging(plan.run_dir, is_main)
        try:
            with writing("run folder", plan.run_dir):
                loop = self._setup(plan, accelerator)
        except BaseException as err:
            log.error("run %s failed while setting up: %s", plan.run_dir, err)
            if fresh and CheckpointStore(plan.run_dir).latest() is None:
                close_logging()
                shutil.rmtree(plan.run_dir, ignore_errors=True)  # nothing of value was written
            plan.release_lock()
            raise
        started = time.time()
        failed = True
        try:
            with writing("run folder", plan.run_dir):
                result = TrainResult(plan.run_dir, loop.run(bool(cfg.train.progress)), loop.store.best())
                if cfg.data.test_folds:
                    result.test_metrics = loop.test_best(result.best_checkpoint)
                if is_main:
                    self._finish(plan, result, loop.state, time.time() - started)
            accelerator.wait_for_everyone()
            failed = False
        except BaseException as err:
            log.error("run %s stopped: %s", plan.run_dir, err)
            raise
        finally:
            loop.tracking.finish(failed)  # ends the W&B run and the process group
            plan.release_lock()  # another process may take the run from now on
        return result

    def _setup(self, plan: RunPlan, accelerator: Accelerator) -> "_Loop":
        cfg = self.cfg
        is_main = accelerator.is_main_process
        check_folds(cfg.data)
        check_swa(cfg.train)
        set_seed(int(cfg.train.seed))
        task: Task = task_class(str(cfg.task.name))(cfg)
        check_best_metric(task, str(cfg.train.best_metric), bool(cfg.train.swa))
        with accelerator.main_process_first():
            data = task.build_data()
        task.build_models(data.metadata, data.arrays)
        frozen = frozen_records(task)
        if cfg.train.compile:
            compiled = compile_networks(task, str(cfg.train.compile_backend))
            log.info("compiled %s with torch.compile (backend %s)", ", ".join(compiled), cfg.train.compile_backend)
        test_data: Optional[Dataset] = None
        if cfg.data.test_folds:  # built before training, so a test set the task cannot read fails early
            with accelerator.main_process_first():
                test_data = task.build_eval_data(str(cfg.data.source), str(cfg.data.format),
                                                 [str(f) for f in cfg.data.test_folds])
        log.info("run %s: task %s, model %s, %d training / %d validation / %s test clips, %d process(es) on %s",
                 plan.run_dir, cfg.task.name, cfg.model.name, len(data.train), len(data.valid),
                 len(test_data) if test_data is not None else "no", accelerator.num_processes, accelerator.device)

        seed = int(cfg.train.seed)
        options = loader_options(cfg, accelerator)
        train_loader = make_loader(data.train, int(cfg.data.batch_size), True, int(cfg.data.num_workers), seed,
                                   data.train_sampler, **options)
        valid_loader = make_loader(data.valid, int(cfg.data.eval_batch_size), False, int(cfg.data.num_workers), seed, **options)
        optimizer = build_optimizer(task.trainable_parameters(), cfg.optim)
        task, optimizer, train_loader, valid_loader = accelerator.prepare(task, optimizer, train_loader, valid_loader)
        accumulation = int(cfg.train.gradient_accumulation_steps)
        total = total_updates(len(train_loader), accumulation, int(cfg.train.epochs), cfg.train.max_steps)
        if total < 1:
            log.info("no optimizer updates (train.epochs=0 or train.max_steps=0): evaluating the untrained network")
        updates_per_epoch = math.ceil(len(train_loader) / accumulation)
        check_swa_reached(cfg.train, total, updates_per_epoch)
        scheduler = accelerator.prepare(build_scheduler(optimizer, cfg.optim, total, updates_per_epoch))
        state = TrainState()
        accelerator.register_for_checkpointing(state)
        if frozen:
            accelerator.register_save_state_pre_hook(leave_out_frozen(frozen))
        store = CheckpointStore(plan.run_dir, int(cfg.train.keep_last))

        core: Task = accelerator.unwrap_model(task)
        swa = WeightAverage(core.export_module(), int(cfg.train.swa_start_epoch), cfg.train.swa_end_epoch) \
            if cfg.train.swa else None
        tracking = Tracking(accelerator, cfg, plan.run_dir, plan.run_id, core.tags(), core.job_type)
        if plan.resume_from is not None:
            check_resume_finite(store, plan.resume_from)
            check_frozen_unchanged(plan.resume_from, read_info(plan.resume_from).get(FROZEN) or {}, frozen)
            try:
                if frozen:  # frozen weights are not in the checkpoint: every other key must be
                    check_weight_keys(core, plan.resume_from / WEIGHTS, frozen)
                accelerator.load_state(str(plan.resume_from), strict=not frozen)
            except Exception as err:
                raise CheckpointError(f"cannot resume from {plan.resume_from}: it does not fit this config's task and "
                                      f"model ({type(err).__name__}: {str(err).splitlines()[0]})") from err
            if swa is not None:
                swa.load(plan.resume_from)
            log.info("resumed from %s: epoch %d, update %d, batch %d of the epoch",
                     plan.resume_from, state.epoch, state.step, state.batches_in_epoch)
        skipped: dict[str, int] = {}
        self.resolved = {**(data.metadata.get("resolved") or {}), **core.evaluation_notes()}
        for key, value in self.resolved.items():
            log.info("resolved %s: %s", key, value)
        if is_main:  # written only once the checkpoint is known to fit, so a failed resume changes nothing
            self._write_run_files(plan, data)
            splits = {"train": data.train, "valid": data.valid, **({"test": test_data} if test_data is not None else {})}
            skipped = report_skipped(plan.run_dir, splits)
            if plan.resume_from is not None:
                tracking.metrics.truncate_after(state.step)
            store.clean_temp()
            if plan.resume_from is not None:
                store.restore_best(state.best_step)
        tracking.start()
        if skipped:
            tracking.log({f"data/skipped_{split}": float(n) for split, n in skipped.items()}, state.step, state.epoch)
        loop = _Loop(self, accelerator, task, optimizer, scheduler, train_loader, valid_loader, data, state, store, tracking, total)
        loop.test_data = test_data
        loop.frozen = frozen
        loop.swa = swa
        return loop

    def _finish(self, plan: RunPlan, result: TrainResult, state: TrainState, seconds: float) -> None:
        metrics_file = plan.run_dir / "metrics.jsonl"
        if metrics_file.exists():
            save_figure(learning_curves(read_metrics(metrics_file)), plan.run_dir / "figures" / "learning_curves.png")
        summary = {
            "version": __version__,
            "final": result.metrics,
            "test": result.test_metrics or None,
            "sets": evaluated_sets(self.cfg.data),
            "resolved": self.resolved,
            "best_metric": str(self.cfg.train.best_metric),
            "best_value": state.best_value,
            "best_step": state.best_step,
            "best_checkpoint": str(result.best_checkpoint) if result.best_checkpoint else None,
            "steps": state.step,
            "epochs": state.epoch,
            "seconds_this_session": round(seconds, 2),
        }
        write_json_atomic(plan.run_dir / SUMMARY_FILE, summary)
        log.info("finished %s: %s", plan.run_dir, {k: round(v, 4) for k, v in result.metrics.items()})
        if result.test_metrics:
            log.info("best checkpoint on the test folds %s: %s", list(self.cfg.data.test_folds),
                     {k: round(v, 4) for k, v in result.test_metrics.items()})


class _Loop:
    """The state of one training session; split from Trainer to keep each method short."""

    def __init__(self, trainer: Trainer, accelerator: Accelerator, task: Task, optimizer: Any, scheduler: Any,
                 train_loader: DataLoader, valid_loader: DataLoader, data: Any, state: TrainState,
                 store: CheckpointStore, tracking: Tracking, total: int) -> None:
        self.cfg = trainer.cfg
        self.accelerator = accelerator
        self.task = task
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.valid_loader = valid_loader
        self.data = data
        self.state = state
        self.store = store
        self.tracking = tracking
        self.total = total
        self.updates_per_epoch = math.ceil(len(train_loader) / int(self.cfg.train.gradient_accumulation_steps))
        self.last_metrics: dict[str, float] = {}
        self.test_data: Optional[Dataset] = None  # data.test_folds, scored with the best checkpoint after training
        self.skipped_in_a_row = 0  # optimizer updates the fp16 gradient scaler skipped (inf/NaN gradients) in a row
        self.frozen: dict[str, dict[str, Any]] = {}  # frozen modules left out of checkpoints: source and sha256
        self.swa: Optional[WeightAverage] = None  # train.swa: the mean of the chosen epochs' weights
        self.window_losses: list[torch.Tensor] = []  # this window's losses, on the device, read at its end
        self.window_positions: list[tuple[int, int, int]] = []  # (epoch, update, batch of the epoch) of each
        self.window_started = time.perf_counter()  # wall clock of the window (perf.jsonl)
        self.window_data_wait = 0.0  # seconds of it spent waiting for the next batch
        self.window_updates = 0  # optimizer updates in it
        self.window_examples = 0  # examples this process loaded in it
        self.bar: Optional[tqdm] = None
        self.prefetched: Optional[tuple[int, Iterator[Any]]] = None  # (epoch, its batches) started before its turn

    # --- pieces ---------------------------------------------------------------------------------------
    def _epoch_position(self) -> float:
        return self.state.epoch + self.state.batches_in_epoch / max(1, len(self.train_loader))

    def _note_loss(self, loss: torch.Tensor) -> None:
        """Keep this batch's loss (detached, on the device) and its position; the window's end reads them all in
        its one synchronisation and stops the run at the first non-finite one (`_check_losses`)."""
        self.window_losses.append(loss.detach().float().reshape(()))
        self.window_positions.append((self.state.epoch, self.state.step, self.state.batches_in_epoch))

    def _check_losses(self, bad: list[float], values: list[float]) -> None:
        """Raise `NonFiniteLossError` for the window's first batch whose loss was not finite on some process
        (`bad`: per batch, the share of processes where it was not; `values`: this process's losses)."""
        first = next((k for k, flag in enumerate(bad) if flag > 0), None)
        self.window_losses, positions, self.window_positions = [], self.window_positions, []
        if first is None:
            return
        epoch, step, batch = positions[first]
        raise NonFiniteLossError(
            f"non-finite training loss ({values[first]} on process {self.accelerator.process_index}) "
            f"at epoch {epoch}, update {step}, batch {batch} of the epoch. "
            f"The run stopped without saving; {self._last_good()}. Try a lower optim.lr, optim.grad_clip, "
            f"or check the inputs for NaN."
        )

    def _last_good(self) -> str:
        """'the last good checkpoint is <path> (verified finite)' for error messages: the newest checkpoint whose
        `checkpoint.json` says finite, or, for one saved without the flag, whose weights read finite."""
        good = self.store.last_finite()
        if good is None:
            return "the last good checkpoint is none (no finite checkpoint yet)"
        return f"the last good checkpoint is {good} (verified finite)"

    def _state_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every floating-point parameter and buffer of the (unwrapped) task, with its name."""
        core: Task = self.accelerator.unwrap_model(self.task)
        for name, tensor in [*core.named_parameters(), *core.named_buffers()]:
            if tensor.is_floating_point() or tensor.is_complex():
                yield name, tensor.detach()

    def _non_finite_count(self) -> torch.Tensor:
        """How many parameters and buffers hold a NaN or an infinity on this process, as a float64 tensor on the
        accelerator's device: one fused flag per tensor and no host-device synchronisation (the caller reduces it
        with the logging window and reads it with one `.tolist()`)."""
        device = self.accelerator.device
        flags = [torch.isfinite(tensor).all().to(device) for _, tensor in self._state_tensors()]
        if not flags:
            return torch.zeros(1, dtype=torch.float64, device=device)
        return (~torch.stack(flags)).sum().to(torch.float64).reshape(1)

    def _raise_non_finite_state(self, found: str) -> None:
        """Stop with `NonFiniteStateError` naming the tensors this process found non-finite (another process's
        when none here), the update, where it was found, and the last checkpoint verified finite."""
        state = self.state
        names = [name for name, tensor in self._state_tensors() if not bool(torch.isfinite(tensor).all())]
        here = (f"{len(names)} non-finite parameter(s) or buffer(s) ({_some(names)}) on process "
                f"{self.accelerator.process_index}" if names else "non-finite parameters or buffers on another process")
        raise NonFiniteStateError(
            f"{here} after update {state.step} (epoch {state.epoch}, batch {state.batches_in_epoch} of the epoch), "
            f"found {found}. The training loss may still be finite (e.g. a BatchNorm running_var that overflowed). "
            f"The run stopped without saving; {self._last_good()}. Try a lower optim.lr, optim.grad_clip, "
            f"or check the inputs for NaN."
        )

    def _count_skipped_update(self) -> None:
        """After an optimizer update: count updates the fp16 gradient scaler skipped for inf/NaN gradients in a
        row (reading Accelerate's flag costs no synchronisation: the scaler has already read its scale). A few are
        normal while the scale settles; MAX_SKIPPED_UPDATES in a row stop the run with `NonFiniteLossError`."""
        if not self.accelerator.optimizer_step_was_skipped:
            self.skipped_in_a_row = 0
            return
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row >= MAX_SKIPPED_UPDATES:
            state = self.state
            raise NonFiniteLossError(
                f"{self.skipped_in_a_row} optimizer updates in a row were skipped by the fp16 gradient scaler for "
                f"non-finite gradients, the last at update {state.step + 1} (epoch {state.epoch}, batch "
                f"{state.batches_in_epoch + 1} of the epoch). The run stopped without saving; {self._last_good()}. Try a "
                f"lower optim.lr, optim.grad_clip, train.mixed_precision=bf16, or check the inputs for NaN."
            )

    def _accumulate_logs(self, logs: dict[str, torch.Tensor]) -> None:
        """Add the batch's logs to the window's sums, on the device (no synchronisation)."""
        window = self.state.log_window
        for key, value in logs.items():
            window[key] = window.get(key, 0.0) + value.detach().to(torch.float64).mean()
        self.state.log_window_batches += 1

    def _reduced_window(self) -> tuple[dict[str, float], bool]:
        """Window sums averaged over processes, and whether every parameter and buffer is finite on every process
        (every process calls this). Stops with `NonFiniteLossError` at the window's first non-finite training loss.

        The window's sums, its losses' finiteness flags, the parameters' finiteness count and this process's losses
        travel in one tensor: one host-device synchronisation (`.tolist()`) per window."""
        device = self.accelerator.device
        keys = sorted(self.state.log_window)
        sums = [torch.as_tensor(self.state.log_window[k], dtype=torch.float64, device=device).reshape(1) for k in keys]
        losses = (torch.stack(self.window_losses).to(torch.float64) if self.window_losses
                  else torch.zeros(0, dtype=torch.float64, device=device))
        bad = (~torch.isfinite(losses)).to(torch.float64)
        batches = torch.tensor([self.state.log_window_batches], dtype=torch.float64, device=device)
        shared = torch.cat([*sums, batches, self._non_finite_count(), bad])
        if self.accelerator.num_processes > 1:
            shared = self.accelerator.reduce(shared, "mean")
        values, own = torch.cat([shared, losses]).tolist(), len(keys) + 2
        self._check_losses(values[own:own + len(bad)], values[own + len(bad):])
        return dict(zip(keys + ["_batches"], values[:own - 1])), values[own - 1] == 0

    def _log_training(self, bar: Optional[tqdm] = None) -> None:
        """Log the window's averages (and its speed to perf.jsonl); then stop with `NonFiniteStateError` if a
        parameter or buffer is not finite."""
        reduced, finite = self._reduced_window()
        batches = max(reduced.pop("_batches"), 1.0)
        scalars = {f"train/{k}": v / batches for k, v in reduced.items()}
        scalars["train/lr"] = self.scheduler.get_last_lr()[0]
        self.tracking.log(scalars, self.state.step, self._epoch_position())
        self._log_speed()
        if bar is not None and "train/loss" in scalars:
            bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", epoch=self.state.epoch)
        self.state.log_window, self.state.log_window_batches = {}, 0.0
        if not finite:
            self._raise_non_finite_state("at the logging interval")

    def _log_speed(self) -> None:
        """Seconds per optimizer update and the share of the window's wall time spent waiting for the next batch,
        to perf.jsonl and W&B (`perf/...`; wall-clock figures, so kept out of metrics.jsonl, which a resumed run
        reproduces exactly). Read after the window's synchronisation, so the device's work is included."""
        now = time.perf_counter()
        seconds, updates = now - self.window_started, self.window_updates
        if updates and seconds > 0 and self.accelerator.is_main_process:
            record = {"step": self.state.step, "epoch": round(self._epoch_position(), 4),
                      "perf/seconds_per_update": seconds / updates,
                      "perf/data_wait_fraction": min(1.0, self.window_data_wait / seconds),
                      "perf/examples_per_second": self.window_examples * self.accelerator.num_processes / seconds}
            try:
                with open(self.store.dir.parent / PERF_FILE, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")
            except OSError:
                pass  # a speed record is not worth stopping a run; a full disk stops it at the next checkpoint
            if self.accelerator.trackers:
                self.accelerator.log({k: v for k, v in record.items() if k.startswith("perf/")}, step=self.state.step)
        self.window_started, self.window_data_wait, self.window_updates, self.window_examples = now, 0.0, 0, 0

    def _sync_window(self) -> None:
        """Before a checkpoint: make the partial logging window identical on every process, so it resumes exactly,
        and stop with `NonFiniteStateError` (nothing written) if a parameter or buffer is not finite."""
        reduced, finite = self._reduced_window()
        if not finite:
            self._raise_non_finite_state("before writing the checkpoint of this update")
        self.state.log_window_batches = reduced.pop("_batches")
        self.state.log_window = reduced

    def evaluate(self) -> EvalResult:
        cfg = self.cfg
        outputs = run_evaluation(self.accelerator, self.task, self.valid_loader, bool(cfg.train.progress), "validate",
                                 self.store.dir.parent, self._last_good())
        return summarize_on_main(self.accelerator, self.task, outputs, self.data.valid)

    def _score_average(self, evaluate: Callable[[], EvalResult], split: str = "valid", report: bool = True) -> dict[str, float]:
        """With `train.swa` and at least one averaged epoch: `evaluate()` with the mean swapped into the module, as
        `split/swa_<metric>` scalars (figures `swa_<name>`), reported unless `report` is false; {} otherwise."""
        if self.swa is None or self.swa.count == 0:
            return {}
        with self.swa.swapped_in():
            result = evaluate()
        renamed = dataclasses.replace(result, metrics={SWA_PREFIX + k: v for k, v in result.metrics.items()},
                                      figures={SWA_PREFIX + k: v for k, v in result.figures.items()},
                                      tables={SWA_PREFIX + k: v for k, v in result.tables.items()})
        return self._report_evaluation(renamed, split) if report else scalar_items(renamed.metrics, split)

    def _report_evaluation(self, result: EvalResult, split: str = "valid") -> dict[str, float]:
        """Log `split/...` scalars, figures and tables; figures go to figures/ (valid) or figures/<split>/."""
        scalars = scalar_items(result.metrics, split)
        self.tracking.log(scalars, self.state.step, self._epoch_position())
        if self.accelerator.is_main_process:
            figures_dir = self.store.dir.parent / "figures"
            if split != "valid":
                figures_dir = figures_dir / split
            self.tracking.log_figures(result.figures, self.state.step, split)
            self.tracking.log_tables(result.tables, self.state.step, split)
            for name, figure in result.figures.items():
                save_figure(figure, figures_dir / f"{name}.png")
        return scalars

    def test_best(self, best: Optional[Path]) -> dict[str, float]:
        """After training: load the best checkpoint's weights (chosen on the validation folds) and score them on
        `data.test_folds` of the run's data (`task.build_eval_data`, built before training); returns and logs
        `test/...` scalars. Every process takes part (the outputs are gathered as in validation)."""
        cfg = self.cfg
        if best is None or not (best / WEIGHTS).is_file():
            raise CheckpointError(f"no best checkpoint with {WEIGHTS} to score on data.test_folds "
                                  f"{list(cfg.data.test_folds)} (found {best})")
        core: Task = self.accelerator.unwrap_model(self.task)
        load_task_weights(core, best / WEIGHTS, self.frozen, device=str(self.accelerator.device))
        dataset = self.test_data
        if dataset is None:
            raise ConfigError(f"data.test_folds={list(cfg.data.test_folds)} but no test set was built before training")
        loader = self.accelerator.prepare(make_loader(dataset, int(cfg.data.eval_batch_size), False, int(cfg.data.num_workers),
                                                      int(cfg.train.seed), **loader_options(cfg, self.accelerator)))
        def score() -> EvalResult:
            outputs = run_evaluation(self.accelerator, self.task, loader, bool(cfg.train.progress), "test",
                                     self.store.dir.parent)
            return summarize_on_main(self.accelerator, self.task, outputs, dataset)

        scalars = self._report_evaluation(score(), "test")
        log.info("scored the best checkpoint %s on the test folds %s", best.name, list(cfg.data.test_folds))
        scalars.update(self._score_average(score, "test"))  # train.swa: the final mean (what `export --swa` gives)
        return scalars

    def _is_better(self, scalars: dict[str, float]) -> bool:
        key = str(self.cfg.train.best_metric)
        if key not in scalars and self.swa is not None and key.startswith(f"valid/{SWA_PREFIX}"):
            return False  # no epoch averaged yet: no averaged weights to choose
        if key not in scalars:
            raise ConfigError(f"train.best_metric={key!r} is not an evaluation metric; available: {', '.join(sorted(scalars))}")
        value, best = scalars[key], self.state.best_value
        better = best is None or (value < best if self.cfg.train.best_mode == "min" else value > best)
        if better:
            self.state.best_value, self.state.best_step = value, self.state.step
        return better

    def save(self, is_best: bool = False) -> None:
        """Write the checkpoint of the current update (every process takes part). Only a finite state is saved:
        `_sync_window` raises `NonFiniteStateError` first otherwise, and `checkpoint.json` records `finite`."""
        accelerator = self.accelerator
        started = time.perf_counter()
        self._sync_window()
        temp = self.store.temp_dir(self.state.step)
        if accelerator.is_main_process:
            shutil.rmtree(temp, ignore_errors=True)
        accelerator.wait_for_everyone()
        with writing("checkpoint", temp):  # a failed write leaves a temporary folder that the next start removes
            accelerator.save_state(str(temp))
            if self.swa is not None and accelerator.is_main_process:
                self.swa.save(temp)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            info = {"step": self.state.step, "epoch": self.state.epoch, "batches_in_epoch": self.state.batches_in_epoch,
                    "metrics": self.last_metrics, "version": __version__, "time": time.time(), FINITE: True}
            if self.frozen:  # left out of the weights: rebuilt from the source, checked by sha256 on resume
                info[FROZEN] = self.frozen
            with writing("checkpoint", temp):
                final = self.store.commit(temp, self.state.step, info, is_best)
            upload = self.cfg.tracking.log_checkpoints
            if upload == "all" or (upload == "best" and is_best):  # the alias `best` moves to the newest best
                self.tracking.log_checkpoint(final, ["best", "latest"] if is_best else ["latest"])
            log.info("checkpoint %s%s", final, " (best)" if is_best else "")
        accelerator.wait_for_everyone()
        self.window_started += time.perf_counter() - started  # a mid-epoch checkpoint is not training time (perf.jsonl)

    def after_update(self) -> None:
        """Hook after each optimizer update (logging and mid-epoch checkpoints)."""
        cfg = self.cfg.train
        if self.state.step % int(cfg.log_every_steps) == 0:
            self._log_training(self.bar)
        end_of_epoch = self.state.batches_in_epoch >= len(self.train_loader)
        every = cfg.checkpoint_every_steps
        if every and self.state.step % int(every) == 0 and self.state.step < self.total and not end_of_epoch:
            self.save()

    # --- the loop -------------------------------------------------------------------------------------
    def _set_epoch(self, epoch: int) -> None:
        self.train_loader.set_epoch(epoch)
        if hasattr(self.data.train, "set_epoch"):  # under DDP, Accelerate's batch-sampler shard does not forward it
            self.data.train.set_epoch(epoch)

    def start_next_epoch(self) -> None:
        """Start loading the next epoch's batches now, before the epoch-end evaluation and checkpoint: the workers
        fill their prefetch queues meanwhile, so the next epoch does not begin by waiting for its first batches
        (on a GPU with short epochs, e.g. ESC-50's 13 updates of 128 clips, that wait was a fifth of the time).
        The epoch's batches are the same as those of a loader started later: they depend on the epoch only."""
        self._set_epoch(self.state.epoch)
        batches = iter(self.train_loader)
        try:
            first = next(batches)
        except StopIteration:
            return
        self.prefetched = (self.state.epoch, itertools.chain([first], batches))

    def run_epoch(self, bar: tqdm) -> bool:
        """One (possibly resumed) epoch. Returns False when the update budget ran out."""
        accelerator, state, cfg = self.accelerator, self.state, self.cfg
        prefetched, self.prefetched = self.prefetched, None
        self._set_epoch(state.epoch)
        loader: Iterable[Any] = self.train_loader
        if prefetched is not None and prefetched[0] == state.epoch and not state.batches_in_epoch:
            loader = prefetched[1]
        elif state.batches_in_epoch:
            loader = accelerator.skip_first_batches(self.train_loader, state.batches_in_epoch)
        self.task.train()
        clip = cfg.optim.grad_clip
        if not state.log_window_batches:  # a window starts with the epoch: the evaluation and checkpoint before it are not timed
            self.window_started = time.perf_counter()
        for batch in self._timed(loader):
            with accelerator.accumulate(self.task):
                loss, logs = self.task(batch)
                self._note_loss(loss)
                accelerator.backward(loss)
                if accelerator.sync_gradients and clip:
                    accelerator.clip_grad_norm_(self.accelerator.unwrap_model(self.task).trainable_parameters(), float(clip))
                self.optimizer.step()
                if accelerator.sync_gradients:
                    self._count_skipped_update()
                    self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            state.batches_in_epoch += 1
            self._accumulate_logs(logs)
            if accelerator.sync_gradients:
                state.step += 1
                self.window_updates += 1
                bar.update(1)
                self.after_update()
                if state.step >= self.total:
                    return False
        return True

    def _timed(self, loader: Iterable[Any]) -> Iterator[Any]:
        """The loader's batches, adding the seconds spent waiting for each to the window's data wait and its
        examples to the window's count (host clock only: no synchronisation)."""
        batches = iter(loader)
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            self.window_data_wait += time.perf_counter() - started
            self.window_examples += batch_size(batch)
            yield batch

    def run(self, progress: bool) -> dict[str, float]:
        cfg, state = self.cfg, self.state
        epochs = int(cfg.train.epochs)
        bar = tqdm(total=self.total, initial=state.step, desc=f"train {cfg.experiment}", unit="update",
                   disable=not (progress and self.accelerator.is_main_process), dynamic_ncols=True)
        self.bar = bar
        self.window_started = time.perf_counter()
        with bar:
            while state.epoch < epochs and state.step < self.total:
                more = self.run_epoch(bar)
                finished_epoch = more or state.batches_in_epoch >= len(self.train_loader)
                if finished_epoch:
                    state.epoch += 1
                    state.batches_in_epoch = 0
                    if self.swa is not None and self.swa.wants(state.epoch):
                        self.swa.update()
                last = not more or state.epoch >= epochs
                if self.state.log_window_batches:
                    self._log_training(bar)
                if finished_epoch and not last:
                    self.start_next_epoch()
                if last or (finished_epoch and state.epoch % int(cfg.train.eval_every_epochs) == 0):
                    result = self.evaluate()
                    scalars = self._report_evaluation(result)
                    scalars.update(self._score_average(self.evaluate))
                    self.last_metrics = scalars
                    self.save(is_best=self._is_better(scalars))
                else:
                    self.save()
                if last:
                    break
        if self.total == 0 and self.store.latest() is None:  # the untrained baseline: evaluate and save as is
            self.last_metrics = self._report_evaluation(self.evaluate())
            self.save(is_best=self._is_better(self.last_metrics))
        if not self.last_metrics:  # resumed after the last evaluation had already been saved
            self.last_metrics = scalar_items(self.evaluate().metrics, "valid")
            self.last_metrics.update(self._score_average(self.evaluate, report=False))
        return self.last_metrics
