"""Benchmark the EfficientAT mel front end and MobileNetV3 widths (default mn04, mn10) on CPU.

A batch of 5 s 32 kHz clips ([B, 1, 128, 500] mel features) is timed through the front end alone, then each
network: eval forward (no grad); eval forward + backward to the input features, as a frozen classifier passes
gradients to an upstream model (Seed 003); and training-mode forward + backward over the parameters. Steps run in
interleaved rounds after warm-up; median and minimum are reported. Prints a table and writes
benchmarks/results/efficientat.json.

    python benchmarks/bench_efficientat.py [--models mn10 dymn10] [--batch-size 8] [--repeats 5] [--warmup 1]
                                           [--upstream PATH/TO/EfficientAT]

With `--upstream`, a local checkout of the upstream EfficientAT repository (not part of this project, never
committed) is imported from that path; its models get the same weights as ours (strict load) and are timed in
the same interleaved rounds, and the table gives the ratio ours / upstream (below 1: ours is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from common import environment, timed, write_results

from audiointerp.models import build, build_frontend

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "efficientat.json"


class _LogitsOnly(torch.nn.Module):
    """Upstream models return (logits, embedding); keep the logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def upstream_model(path: Path, name: str, ours: torch.nn.Module, num_classes: int) -> torch.nn.Module:
    """The upstream model of the same width from a local checkout, with our weights (strict)."""
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    family = "dymn" if name.startswith("dymn") else "mn"
    here = os.getcwd()
    os.chdir(path)  # upstream reads its metadata relative to the working directory at import
    try:
        module = __import__(f"models.{family}.model", fromlist=["get_model"])
    finally:
        os.chdir(here)
    model = module.get_model(num_classes=num_classes, width_mult=int(name[len(family):]) / 10)
    model.load_state_dict(ours.state_dict(), strict=True)
    return _LogitsOnly(model)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mn10", "dymn10"])
    parser.add_argument("--upstream", type=Path, help="local checkout of the upstream EfficientAT repository")
    parser.add_argument("--num-classes", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    load_before = os.getloadavg()
    frontend = build_frontend("efficientat_mel").eval()
    waveform = torch.randn(args.batch_size, int(args.seconds * frontend.sample_rate)) * 0.1
    with torch.no_grad():
        features = frontend(waveform)
    targets = torch.randint(args.num_classes, (args.batch_size,))

    def run_frontend() -> None:
        with torch.no_grad():
            frontend(waveform)

    def forward(net: torch.nn.Module) -> None:
        with torch.no_grad():
            net(features)

    def input_gradient(net: torch.nn.Module) -> None:
        x = features.detach().requires_grad_(True)
        F.cross_entropy(net(x), targets).backward(inputs=[x])

    def train_step(net: torch.nn.Module) -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(features), targets).backward()

    frozen = {name: build(name, num_classes=args.num_classes).eval() for name in args.models}
    training = {name: build(name, num_classes=args.num_classes).train() for name in args.models}
    if args.upstream:
        for name in list(args.models):
            frozen[f"{name}@upstream"] = upstream_model(args.upstream, name, frozen[name], args.num_classes).eval()
            training[f"{name}@upstream"] = upstream_model(args.upstream, name, training[name], args.num_classes).train()
        args.models = [n for name in args.models for n in (name, f"{name}@upstream")]
    for net in frozen.values():
        net.requires_grad_(False)
    steps: dict[str, Callable[[], object]] = {"frontend": run_frontend}
    for name in args.models:
        steps[f"{name}/forward"] = lambda net=frozen[name]: forward(net)
        steps[f"{name}/input_gradient"] = lambda net=frozen[name]: input_gradient(net)
        steps[f"{name}/train_step"] = lambda net=training[name]: train_step(net)
    timings = timed(steps, args.repeats, args.warmup)
    front = timings["frontend"]
    rows = [
        {
            "model": name,
            "parameters": sum(p.numel() for p in training[name].parameters()),
            "forward": timings[f"{name}/forward"],
            "input_gradient": timings[f"{name}/input_gradient"],
            "train_step": timings[f"{name}/train_step"],
            "clips_per_second_forward": args.batch_size / timings[f"{name}/forward"]["median_ms"] * 1e3,
        }
        for name in args.models
    ]

    print(f"\nEfficientAT on CPU, batch {args.batch_size} x {args.seconds:g} s clips (features "
          f"{tuple(features.shape)}), {args.num_classes} classes, {torch.get_num_threads()} torch threads, "
          f"median of {args.repeats}\n")
    print(f"front end (EfficientAT mel): {front['median_ms']:.1f} ms a batch, min {front['min_ms']:.1f} "
          f"({args.batch_size / front['median_ms'] * 1e3:.0f} clips/s)\n")
    print(f"{'model':<16} {'params':>11} {'fwd ms':>8} {'(min)':>7} {'input-grad ms':>14} {'(min)':>7} "
          f"{'train ms':>9} {'(min)':>7} {'clips/s fwd':>12}")
    for row in rows:
        fwd, grad, train = row["forward"], row["input_gradient"], row["train_step"]
        print(f"{row['model']:<16} {row['parameters']:>11,} {fwd['median_ms']:>8.1f} {fwd['min_ms']:>7.1f} "
              f"{grad['median_ms']:>14.1f} {grad['min_ms']:>7.1f} {train['median_ms']:>9.1f} {train['min_ms']:>7.1f} "
              f"{row['clips_per_second_forward']:>12.1f}")
    ratios = {}
    for row in rows:
        upstream = next((r for r in rows if r["model"] == f"{row['model']}@upstream"), None)
        if upstream:
            ratios[row["model"]] = {step: row[step]["median_ms"] / upstream[step]["median_ms"]
                                    for step in ("forward", "input_gradient", "train_step")}
    if ratios:
        print("\nratio ours / upstream (median times; below 1: ours is faster)")
        for name, ratio in ratios.items():
            print(f"{name:<8} " + "  ".join(f"{step} {value:.3f}" for step, value in ratio.items()))

    results = {
        "benchmark": "efficientat",
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "num_classes": args.num_classes,
        "feature_shape": list(features.shape),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "frontend": front,
        "networks": rows,
        "ratio_ours_over_upstream": ratios,
        "environment": environment(load_before),
    }
    write_results(args.output, results)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
