"""GPU benchmark: training throughput of the shipped recipes, float32 against bf16, on random weights and generated data.

For each config of `--configs` (default: esc50_mn10, esc50_dymn10, esc50_passt, ae_finetune_mn10 at the full AT-v1
size, and flow) and each precision of `--precisions` (`train.mixed_precision`: no = float32, bf16, fp16 with a gradient scaler on a GPU), the project's
own `Trainer(cfg).fit()` runs in this process for `--steps` optimizer updates with the config's batch size and
`data.num_workers`, `tracking.backend=none` and random weights (no `model.checkpoint`; the autoencoder starts at
`task.start=random` and its frozen mn10 classifier is random too). Nothing is downloaded (`AUDIOINTERP_OFFLINE=1`,
`HF_HUB_OFFLINE=1`): a config that would need a download fails and is reported.

Data, written once into the work folder: an ESC-50 tree of generated 5 s impact sounds (`datasets.synth.render_clip`)
at the configs' sample rate, 50 classes over 5 folds, fold 1 validating. Each class has one rendered clip in fold 1
and one in the training folds, hard-linked under many file names. Each fit reads a manifest whose epoch holds
exactly `--warmup` updates, so the measured windows are epoch 2 and later (the issue's "from epoch 2 on": workers
persist over epochs; each epoch's evaluation and checkpoint fall between windows, outside their clocks). The flow reads an
activation store of random 1,024-wide rows with the built-in set's factor columns (`datasets.store.write_store`).

Per fit, the trainer's own figures from the run's `perf.jsonl` (one record per `train.log_every_steps` window,
read after the window's device synchronisation): seconds per update, the share of the window's wall time the loop
spent waiting for the next batch, and clips (pairs, for the flow) per second, over the windows after the first
`--warmup` updates (the workers' start, cuDNN's and the allocator's first calls); and the peak GPU memory
(`torch.cuda.max_memory_allocated`) over the whole fit, final evaluation included. A fit that fails is one error row; the others
go on. With 2 or more GPUs visible, esc50_mn10 also runs on 2 processes (`torch.distributed.run`), against 1;
`--ddp always` runs that path with fewer GPUs too, as 2 CPU processes over gloo (the test of the path, not a speed;
with 1 GPU its processes see none, and no speed-up is computed against the GPU fit).

Prints a side-by-side table and writes `--out` (default benchmarks/results/gpu.json) after every fit.

    PYTHONPATH=src python benchmarks/gpu.py [--configs esc50_mn10,flow] [--steps 30] [--precisions no,bf16]
    PYTHONPATH=src python benchmarks/gpu.py --smoke          # tiny sizes, a few updates: runs on a CPU
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile as sf
import torch
from common import environment, write_results
from omegaconf import DictConfig

from audiointerp.datasets.store import write_store
from audiointerp.datasets.synth import ACTIONS, MATERIALS, render_clip
from audiointerp.train.config import load_config
from audiointerp.train.trainer import PERF_FILE, Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
CONFIGS = ("esc50_mn10", "esc50_dymn10", "esc50_passt", "ae_finetune_mn10", "flow")
PRECISIONS = ("no", "bf16")
DDP_CONFIG = "esc50_mn10"  # the config also run on 2 processes when 2 GPUs are visible
DDP_PROCESSES = 2
STORE_LAYER = "block3"  # the flow store's one layer
SPEED = "perf/"  # the prefix of the trainer's speed figures in PERF_FILE (one record per logging window)

# Per config: the overrides that start the shipped recipe from random weights, without a download or a pretrained
# file (every fit), and the tiny sizes of `--smoke`, as tests/configs/test_shipped_configs.py shrinks these configs.
RANDOM_START = {"ae_finetune_mn10": ["task.start=random", "task.classifier_checkpoint=null"]}
SMOKE_AUDIO = ["data.seconds=1.0", "data.batch_size=2", "data.eval_batch_size=4", "data.num_workers=0"]
SMOKE = {
    "esc50_mn10": SMOKE_AUDIO,
    "esc50_dymn10": SMOKE_AUDIO,
    "esc50_passt": [*SMOKE_AUDIO, "data.seconds=2.0"],  # 19 time patches: structured patchout drops 10
    "ae_finetune_mn10": [*SMOKE_AUDIO, "model.params.channels=8", "model.params.num_blocks=[1,1,1,1,1,1]",
                         "tracking.audio_examples=2"],
    "flow": ["task.components=8", "task.factor_dims=[6,1,1]", "task.knn_folds=3", "task.knn_neighbors=3",
             "task.pca_clips=200", "task.scatter_points=50", "data.batch_size=32", "data.eval_batch_size=64",
             "model.params.blocks=1", "model.params.householder=2", "model.params.hidden=16"],
}


@dataclass
class Sizes:
    """How big the generated data and the runs are: the full benchmark or `--smoke`."""

    classes: int  # ESC-50-like classes
    store_clips: int  # rows of the flow's activation store
    store_dim: int  # width of the store's layer
    steps: int  # optimizer updates per fit
    log_every: int  # train.log_every_steps
    warmup: int  # updates left out of the steady state


FULL_SIZES = Sizes(classes=50, store_clips=10000, store_dim=1024, steps=30, log_every=5, warmup=10)
SMOKE_SIZES = Sizes(classes=5, store_clips=240, store_dim=64, steps=3, log_every=1, warmup=1)


@dataclass
class FitResult:
    """One fit's figures (one row of the table and of the JSON)."""

    config: str
    precision: str
    processes: int = 1
    status: str = "ok"  # ok | error
    error: Optional[str] = None
    unit: str = "clips"  # what one training example is: clips, or pairs for the flow
    batch_size: Optional[int] = None  # per process
    examples_per_update: Optional[int] = None  # configured: batch size x accumulation x processes
    num_workers: Optional[int] = None
    updates: Optional[int] = None  # optimizer updates the fit took
    steady_updates: Optional[int] = None  # updates of the windows measured
    seconds_per_update: Optional[float] = None
    examples_per_second: Optional[float] = None  # clips (pairs) per second in the steady state
    data_wait_fraction: Optional[float] = None  # share of the steady windows' wall time spent waiting for a batch
    peak_gpu_memory_mib: Optional[float] = None  # max_memory_allocated over the fit (process 0); None without CUDA
    peak_gpu_reserved_mib: Optional[float] = None  # max_memory_reserved over the fit (the caching allocator)
    fit_seconds: Optional[float] = None  # the whole fit: set-up, data, training, final evaluation, checkpoint
    windows: list[dict[str, float]] = field(default_factory=list)  # the steady windows: step, seconds/update, wait


