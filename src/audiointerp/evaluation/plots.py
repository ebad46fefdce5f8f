"""Figures people would rather look at than read: learning curves, confusion matrices."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

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


def ranking_bars(
    table: dict[str, dict[str, float | tuple[float, float]]],
    title: str = "ranking score",
    ylabel: str = "ranking score",
    chance: float | None = 0.5,
) -> Figure:
    """Grouped bars of a score per dataset (groups) and model (bars); values are a mean or (mean, sem)."""
    datasets = list(table)
    models: list[str] = []
    for row in table.values():
        models += [m for m in row if m not in models]
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(datasets) * max(1, len(models)) ** 0.5 + 2.0), 3.4))
    x = np.arange(len(datasets))
    for k, model in enumerate(models):
        means, errors = [], []
        for dataset in datasets:
            value = table[dataset].get(model, np.nan)
            mean, sem = (value if isinstance(value, (tuple, list)) else (value, np.nan))
            means.append(float(mean))
            errors.append(float(sem))
        offsets = x - 0.4 + width * (k + 0.5)
        has_error = not np.all(np.isnan(errors))
        ax.bar(offsets, means, width, label=model, yerr=np.nan_to_num(errors) if has_error else None, capsize=3)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    means_all = [float(v[0] if isinstance(v, (tuple, list)) else v) for row in table.values() for v in row.values()]
    means_all = [v for v in means_all if np.isfinite(v)] + ([chance] if chance is not None else [])
    if means_all and 0.0 <= min(means_all) and max(means_all) <= 1.0:
        ax.set_ylim(max(0.0, min(means_all) - 0.1), 1.0)  # scores in [0, 1]: zoom on the range that differs
    ax.set_xticks(x, datasets)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def amcss_curves(curves: dict[str, dict[int, float]], title: str = "AMCSS") -> Figure:
    """AMCSS against the number of top predicted words, one line per model."""
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for model, curve in curves.items():
        top_ns = sorted(curve)
        ax.plot(top_ns, [curve[n] for n in top_ns], marker="o", markersize=3, label=model)
    ax.set_xlabel("top-N predicted words")
    ax.set_ylabel("AMCSS")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _class_blocks(labels: Sequence[object]) -> list[tuple[object, int, int]] | None:
    """(label, start, stop) of contiguous runs, or None when a label occurs in more than one run."""
    blocks: list[tuple[object, int, int]] = []
    for i, label in enumerate(labels):
        if blocks and blocks[-1][0] == label:
            blocks[-1] = (label, blocks[-1][1], i + 1)
        else:
            blocks.append((label, i, i + 1))
    names = [b[0] for b in blocks]
    return blocks if len(set(map(str, names))) == len(names) else None


def rdm_panels(
    rdms: dict[str, np.ndarray],
    labels: Sequence[object] | None = None,
    scale: str = "percentile",
    columns: int = 4,
    cmap: str = "viridis",
) -> Figure:
    """RDMs side by side, with class boundaries and names when the items are sorted by ``labels``.

    ``scale="percentile"`` shows each RDM's off-diagonal dissimilarities as percentiles (0-100), so panels of
    different units share one colour scale and one colour bar; ``scale="raw"`` gives each panel its own range
    and colour bar.
    """
    if scale not in ("percentile", "raw"):
        raise ValueError(f"scale must be 'percentile' or 'raw', not {scale!r}")
    names = list(rdms)
    if not names:
        raise ValueError("no RDMs to plot")
    n_cols = max(1, min(columns, len(names)))
    n_rows = math.ceil(len(names) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.3 * n_cols + 0.8, 3.2 * n_rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.remove()
    blocks = _class_blocks(list(labels)) if labels is not None else None
    image = None
    for ax, name in zip(axes.flat, names):
        matrix = np.asarray(rdms[name], dtype=float)
        if labels is not None and len(labels) != matrix.shape[0]:
            raise ValueError(f"{len(labels)} labels for the {matrix.shape[0]} items of RDM {name!r}")
        if scale == "percentile":
            shown = np.zeros_like(matrix)
            off = ~np.eye(matrix.shape[0], dtype=bool)
            values = matrix[off]
            ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
            shown[off] = 100.0 * ranks / max(1, values.size - 1)
            image = ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=100.0, interpolation="nearest")
        else:
            image = ax.imshow(matrix, cmap=cmap, interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name)
        if blocks is not None:
            for _, start, stop in blocks[1:]:
                ax.axhline(start - 0.5, color="white", linewidth=0.8)
                ax.axvline(start - 0.5, color="white", linewidth=0.8)
            centres = [(start + stop - 1) / 2 for _, start, stop in blocks]
            ax.set_xticks(centres, [str(b[0]) for b in blocks], rotation=90, fontsize=7)
            ax.set_yticks(centres, [str(b[0]) for b in blocks], fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    if scale == "percentile" and image is not None:
        fig.tight_layout(rect=(0.0, 0.0, 0.86, 1.0))
        colour_bar = fig.add_axes((0.88, 0.15, 0.015, 0.7))
        fig.colorbar(image, cax=colour_bar, label="dissimilarity (percentile)")
    else:
        fig.tight_layout()
    return fig


def spectrogram_pairs(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], columns: Sequence[str] = ("original", "reconstruction"),
                      frame_rate: float | None = None) -> Figure:
    """Spectrograms side by side, one row per clip: (title, left [F, T], right [F, T]) on a shared colour scale
    per row, low frequencies at the bottom. `frame_rate` (frames per second) labels the time axis in seconds."""
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 2, figsize=(9.0, 2.3 * n + 0.6), squeeze=False)
    fig.subplots_adjust(hspace=0.55, left=0.07, right=0.95, top=0.95, bottom=0.06)
    for (title, left, right), (ax_left, ax_right) in zip(rows, axes):
        low, high = float(min(left.min(), right.min())), float(max(left.max(), right.max()))
        for ax, spec, column in ((ax_left, left, columns[0]), (ax_right, right, columns[1])):
            seconds = spec.shape[1] / frame_rate if frame_rate else spec.shape[1]
            image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high,
                              extent=(0.0, seconds, 0, spec.shape[0]))
            ax.set_title(f"{title}: {column}", fontsize=8)
            ax.set_ylabel("mel band", fontsize=7)
            ax.tick_params(labelsize=7)
        fig.colorbar(image, ax=[ax_left, ax_right], fraction=0.03, pad=0.01)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)" if frame_rate else "frame", fontsize=7)
    return fig


def factor_scatter(axes: Sequence[tuple[str, np.ndarray]], colourings: Sequence[tuple[str, Sequence[str]]],
                   title: str = "") -> Figure:
    """Points in two coordinates (x and y: name, values), one panel per colouring (name, a label per point),
    each label its own colour with a legend: the flow's factor coordinates as in Esser et al.'s Fig. 1."""
    (x_name, x), (y_name, y) = axes[0], axes[1]
    fig, panels = plt.subplots(1, len(colourings), figsize=(4.4 * len(colourings), 4.0), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, labels) in zip(panels[0], colourings):
        labels = np.asarray(labels)
        for i, value in enumerate(sorted(set(labels.tolist()))):
            chosen = labels == value
            ax.scatter(x[chosen], y[chosen], s=7, alpha=0.7, color=cmap(i % 10), label=value, linewidths=0)
        ax.set_xlabel(x_name)
        ax.set_ylabel(y_name)
        ax.set_title(f"coloured by {name}", fontsize=9)
        ax.legend(fontsize=7, markerscale=2, loc="best", framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def comparison_bars(rows: Sequence[dict[str, Any]]) -> Figure:
    """One panel per metric: each condition's mean with its interval (`analyze compare`'s rows: condition,
    metric, mean, ci_half_width)."""
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        mine = [row for row in rows if row["metric"] == metric]
        errors = [0.0 if math.isnan(row["ci_half_width"]) else row["ci_half_width"] for row in mine]
        ax.bar(range(len(mine)), [row["mean"] for row in mine], yerr=errors, capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(mine)), [row["condition"] for row in mine], rotation=30, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
    fig.tight_layout()
    return fig
