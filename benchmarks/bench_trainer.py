"""Benchmark: training throughput of the classifier task on CPU, side by side for data-loading set-ups.

Synthesizes the built-in set at 44.1 kHz (so loading has to resample), then trains the small CNN for a fixed
number of updates with (a) the audio cache, (b) no cache, (c) no cache with 2 DataLoader workers. Throughput
is measured from the timestamps of metrics.jsonl between the first and last logging points, so set-up,
cache building and the final evaluation are excluded. Prints a table and writes benchmarks/results/trainer.json.

    python benchmarks/bench_trainer.py [--updates 40] [--batch-size 32] [--widths 16,32,64,128]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from audiointerp.datasets.synth import synthesize
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "trainer.json"

SETUPS = {
    "cache, 0 workers": ["data.cache=true", "data.num_workers=0"],
    "no cache, 0 workers": ["data.cache=false", "data.num_workers=0"],
    "no cache, 2 workers": ["data.cache=false", "data.num_workers=2"],
}


def steady_rate(metrics_file: Path) -> tuple[float, int]:
    """Seconds per update between the first and last training log records, and the updates measured."""
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if '"train/loss"' in line]
    first, last = records[0], records[-1]
    updates = last["step"] - first["step"]
    return (last["time"] - first["time"]) / updates, updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--widths", default="16,32,64,128")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        manifest = synthesize(tmp_path / "data", clips_per_class=12, sample_rate=44100, seed=0, progress=False)
        rows = []
        for name, overrides in SETUPS.items():
            cfg = load_config("classifier", [
                f"data.source={manifest}", f"output_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
                f"experiment=bench-{len(rows)}", f"train.max_steps={args.updates}", "train.log_every_steps=5",
                f"data.batch_size={args.batch_size}", f"model.params.widths=[{args.widths}]", "tracking.backend=none",
                "train.progress=false", "train.epochs=100", *overrides,
            ])
            started = time.perf_counter()
            run = Trainer(cfg).fit().run_dir
            total = time.perf_counter() - started
            per_update, measured = steady_rate(run / "metrics.jsonl")
            rows.append({"setup": name, "seconds_per_update": per_update, "clips_per_second": args.batch_size / per_update,
                         "updates_measured": measured, "wall_seconds_with_setup": total})

    base = rows[0]["clips_per_second"]
    print(f"\nclassifier task, small_cnn widths [{args.widths}], batch {args.batch_size}, 1 s clips at 44.1 kHz -> 16 kHz, "
          f"{torch.get_num_threads()} torch threads\n")
    print(f"{'setup':<22} {'s/update':>9} {'clips/s':>9} {'vs cache':>9} {'wall s':>8}")
    for row in rows:
        print(f"{row['setup']:<22} {row['seconds_per_update']:>9.3f} {row['clips_per_second']:>9.1f} "
              f"{row['clips_per_second'] / base:>8.2f}x {row['wall_seconds_with_setup']:>8.1f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "cpus": torch.get_num_threads(), "args": vars(args),
                                   "results": rows}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
