"""Shared by the benchmark scripts: the environment a measurement was taken in, and writing its JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


def environment(load_before: tuple[float, float, float], **extra: Any) -> dict[str, Any]:
    """Python, torch, threads, platform and the load average before and after (this machine is shared)."""
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        **extra,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Write results as JSON through a temporary file, so a killed benchmark leaves the previous results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


def timed_rounds(steps: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Wall times in milliseconds of each step, one list entry per round; the steps are interleaved, one round at
    a time, after `warmup` untimed calls of each, so that a change of machine load affects all of them alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - started) * 1e3)
    return times


def timed(steps: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, dict[str, float]]:
    """Wall time of each step in milliseconds (median, minimum, standard deviation), over interleaved rounds
    (`timed_rounds`)."""
    return {name: {"median_ms": statistics.median(t), "min_ms": min(t), "stdev_ms": statistics.pstdev(t)}
            for name, t in timed_rounds(steps, repeats, warmup).items()}
