"""Benchmark: semDNN / catDNN training throughput on CPU, and the cost of the NNLS ranking evaluation.

1. Trains semdnn and catdnn through the real trainer on the built-in set (1 s clips, 16 kHz, audio cache on) at
   the paper's widths (64-128-256-512) and at the quickstart's narrow widths, and reads the steady-state
   throughput (clips/s) from metrics.jsonl timestamps (set-up, cache building and evaluation excluded).
2. Times `nnls_betas` (scipy NNLS per clip) for dictionaries of 100, 1,000 and 10,000 words (300-d).
Prints tables and writes benchmarks/results/semantic.json.

    python benchmarks/bench_semantic.py [--updates 30] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from audiointerp.datasets.synth import synthesize
from audiointerp.evaluation.ranking import nnls_betas
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "semantic.json"
WIDTHS = {"paper (64,128,256,512)": "[64,128,256,512]", "narrow (16,32,64,128)": "[16,32,64,128]"}


def steady_clips_per_second(metrics_file: Path, batch_size: int) -> float:
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if '"train/loss"' in line]
    first, last = records[0], records[-1]
    return batch_size * (last["step"] - first["step"]) / (last["time"] - first["time"])


def training(updates: int, batch_size: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = synthesize(Path(tmp) / "data", clips_per_class=20, seed=0, progress=False)
        for name in ("semdnn", "catdnn"):
            for label, widths in WIDTHS.items():
                cfg = load_config(name, [
                    f"data.source={manifest}", f"output_dir={tmp}/runs", f"data.cache_dir={tmp}/cache",
                    f"experiment=bench-{name}-{len(rows)}", f"train.max_steps={updates}", "train.epochs=100",
                    "train.log_every_steps=5", f"data.batch_size={batch_size}", f"model.params.widths={widths}",
                    "task.word2vec_dim=50", "task.word2vec_epochs=50", "task.clusters=50", "data.seconds=1.0",
                    "tracking.backend=none", "train.progress=false"])
                run = Trainer(cfg).fit().run_dir
                rows.append({"model": name, "widths": label,
                             "clips_per_second": steady_clips_per_second(run / "metrics.jsonl", batch_size)})
    return rows


def nnls_cost(clips: int = 20) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for words in (100, 1000, 10000):
        dictionary = rng.standard_normal((words, 300)) + 0.3
        predictions = dictionary[rng.integers(0, words, (clips, 3))].mean(1) + 0.1 * rng.standard_normal((clips, 300))
        started = time.perf_counter()
        nnls_betas(predictions, dictionary, n_jobs=1)
        rows.append({"words": words, "dim": 300, "seconds_per_clip": (time.perf_counter() - started) / clips})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    train_rows = training(args.updates, args.batch_size)
    nnls_rows = nnls_cost()
    print(f"\ntraining throughput, batch {args.batch_size}, 1 s clips, {torch.get_num_threads()} torch threads")
    print(f"{'model':<8} {'widths':<24} {'clips/s':>8}")
    for row in train_rows:
        print(f"{row['model']:<8} {row['widths']:<24} {row['clips_per_second']:>8.1f}")
    print("\nNNLS ranking evaluation (scipy.optimize.nnls, one process)")
    print(f"{'words':>6} {'dim':>4} {'s/clip':>8}")
    for row in nnls_rows:
        print(f"{row['words']:>6} {row['dim']:>4} {row['seconds_per_clip']:>8.4f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.platform(), "threads": torch.get_num_threads(), "args": vars(args),
                                   "training": train_rows, "nnls": nnls_rows}, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
