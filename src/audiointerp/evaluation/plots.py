"""Figures people would rather look at than read: learning curves, confusion matrices."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def read_metrics(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Series {name: [(step, value)]} from a run's metrics.jsonl."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        step = int(record["step"])
        for key, value in record.items():
            if key not in ("step", "epoch", "time") and isinstance(value, (int, float)):
                series[key].append((step, float(value)))
    return dict(series)


COUNT_METRICS = ("examples",)  # logged for bookkeeping, not worth a panel


def learning_curves(series: dict[str, list[tuple[int, float]]], names: Iterable[str] | None = None, columns: int = 3) -> Figure:
    """Loss and metric curves against optimizer updates, one panel per quantity (train and valid overlaid)."""
    wanted = [n for n in (names or series) if n in series and n.split("/", 1)[-1] not in COUNT_METRICS]
    by_quantity: dict[str, list[str]] = defaultdict(list)
    for name in wanted:
        by_quantity[name.split("/", 1)[-1]].append(name)
    first = [q for q in ("loss", "accuracy") if q in by_quantity]
    quantities = first + sorted(q for q in by_quantity if q not in first and q != "lr") + (["lr"] if "lr" in by_quantity else [])
    n_cols = max(1, min(columns, len(quantities)))
    n_rows = max(1, math.ceil(len(quantities) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.0 * n_rows), squeeze=False)
    for ax in axes.flat[len(quantities):]:
        ax.set_visible(False)
    for ax, quantity in zip(axes.flat, quantities):
        for name in sorted(by_quantity[quantity]):
            steps, values = zip(*series[name])
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=name.split("/")[0])
        ax.set_title(quantity)
        ax.set_xlabel("optimizer update")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str = "confusion matrix") -> Figure:
    """Row-normalised confusion matrix with class names."""
    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = min(max(4.0, 0.32 * len(classes) + 2.0), 18.0)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(normalised, cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write a figure as PNG and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
