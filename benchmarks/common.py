"""Shared by the benchmark scripts: the environment a measurement was taken in, and writing its JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

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
