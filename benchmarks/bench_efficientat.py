"""Benchmark the EfficientAT mel front end and networks (default mn10, dymn10) on CPU, against upstream EfficientAT.

A batch of 5 s 32 kHz clips ([B, 1, 128, 500] mel features) is timed through the front end alone, then each
network: eval forward (no grad); eval forward + backward to the input features, as a frozen classifier passes
gradients to an upstream model (Seed 003); and training-mode forward + backward over the parameters (the train
step). Each network is timed in three variants: ours as built (`build(name)`), ours with channels_last on and
with it off, and, with `--upstream`, upstream's model with the same weights. For the MobileNets, channels_last is
the builder's `channels_last` option (on by default: one of the two variants is the default one, timed once);
DyMN has no such option (its dynamic convolutions are batched matrix products on the default layout), so its
"on" variant is the model and input converted from outside (`.to(memory_format=torch.channels_last)`).

Steps run in interleaved rounds after warm-up (every variant of every model once per round, so that a change of
machine load affects all alike); per step the median and minimum are reported, and each speed-up upstream / ours
twice: the ratio of the medians and the median of the per-round ratios (the steadier one on a shared machine).
Prints a table and writes benchmarks/results/efficientat.json.

    python benchmarks/bench_efficientat.py [--models mn10 dymn10] [--batch-size 8] [--repeats 9] [--warmup 1]
                                           [--steps forward input_gradient train_step] [--threads N]
                                           [--upstream PATH/TO/EfficientAT]

With `--upstream`, a local checkout of the upstream EfficientAT repository (not part of this project, never
committed) is imported from that path; its models get the same weights as ours (strict load).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from common import environment, timed_rounds, write_results

from audiointerp.models import build, build_frontend

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "efficientat.json"
STEPS: tuple[str, ...] = ("forward", "input_gradient", "train_step")


class _LogitsOnly(torch.nn.Module):
    """Upstream models return (logits, embedding); keep the logits."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


class _ChannelsLastInput(torch.nn.Module):
    """Feeds `model` its input in channels_last (the "on" variant of a model without a `channels_last` option,
    whose parameters the caller has converted)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


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
    with contextlib.redirect_stdout(io.StringIO()):  # upstream prints the whole module tree
        model = module.get_model(num_classes=num_classes, width_mult=int(name[len(family):]) / 10)
    model.load_state_dict(ours.state_dict(), strict=True)
    return _LogitsOnly(model)


def has_layout_option(name: str) -> bool:
    """Whether `name`'s builder takes `channels_last` (the MobileNets do; DyMN does not)."""
    return not name.startswith("dymn")


def variant_models(name: str, num_classes: int, upstream: Path | None) -> dict[str, torch.nn.Module]:
    """`{variant: model}` for `name`, all with the same weights: "ours" (as built), "channels_last=on",
    "channels_last=off" (the one equal to "ours" left out) and, with `upstream`, "upstream"."""
    ours = build(name, num_classes=num_classes)
    models: dict[str, torch.nn.Module] = {"ours": ours}
    if has_layout_option(name):
        default = bool(getattr(ours, "channels_last", False))
        other = build(name, num_classes=num_classes, channels_last=not default)
        other.load_state_dict(ours.state_dict(), strict=True)
        models[f"channels_last={'off' if default else 'on'}"] = other
    else:
        converted = build(name, num_classes=num_classes)
        converted.load_state_dict(ours.state_dict(), strict=True)
        models["channels_last=on"] = _ChannelsLastInput(converted.to(memory_format=torch.channels_last))
    if upstream is not None:
        models["upstream"] = upstream_model(upstream, name, ours, num_classes)
    return models


def summary(times: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "stdev_ms": statistics.pstdev(times)}


def speedup(reference: list[float], times: list[float]) -> dict[str, float]:
    """Upstream / ours (above 1: ours is faster): the ratio of the medians and the median of per-round ratios."""
    return {
        "ratio_of_medians": statistics.median(reference) / statistics.median(times),
        "median_of_round_ratios": statistics.median(r / t for r, t in zip(reference, times)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["mn10", "dymn10"])
    parser.add_argument("--upstream", type=Path, help="local checkout of the upstream EfficientAT repository")
    parser.add_argument("--num-classes", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

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

    run_step: dict[str, Callable[[torch.nn.Module], None]] = {
        "forward": forward, "input_gradient": input_gradient, "train_step": train_step,
    }
    variants: dict[str, dict[str, Any]] = {}  # "model/variant" -> {"frozen": eval model, "training": train model}
    for name in args.models:
        frozen = variant_models(name, args.num_classes, args.upstream)
        training = variant_models(name, args.num_classes, args.upstream)
        for variant in frozen:
            net = frozen[variant].eval()
            net.requires_grad_(False)
            variants[f"{name}/{variant}"] = {"frozen": net, "training": training[variant].train()}
    steps: dict[str, Callable[[], object]] = {"frontend": run_frontend}
    for key, nets in variants.items():
        for step in args.steps:
            net = nets["training" if step == "train_step" else "frozen"]
            steps[f"{key}/{step}"] = lambda net=net, run=run_step[step]: run(net)
    times = timed_rounds(steps, args.repeats, args.warmup)
    front = summary(times["frontend"])

    rows = []
    for key, nets in variants.items():
        name, variant = key.split("/", 1)
        row: dict[str, Any] = {"model": name, "variant": variant,
                               "parameters": sum(p.numel() for p in nets["training"].parameters())}
        for step in args.steps:
            row[step] = summary(times[f"{key}/{step}"])
            if args.upstream and variant != "upstream":
                row[step]["speedup_over_upstream"] = speedup(times[f"{name}/upstream/{step}"], times[f"{key}/{step}"])
        rows.append(row)

    print(f"\nEfficientAT on CPU, batch {args.batch_size} x {args.seconds:g} s clips (features "
          f"{tuple(features.shape)}), {args.num_classes} classes, {torch.get_num_threads()} torch threads, "
          f"{args.repeats} interleaved rounds, load average before {load_before[0]:.1f}, after "
          f"{os.getloadavg()[0]:.1f}\n")
    print(f"front end (EfficientAT mel): {front['median_ms']:.1f} ms a batch, min {front['min_ms']:.1f} "
          f"({args.batch_size / front['median_ms'] * 1e3:.0f} clips/s)\n")
    header = f"{'model':<8} {'variant':<18} {'params':>10}"
    for step in args.steps:
        header += f" {step + ' ms':>20} {'(min)':>8}"
        if args.upstream:
            header += f" {'speed-up':>15}"
    print(header)
    for row in rows:
        line = f"{row['model']:<8} {row['variant']:<18} {row['parameters']:>10,}"
        for step in args.steps:
            line += f" {row[step]['median_ms']:>20.1f} {row[step]['min_ms']:>8.1f}"
            if args.upstream:
                up = row[step].get("speedup_over_upstream")
                line += f" {up['ratio_of_medians']:>6.2f} ({up['median_of_round_ratios']:.2f})" if up else f" {'':>15}"
        print(line)
    if args.upstream:
        print("\nspeed-up = upstream time / ours: ratio of the medians (median of the per-round ratios); above 1: "
              "ours is faster")

    results = {
        "benchmark": "efficientat",
        "batch_size": args.batch_size,
        "seconds": args.seconds,
        "num_classes": args.num_classes,
        "feature_shape": list(features.shape),
        "repeats": args.repeats,
        "warmup": args.warmup,
        "upstream": str(args.upstream) if args.upstream else None,
        "frontend": front,
        "networks": rows,
        "environment": environment(load_before),
    }
    write_results(args.output, results)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
