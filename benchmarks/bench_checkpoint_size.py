"""Checkpoint size of the `ae_finetune` recipes with the frozen classifier in the weights and left out of them.

For each of ae_finetune_passt, ae_finetune_mn10 and ae_finetune_dymn10 (full-size networks, random weights, on the
CPU), the real trainer takes one optimizer update on a generated two-clip ESC-50 tree and writes one checkpoint,
twice: with the classifier at random initialisation (no source file, so its weights stay in the checkpoint, as
every checkpoint held them before) and with the same classifier read from a weights file
(`task.classifier_checkpoint`: left out, its source and sha256 recorded). Prints the checkpoint folders' sizes
side by side and their ratio, and writes benchmarks/results/checkpoint_size.json.

    python benchmarks/bench_checkpoint_size.py [--configs ae_finetune_passt,ae_finetune_mn10]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from common import environment, write_results
from safetensors.torch import save_file

from audiointerp.datasets.synth import render_clip
from audiointerp.models import build_pipeline
from audiointerp.train.checkpoint import CheckpointStore
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint_size.json"
CONFIGS = ("ae_finetune_passt", "ae_finetune_mn10", "ae_finetune_dymn10")


def tiny_esc50(root: Path, rate: int = 44100, seconds: float = 2.0) -> Path:
    """An ESC-50 tree of two classes, one clip per fold 1 and 2."""
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for target, (category, material, action) in enumerate([("glass_breaking", "glass", "destructing"),
                                                                 ("door_wood_knock", "wood", "tapping")]):
            for fold in (1, 2):
                name = f"{fold}-{100 + 10 * target + fold}-A-{target}.wav"
                sf.write(root / "audio" / name, render_clip(material, action, np.random.default_rng(target), rate, seconds), rate)
                writer.writerow([name, fold, target, category, "False", str(100 + 10 * target + fold), "A"])
    return root


def folder_bytes(folder: Path) -> dict[str, int]:
    """Bytes of each file of a checkpoint folder (and `total`)."""
    sizes = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    return {**sizes, "total": sum(sizes.values())}


def measure(name: str, data: Path, work: Path) -> dict[str, Any]:
    base = load_config(name, ["data.source=unused"])
    torch.manual_seed(0)
    classifier = build_pipeline(str(base.task.classifier), num_classes=2, params=dict(base.task.classifier_params))
    weights = work / f"{name}-classifier.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.network.state_dict().items()}, str(weights))
    row: dict[str, Any] = {"config": name, "classifier": str(base.task.classifier),
                           "classifier_parameters": sum(p.numel() for p in classifier.parameters())}
    for label, source in (("classifier_saved", "null"), ("classifier_left_out", str(weights))):
        cfg = load_config(name, [f"data.source={data}", f"output_dir={work / label}", f"data.cache_dir={work / 'cache'}",
                                 "task.start=random", f"task.classifier_checkpoint={source}", "train.max_steps=1",
                                 "data.batch_size=1", "data.eval_batch_size=1", "data.num_workers=0", "data.seconds=2.0",
                                 "tracking.backend=none", "train.progress=false", "tracking.audio_examples=1"])
        run = Trainer(cfg).fit()
        row[label] = folder_bytes(CheckpointStore(run.run_dir).latest())
    row["ratio"] = row["classifier_left_out"]["total"] / row["classifier_saved"]["total"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="audiointerp-ckpt-") as tmp:
        data = tiny_esc50(Path(tmp) / "ESC-50-master")
        for name in args.configs.split(","):
            rows.append(measure(name, data, Path(tmp)))
            row = rows[-1]
            print(f"{name:22s} classifier {row['classifier']:>10s} ({row['classifier_parameters'] / 1e6:.1f} M params): "
                  f"checkpoint {row['classifier_saved']['total'] / 2**20:8.1f} MiB with it, "
                  f"{row['classifier_left_out']['total'] / 2**20:8.1f} MiB without ({row['ratio']:.2f}x)", flush=True)
    write_results(args.out, {"benchmark": "checkpoint_size", "results": rows, "environment": environment(load, argv=sys.argv[1:])})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
