"""Benchmark the built-in synthetic impact-sound set: per-clip render time and a full ``synthesize`` run.

    python benchmarks/bench_synth.py [--clips-per-class 100] [--workers 1,auto]

Prints the figures and writes them to ``benchmarks/results/synth.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
from common import environment, write_results

from audiointerp.datasets import synth

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "synth.json"


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def time_render_clip(clips_per_class: int, sample_rate: int, seconds: float) -> dict[str, object]:
    """Wall time of ``render_clip`` per class (ms per clip), one BLAS thread, in this process."""
    per_class_ms: dict[str, float] = {}
    with synth._single_threaded_blas():
        for class_index, label in enumerate(synth.CLASS_LABELS):
            material, action = label.split("_")
            synth.render_clip(material, action, np.random.default_rng([0, class_index]), sample_rate, seconds)
            started = time.perf_counter()
            for k in range(clips_per_class):
                synth.render_clip(material, action, np.random.default_rng([1, class_index, k]), sample_rate, seconds)
            per_class_ms[label] = (time.perf_counter() - started) / clips_per_class * 1e3
    per_action_ms = {action: statistics.fmean(ms for label, ms in per_class_ms.items() if label.endswith(action))
                     for action in synth.ACTIONS}
    per_material_ms = {material: statistics.fmean(ms for label, ms in per_class_ms.items()
                                                  if label.startswith(material + "_"))
                       for material in synth.MATERIALS}
    return {
        "clips_per_class": clips_per_class,
        "mean_ms_per_clip": statistics.fmean(per_class_ms.values()),
        "ms_per_clip_by_action": per_action_ms,
        "ms_per_clip_by_material": per_material_ms,
        "ms_per_clip_by_class": per_class_ms,
    }


def time_synthesize(clips_per_class: int, sample_rate: int, seconds: float, workers: int | None) -> dict[str, object]:
    """Wall and CPU time of one ``synthesize`` run into a temporary directory."""
    scratch = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        cpu_started = time.process_time()
        started = time.perf_counter()
        manifest = synth.synthesize(scratch / "set", clips_per_class=clips_per_class, sample_rate=sample_rate,
                                    seconds=seconds, seed=0, progress=False, workers=workers)
        wall = time.perf_counter() - started
        main_process_cpu = time.process_time() - cpu_started
        n_clips = len(synth.CLASS_LABELS) * clips_per_class
        audio_bytes = sum(path.stat().st_size for path in (manifest.parent / "audio").iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "workers": "auto" if workers is None else workers,
        "effective_workers": 1 if n_clips < synth.POOL_MIN_CLIPS else (workers or synth._default_workers()),
        "clips": n_clips,
        "audio_seconds": n_clips * seconds,
        "wall_seconds": wall,
        "main_process_cpu_seconds": main_process_cpu,
        "clips_per_second": n_clips / wall,
        "ms_per_clip": wall / n_clips * 1e3,
        "audio_megabytes": audio_bytes / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips-per-class", type=int, default=100, help="clips per class for synthesize")
    parser.add_argument("--render-clips-per-class", type=int, default=10, help="clips per class for render_clip")
    parser.add_argument("--sample-rate", type=int, default=16000)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--workers", default="1,auto", help="comma-separated worker counts; 'auto' = default")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    render = time_render_clip(args.render_clips_per_class, args.sample_rate, args.seconds)
    print(f"render_clip: {render['mean_ms_per_clip']:.2f} ms per {args.seconds:g} s clip at {args.sample_rate} Hz")
    for action, ms in render["ms_per_clip_by_action"].items():
        print(f"  {action:12s} {ms:6.2f} ms")
    runs = []
    for setting in args.workers.split(","):
        workers = None if setting.strip() == "auto" else int(setting)
        run = time_synthesize(args.clips_per_class, args.sample_rate, args.seconds, workers)
        runs.append(run)
        print(f"synthesize: {run['clips']} clips, workers={run['workers']} ({run['effective_workers']} used): "
              f"{run['wall_seconds']:.2f} s wall, {run['clips_per_second']:.0f} clips/s, "
              f"{run['audio_megabytes']:.1f} MB")

    results = {
        "benchmark": "synth",
        "sample_rate": args.sample_rate,
        "seconds": args.seconds,
        "render_clip": render,
        "synthesize": runs,
        "environment": environment(load_before, numpy=np.__version__, scipy=scipy.__version__, available_cpus=_available_cpus()),
    }
    write_results(args.output, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
