"""Benchmark the VGGish front end and semDNN on CPU: default widths (64,128,256,512) beside narrow (16,32,64,128).

A batch of one-second 16 kHz clips (one 96 x 64 example each) is timed through the front end alone, then the
network in training mode: forward only, and forward + backward (loss = mean squared output) on precomputed
features. The steps run in interleaved rounds after warm-up; median and minimum are reported. Prints a table
and writes benchmarks/results/vggish.json.

    python benchmarks/bench_vggish.py [--batch-size 32] [--repeats 10] [--warmup 2]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable

import torch
from common import environment, timed, write_results

from audiointerp.models import build, build_frontend

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "vggish.json"
CONFIGS = {"default (64,128,256,512)": (64, 128, 256, 512), "narrow (16,32,64,128)": (16, 32, 64, 128)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    load_before = os.getloadavg()
    frontend = build_frontend("semdnn")
    waveform = torch.randn(args.batch_size, int(args.seconds * frontend.sample_rate))
    with torch.no_grad():
        features = frontend(waveform)
    examples = features.shape[0] * features.shape[1]
    batch = features.flatten(0, 1)

    def run_frontend() -> None:
        with torch.no_grad():
            frontend(waveform)

    def forward_backward(net: torch.nn.Module) -> None:
        net.zero_grad(set_to_none=True)
        net(batch).pow(2).mean().backward()

    def forward(net: torch.nn.Module) -> None:
        with torch.no_grad():
            net(batch)

    nets = {label: build("semdnn", num_classes=300, widths=widths).train() for label, widths in CONFIGS.items()}
    steps: dict[str, Callable[[], object]] = {"frontend": run_frontend}
    for label, net in nets.items():
        steps[f"{label}/forward"] = lambda net=net: forward(net)
        steps[f"{label}/forward_backward"] = lambda net=net: forward_backward(net)
    timings = timed(steps, args.repeats, args.warmup)
    front = timings["frontend"]
    rows = []
    for label, net in nets.items():
        fwd_bwd = timings[f"{label}/forward_backward"]
        rows.append({
            "config": label,
            "widths": list(CONFIGS[label]),
            "parameters": sum(p.numel() for p in net.parameters()),
            "forward": timings[f"{label}/forward"],
            "forward_backward": fwd_bwd,
            "clips_per_second_forward_backward": args.batch_size / fwd_bwd["median_ms"] * 1e3,
        })

    print(f"\nsemDNN on CPU, batch {args.batch_size} x {args.seconds:g} s clips ({examples} examples of 96 x 64), "
          f"{torch.get_num_threads()} torch threads, median of {args.repeats}\n")
    print(f"front end (VGGish log-mel): {front['median_ms']:.1f} ms a batch, min {front['min_ms']:.1f} "
          f"({args.batch_size / front['median_ms'] * 1e3:.0f} clips/s)\n")
    print(f"{'network':<26} {'params':>10} {'fwd ms':>8} {'(min)':>7} {'fwd+bwd ms':>11} {'(min)':>7} {'clips/s':>8} "
          f"{'vs default':>10}")
    base = rows[0]["forward_backward"]["median_ms"]
    for row in rows:
        fwd, fb = row["forward"], row["forward_backward"]
        print(f"{row['config']:<26} {row['parameters']:>10,} {fwd['median_ms']:>8.1f} {fwd['min_ms']:>7.1f} "
              f"{fb['median_ms']:>11.1f} {fb['min_ms']:>7.1f} {row['clips_per_second_forward_backward']:>8.1f} "
              f"{base / fb['median_ms']:>9.2f}x")

    results = {
        "benchmark": "vggish",
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "examples_per_batch": examples,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "frontend": front,
        "networks": rows,
        "environment": environment(load_before),
    }
    write_results(args.output, results)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