# --- generated data ---------------------------------------------------------------------------------------------


def class_names(classes: int) -> list[str]:
    """ESC-50-like category names built from the synthesizer's material and action (one sound type per class)."""
    return [f"{MATERIALS[k % len(MATERIALS)]}_{ACTIONS[(k // len(MATERIALS)) % len(ACTIONS)]}_{k:02d}" for k in range(classes)]


def write_esc50(root: Path, sample_rate: int, seconds: float, classes: int, per_class_fold: int, seed: int = 0) -> Path:
    """An ESC-50-master tree (audio/*.wav, meta/esc50.csv) of generated clips; returns its root.

    Fold 1 (validation) holds one rendered clip per class; folds 2-5 hold `per_class_fold` file names per class
    each, hard links (copies where links fail) of one other rendered clip of the class. The training set is large
    enough for the benchmark's updates, while only 2 x `classes` clips are rendered and written."""
    names = class_names(classes)
    shutil.rmtree(root, ignore_errors=True)  # a reused --work-dir: written afresh
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "meta").mkdir(parents=True, exist_ok=True)

    def render(job: tuple[int, int]) -> np.ndarray:
        target, which = job
        material, action, _ = names[target].split("_")
        return render_clip(material, action, np.random.default_rng((seed, target, which)), sample_rate, seconds)

    jobs = [(target, which) for target in range(classes) for which in (0, 1)]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        clips = dict(zip(jobs, pool.map(render, jobs)))
    rows = []
    for target, category in enumerate(names):
        valid = f"1-{100000 + target}-A-{target}.wav"
        sf.write(root / "audio" / valid, clips[(target, 0)], sample_rate, subtype="PCM_16")
        rows.append([valid, 1, target, category, "False", str(100000 + target), "A"])
        first: Optional[Path] = None
        for fold in (2, 3, 4, 5):
            for k in range(per_class_fold):
                source = 200000 + 1000 * target + 100 * fold + k
                name = f"{fold}-{source}-A-{target}.wav"
                path = root / "audio" / name
                if first is None:
                    sf.write(path, clips[(target, 1)], sample_rate, subtype="PCM_16")
                    first = path
                else:
                    try:
                        os.link(first, path)
                    except OSError:
                        path.write_bytes(first.read_bytes())
                rows.append([name, fold, target, category, "False", str(source), "A"])
    with open(root / "meta" / "esc50.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        writer.writerows(rows)
    return root


def write_flow_store(folder: Path, clips: int, dim: int, seed: int = 0) -> Path:
    """An activation store of random rows (`STORE_LAYER`, [clips, dim]) with the built-in set's clip table: fold,
    label and the material and action factors the flow disentangles (as the shipped-config tests give the flow)."""
    shutil.rmtree(folder, ignore_errors=True)  # a reused --work-dir: written afresh
    rng = np.random.default_rng(seed)
    material = [MATERIALS[i % len(MATERIALS)] for i in range(clips)]
    action = [ACTIONS[(i // len(MATERIALS)) % len(ACTIONS)] for i in range(clips)]
    return write_store(folder, {STORE_LAYER: rng.standard_normal((clips, dim), dtype=np.float32)},
                       {"path": [f"{i}.wav" for i in range(clips)], "fold": [str(1 + i % 5) for i in range(clips)],
                        "label": [f"{m}_{a}" for m, a in zip(material, action)], "material": material, "action": action})


# --- one fit ------------------------------------------------------------------------------------------------------


def base_overrides(name: str, precision: str, sizes: Sizes, smoke: bool, run_dir: Path, cache_dir: Path) -> list[str]:
    """The overrides of every fit of `name`: its random start, the smoke sizes, the fixed update budget and logging."""
    return [*RANDOM_START.get(name, []), *(SMOKE.get(name, []) if smoke else []),
            "tracking.backend=none", "train.progress=false", "train.resume=never", f"train.mixed_precision='{precision}'",
            f"train.max_steps={sizes.steps}", f"train.log_every_steps={sizes.log_every}", f"output_dir={run_dir}",
            f"data.cache_dir={cache_dir}"]


def examples_per_update(cfg: DictConfig, processes: int) -> int:
    """Training examples one optimizer update consumes over all processes."""
    return int(cfg.data.batch_size) * int(cfg.train.gradient_accumulation_steps) * processes


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (none when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def speed_records(run_dir: Path) -> list[dict[str, Any]]:
    """The trainer's speed records of a run (`PERF_FILE`: per logging window, its last update's `step`,
    `perf/seconds_per_update`, `perf/data_wait_fraction` and `perf/examples_per_second`)."""
    return [r for r in read_jsonl(run_dir / PERF_FILE) if "step" in r and f"{SPEED}seconds_per_update" in r]


def steady_state(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """The trainer's figures over the logging windows that start at or after update `warmup`: seconds per update
    (updates over the windows' wall time), the data-wait fraction and examples per second (each window weighted by
    its wall time). Raises RuntimeError with fewer than 2 such windows."""
    rows, start = [], 0
    for record in records:
        step = int(record["step"])
        if start >= warmup and step > start:
            updates = step - start
            seconds = float(record[f"{SPEED}seconds_per_update"]) * updates
            rows.append({"step": step, "updates": updates, "seconds": seconds,
                         "waited": float(record[f"{SPEED}data_wait_fraction"]) * seconds,
                         "examples": float(record.get(f"{SPEED}examples_per_second", math.nan)) * seconds})
        start = max(start, step)
    if len(rows) < 2:
        raise RuntimeError(f"{len(rows)} logging window(s) of the trainer's {PERF_FILE} after the {warmup} warm-up updates; "
                           f"at least 2 are needed (more --steps or a smaller --log-every)")
    updates, seconds = sum(r["updates"] for r in rows), sum(r["seconds"] for r in rows)
    return {"steady_updates": updates, "seconds_per_update": seconds / updates,
            "data_wait_fraction": sum(r["waited"] for r in rows) / seconds,
            "examples_per_second": sum(r["examples"] for r in rows) / seconds,
            "windows": [{"step": r["step"], "seconds_per_update": r["seconds"] / r["updates"],
                         "data_wait_fraction": r["waited"] / r["seconds"]} for r in rows]}


def run_fit(name: str, precision: str, overrides: list[str], warmup: int, processes: int = 1) -> FitResult:
    """Train config `name` with `overrides` in this process (one process of `processes`) and measure it; any error
    becomes an error row."""
    result = FitResult(config=name, precision=precision, processes=processes, unit="pairs" if name == "flow" else "clips")
    cuda = torch.cuda.is_available()
    started = time.perf_counter()
    try:
        cfg = load_config(name, overrides)
        result.batch_size, result.num_workers = int(cfg.data.batch_size), int(cfg.data.num_workers)
        result.examples_per_update = examples_per_update(cfg, processes)
        gc.collect()  # the Trainer resets Accelerate's state itself when this fit's precision differs
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        fitted = Trainer(cfg).fit()
        if cuda:
            torch.cuda.synchronize()
            result.peak_gpu_memory_mib = torch.cuda.max_memory_allocated() / 2**20
            result.peak_gpu_reserved_mib = torch.cuda.max_memory_reserved() / 2**20
        result.fit_seconds = time.perf_counter() - started
        records = speed_records(fitted.run_dir)
        result.updates = int(records[-1]["step"]) if records else 0
        for key, value in steady_state(records, warmup).items():
            setattr(result, key, value)
        if not math.isfinite(result.examples_per_second):  # a trainer that does not count examples
            result.examples_per_second = result.examples_per_update / result.seconds_per_update
    except Exception as err:  # one failing config is a row of the table; the others go on
        result.status, result.error = "error", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        result.fit_seconds = time.perf_counter() - started
        traceback.print_exc()
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return result


# --- the 2-process path -------------------------------------------------------------------------------------------


def worker(spec_file: Path) -> int:
    """One process of a `torch.distributed.run` launch: run the fit of the spec; process 0 writes its row."""
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    if torch.cuda.is_available():  # this process's GPU before anything touches CUDA (the peak memory is read there)
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    result = run_fit(spec["config"], spec["precision"], spec["overrides"], int(spec["warmup"]), int(spec["processes"]))
    if int(os.environ.get("RANK", "0")) == 0:
        Path(spec["result"]).write_text(json.dumps(asdict(result)), encoding="utf-8")
    return 0 if result.status == "ok" else 1


def run_ddp(name: str, precision: str, overrides: list[str], warmup: int, work: Path, timeout: float,
            on_cpu: bool = False) -> FitResult:
    """The fit on `DDP_PROCESSES` processes (`python -m torch.distributed.run --nproc_per_node 2`), as a subprocess:
    one GPU each, or with `on_cpu` (fewer GPUs than processes) CPU processes over gloo, no GPU visible to them."""
    spec = {"config": name, "precision": precision, "overrides": overrides, "warmup": warmup, "processes": DDP_PROCESSES,
            "result": str(work / "ddp-result.json")}
    spec_file = work / "ddp-spec.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={DDP_PROCESSES}",
               str(Path(__file__).resolve()), "--worker", str(spec_file)]
    started = time.perf_counter()
    try:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""} if on_cpu else None
        done = subprocess.run(command, timeout=timeout, check=False, env=env)
        result_file = Path(spec["result"])
        if result_file.is_file():
            return FitResult(**json.loads(result_file.read_text(encoding="utf-8")))
        error = f"the {DDP_PROCESSES}-process launch exited with status {done.returncode} and wrote no result"
    except subprocess.TimeoutExpired:
        error = f"the {DDP_PROCESSES}-process launch ran over {timeout:.0f} s"
    return FitResult(config=name, precision=precision, processes=DDP_PROCESSES, status="error", error=error,
                     fit_seconds=time.perf_counter() - started)


# --- reporting ----------------------------------------------------------------------------------------------------


def label(precision: str) -> str:
    """fp32 for `no`, else the precision's name."""
    return "fp32" if precision == "no" else precision


def number(value: Optional[float], digits: int = 1) -> str:
    """A figure of the table, or '-'."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def table(rows: list[FitResult], precisions: list[str]) -> str:
    """Configs side by side: throughput per precision, the ratio to the first precision, peak memory, data wait."""
    first = precisions[0]
    head = [f"{'config':<18}", *(f"{label(p) + ' /s':>10}" for p in precisions),
            *(f"{label(p) + '/' + label(first):>11}" for p in precisions[1:]),
            f"{'peak MiB ' + '/'.join(label(p) for p in precisions):>21}", f"{'data wait ' + '/'.join(label(p) for p in precisions):>22}"]
    lines = ["  ".join(head)]
    errors = []
    for config in dict.fromkeys(r.config for r in rows):
        by = {r.precision: r for r in rows if r.config == config and r.processes == 1}
        speed = {p: by[p].examples_per_second if p in by else None for p in precisions}
        ratios = [speed[p] / speed[first] if speed[p] and speed[first] else None for p in precisions[1:]]
        memory = "/".join(number(by[p].peak_gpu_memory_mib, 0) if p in by else "-" for p in precisions)
        wait = "/".join(number(by[p].data_wait_fraction, 2) if p in by else "-" for p in precisions)
        unit = next(iter(by.values())).unit if by else "clips"
        lines.append("  ".join([f"{config + (' (pairs)' if unit == 'pairs' else ''):<18}",
                                *(f"{number(speed[p]):>10}" for p in precisions), *(f"{number(r, 2) + 'x':>11}" for r in ratios),
                                f"{memory:>21}", f"{wait:>22}"]))
        errors += [f"  error: {config} {label(r.precision)}: {r.error}" for r in by.values() if r.status != "ok"]
    return "\n".join(lines + errors)


def third_party_modules() -> list[str]:
    """Top-level modules imported so far that are neither the standard library nor this project's (a name whose
    import is blocked, `sys.modules[name] = None`, is not imported)."""
    names = {name.split(".", 1)[0] for name, module in list(sys.modules.items()) if module is not None}
    ours = {"audiointerp", "common", "__main__", "__mp_main__"}
    return sorted(n for n in names if n not in sys.stdlib_module_names and n not in ours and not n.startswith("_"))


def device_description() -> dict[str, Any]:
    """The GPUs (or the CPU), CUDA and cuDNN versions, and the float32 matmul / convolution settings in force."""
    if not torch.cuda.is_available():
        return {"device": "cpu", "gpus": 0}
    return {"device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}


# --- the benchmark ------------------------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated shipped configs")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated train.mixed_precision values")
    parser.add_argument("--steps", type=int, default=None, help="optimizer updates per fit (default 30; --smoke 3)")
    parser.add_argument("--log-every", type=int, default=None, help="train.log_every_steps (default 5; --smoke 1)")
    parser.add_argument("--warmup", type=int, default=None, help="updates left out of the steady state (default 10; --smoke 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON results")
    parser.add_argument("--work-dir", type=Path, default=None, help="data and runs (default: a temporary folder, removed)")
    parser.add_argument("--ddp", choices=("auto", "always", "never"), default="auto",
                        help=f"auto: {DDP_CONFIG} also on 2 processes with 2+ GPUs; always: also with fewer (2 CPU processes, gloo)")
    parser.add_argument("--ddp-timeout", type=float, default=240.0, help="seconds the 2-process launch may take")
    parser.add_argument("--smoke", action="store_true", help="tiny data and models, a few updates: for tests, runs on a CPU")
    parser.add_argument("--override", action="append", default=[], metavar="[CONFIG:]KEY=VALUE",
                        help="a config override for every fit, or for CONFIG's fits only (repeatable), e.g. "
                             "train.compile=true or flow:data.num_workers=1; recorded in the JSON")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # one process of the DDP launch
    args = parser.parse_args(argv)
    base = SMOKE_SIZES if args.smoke else FULL_SIZES
    args.sizes = Sizes(**{**asdict(base), **{k: v for k, v in (("steps", args.steps), ("log_every", args.log_every),
                                                                ("warmup", args.warmup)) if v is not None}})
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    args.precision_list = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if (args.sizes.steps - args.sizes.warmup) // args.sizes.log_every < 2:
        parser.error(f"--steps {args.sizes.steps} with --warmup {args.sizes.warmup} and --log-every {args.sizes.log_every} "
                     f"leaves fewer than 2 logging windows to measure")
    return args


def prepare_audio(names: list[str], args: argparse.Namespace, work: Path, processes: int) -> dict[int, Path]:
    """One generated ESC-50 tree per sample rate the audio configs use, long enough clips for every config, and a
    training set that holds every update of the largest batch in one epoch; {sample rate: root}."""
    needs: dict[int, tuple[float, int]] = {}
    for name in names:
        cfg = load_config(name, [*RANDOM_START.get(name, []), *(SMOKE.get(name, []) if args.smoke else []), "data.source=unused"])
        rate = int(cfg.data.sample_rate)
        seconds, examples = needs.get(rate, (0.0, 0))
        needs[rate] = (max(seconds, float(cfg.data.seconds)), max(examples, examples_per_update(cfg, processes) * (args.sizes.steps + 1)))
    roots = {}
    for rate, (seconds, examples) in needs.items():
        per_class_fold = math.ceil(examples / (4 * args.sizes.classes))
        started = time.perf_counter()
        roots[rate] = write_esc50(work / f"esc50-{rate}" / "ESC-50-master", rate, seconds, args.sizes.classes, per_class_fold)
        print(f"generated ESC-50 tree at {rate} Hz: {args.sizes.classes} classes, {seconds:g} s clips, "
              f"{4 * per_class_fold * args.sizes.classes} training clips ({time.perf_counter() - started:.1f} s)", flush=True)
    return roots


def epoch_manifest(root: Path, out: Path, examples: int) -> Path:
    """A manifest CSV (path, label, fold) over an ESC-50 tree: fold 1 as it is (validation), and the first
    `examples` training files as fold 2, so that an epoch holds exactly `examples` clips."""
    with open(root / "meta" / "esc50.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    valid = [r for r in rows if r["fold"] == "1"]
    train = [r for r in rows if r["fold"] != "1"][:examples]
    if len(train) < examples:
        raise RuntimeError(f"{root} holds {len(train)} training clips; an epoch needs {examples}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "fold"])
        writer.writerows([[str(root / "audio" / r["filename"]), r["category"], "1"] for r in valid])
        writer.writerows([[str(root / "audio" / r["filename"]), r["category"], "2"] for r in train])
    return out


def user_overrides(name: str, given: list[str]) -> list[str]:
    """The `--override` values that apply to config `name`: `KEY=VALUE` for every config, `CONFIG:KEY=VALUE` for
    that config only."""
    chosen = []
    for item in given:
        head, _, rest = item.partition("=")
        config, colon, key = head.partition(":")
        if not colon:
            chosen.append(item)
        elif config == name:
            chosen.append(f"{key}={rest}")
    return chosen


def config_overrides(name: str, precision: str, args: argparse.Namespace, work: Path, sources: dict[str, str],
                     processes: int, tag: str) -> list[str]:
    """Every override of one fit: `base_overrides`, its data, and an epoch of exactly `--warmup` updates, so that
    the measured windows (from update `--warmup` on) are all in epoch 2 and later: DataLoader workers that persist
    over epochs, and an evaluation and a checkpoint at each epoch's end (outside the windows' clocks). Audio configs
    read a manifest of `--warmup` x batch training clips of the generated tree; the flow draws that many pairs."""
    overrides = base_overrides(name, precision, args.sizes, args.smoke, work / "runs" / tag, work / "cache")
    overrides.append(f"train.epochs={math.ceil(args.sizes.steps / args.sizes.warmup)}")
    overrides += user_overrides(name, args.override)
    probe = load_config(name, [*overrides, "data.source=unused", *([f"task.layer={STORE_LAYER}"] if name == "flow" else [])])
    epoch = examples_per_update(probe, processes) * args.sizes.warmup
    if name == "flow":
        return [*overrides, f"data.source={sources[name]}", f"task.layer={STORE_LAYER}", f"task.pairs_per_epoch={epoch}"]
    manifest = epoch_manifest(Path(sources[name]), work / "manifests" / f"{tag}.csv", epoch)
    return [*overrides, f"data.source={manifest}", "data.format=manifest", "data.train_folds=[2]", "data.valid_folds=[1]"]


def run_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Generate the data, run every fit, print the table; returns the results written to `args.out`."""
    load, started = os.getloadavg(), time.perf_counter()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ddp = (args.ddp == "always" or (args.ddp == "auto" and gpus >= DDP_PROCESSES)) and DDP_CONFIG in args.config_list
    results: dict[str, Any] = {"benchmark": "gpu", "smoke": args.smoke, "sizes": asdict(args.sizes),
                               "configs": args.config_list, "precisions": args.precision_list, "overrides": args.override,
                               "results": [], "ddp": None}
    rows: list[FitResult] = []

    def save() -> None:
        results["results"] = [asdict(r) for r in rows]
        results["imported_third_party"] = third_party_modules()
        results["seconds"] = round(time.perf_counter() - started, 1)
        results["environment"] = environment(load, **device_description(), argv=sys.argv[1:])
        write_results(args.out, results)

    sources: dict[str, str] = {}
    audio = [n for n in args.config_list if n != "flow"]
    try:
        roots = prepare_audio(audio, args, work, DDP_PROCESSES if ddp else 1)
        for name in audio:
            sources[name] = str(roots[int(load_config(name, [*RANDOM_START.get(name, []), "data.source=unused"]).data.sample_rate)])
    except Exception as err:
        traceback.print_exc()
        rows += [FitResult(name, p, status="error", error=f"data: {type(err).__name__}: {err}") for name in audio for p in args.precision_list]
    if "flow" in args.config_list:
        try:
            started = time.perf_counter()
            sources["flow"] = str(write_flow_store(work / "store", args.sizes.store_clips, args.sizes.store_dim))
            print(f"wrote the flow's store: {args.sizes.store_clips} x {args.sizes.store_dim} "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
        except Exception as err:
            traceback.print_exc()
            rows += [FitResult("flow", p, unit="pairs", status="error", error=f"store: {type(err).__name__}: {err}")
                     for p in args.precision_list]
    for name in args.config_list:
        if name not in sources:
            continue
        for precision in args.precision_list:
            tag = f"{name}-{label(precision)}"
            print(f"\n=== {tag}", flush=True)
            try:
                overrides = config_overrides(name, precision, args, work, sources, 1, tag)
            except Exception as err:
                rows.append(FitResult(name, precision, status="error", error=f"config: {type(err).__name__}: {err}"))
                save()
                continue
            row = run_fit(name, precision, overrides, args.sizes.warmup)
            rows.append(row)
            print(f"{tag}: {row.status} {number(row.examples_per_second)} {row.unit}/s, "
                  f"data wait {number(row.data_wait_fraction, 2)}, peak {number(row.peak_gpu_memory_mib, 0)} MiB, "
                  f"fit {number(row.fit_seconds)} s{'; ' + row.error if row.error else ''}", flush=True)
            save()
    if ddp and DDP_CONFIG in sources:
        precision = args.precision_list[-1]
        tag = f"{DDP_CONFIG}-{label(precision)}-ddp{DDP_PROCESSES}"
        print(f"\n=== {tag}", flush=True)
        on_cpu = gpus < DDP_PROCESSES  # --ddp always with fewer GPUs: CPU processes over gloo, never one GPU twice
        ddp_row = run_ddp(DDP_CONFIG, precision, config_overrides(DDP_CONFIG, precision, args, work, sources, DDP_PROCESSES, tag),
                          args.sizes.warmup, work, args.ddp_timeout, on_cpu)
        single = next((r for r in rows if r.config == DDP_CONFIG and r.precision == precision and r.status == "ok"), None)
        comparable = single is not None and on_cpu == (gpus == 0)  # both fits on the CPU, or both on GPUs
        speedup = (ddp_row.examples_per_second / single.examples_per_second
                   if ddp_row.examples_per_second and comparable and single.examples_per_second else None)
        results["ddp"] = {"config": DDP_CONFIG, "precision": precision, "processes": DDP_PROCESSES,
                          "devices": "cpu (gloo)" if on_cpu else "cuda", "result": asdict(ddp_row),
                          "one_process_clips_per_second": single.examples_per_second if single else None,
                          "speedup": speedup}
    save()
    device = device_description()["device"]
    print(f"\n{device}: {args.sizes.steps} updates per fit, steady state after {args.sizes.warmup}, windows of "
          f"{args.sizes.log_every}; clips (pairs for the flow) per second\n")
    print(table(rows, args.precision_list))
    if results["ddp"] is not None:
        d = results["ddp"]
        print(f"\n{DDP_CONFIG} {label(d['precision'])} on {DDP_PROCESSES} processes ({d['devices']}): "
              f"{number(d['result']['examples_per_second'])} clips/s against {number(d['one_process_clips_per_second'])} "
              f"on 1 ({number(d['speedup'], 2)}x){'; ' + d['result']['error'] if d['result']['error'] else ''}")
    print(f"\nwrote {args.out}")
    return results


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark (or one DDP process of it); 0 when every fit succeeded, 1 otherwise."""
    args = parse_args(argv)
    for variable in ("AUDIOINTERP_OFFLINE", "HF_HUB_OFFLINE"):  # a config that needs a download fails at once
        os.environ.setdefault(variable, "1")
    if args.worker is not None:
        return worker(args.worker)
    started = time.perf_counter()
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        results = run_benchmark(args, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="audiointerp-gpu-bench-") as tmp:
            results = run_benchmark(args, Path(tmp))
    print(f"total {time.perf_counter() - started:.0f} s")
    fits = [*results["results"], *([results["ddp"]["result"]] if results["ddp"] else [])]
    return 0 if all(r["status"] == "ok" for r in fits) else 1


if __name__ == "__main__":
    sys.exit(main())
