"""`audiointerp analyze concepts`: sparse concept decompositions of stored embeddings (Zhang, Thomaz & Lu 2025).

The audio embeddings are a store layer (one vector per clip; patches are averaged). The dictionary holds the
text embeddings of a concept vocabulary, from word vectors (a phrase is the normalised mean of its words'
vectors; concepts with a word that has no vector are left out) or from CLAP's text tower (the store then holds
CLAP's `embedding` layer). Both are prepared as SpLiCE does
(`evaluation.sparse_coding.prepare`), then decomposed at each l1. Reported per l1: mean number of concepts and
reconstruction cosine, and the cross-validated accuracy of a linear probe of a clip-table factor on the sparse
concept weights against the same probe on the dense embeddings.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audiointerp.datasets.embeddings import word_vector_dictionary
from audiointerp.datasets.store import ActivationStore, StoreError, clip_embeddings
from audiointerp.evaluation.plots import save_figure
from audiointerp.evaluation.sparse_coding import decompose, prepare, reconstruction_cosine, top_concepts
from audiointerp.train.tasks.concepts_task import run_vectors
from audiointerp.train.tracking import analysis_tracking

__all__ = ["ConceptSettings", "analyse", "clap_dictionary", "clip_embeddings", "run_vectors", "word_vector_dictionary"]


@dataclass
class ConceptSettings:
    layer: str  # the store layer holding the audio embeddings
    l1s: Sequence[float] = field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1, 0.15])  # sparsity penalties
    report_l1: float = 0.05  # the l1 whose top concepts are listed per sound
    top: int = 5  # concepts listed per sound
    factor: Optional[str] = None  # a clip-table column probed from sparse weights and from dense embeddings
    folds: int = 5  # cross-validation folds of that probe
    max_sounds: Optional[int] = None  # at most this many sounds, drawn at random (None: all)
    seed: int = 0  # the sound sample and the probe's folds


def clap_dictionary(vocabulary: Sequence[str], network, tokenizer) -> tuple[list[str], np.ndarray]:
    """(the vocabulary, its CLAP text embeddings [K, D]) through a `CLAPAudio` network's text tower."""
    return list(vocabulary), network.text_embeddings(list(vocabulary), tokenizer)


def probe_accuracy(x: np.ndarray, labels: np.ndarray, settings: ConceptSettings) -> float:
    """Cross-validated accuracy of a logistic-regression probe of `labels` from `x`."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
    return float(cross_val_score(model, x, labels, cv=folds).mean())


def analyse(store: ActivationStore, vocabulary: Sequence[str], dictionary: np.ndarray,
            settings: ConceptSettings) -> dict[str, Any]:
    """The sweep over l1 (rows), the top concepts per sound at `report_l1`, and the dense probe accuracy."""
    sounds = np.arange(len(store))
    if settings.max_sounds is not None and settings.max_sounds < len(store):
        sounds = np.sort(np.random.default_rng(settings.seed).choice(sounds, size=settings.max_sounds, replace=False))
    embeddings = clip_embeddings(store, settings.layer, sounds)
    if embeddings.shape[1] != dictionary.shape[1]:
        raise StoreError(f"layer {settings.layer} has {embeddings.shape[1]} dimensions, the concepts' embeddings "
                         f"{dictionary.shape[1]}: the layer must live in the text encoder's space")
    audio, _ = prepare(embeddings)
    text, _ = prepare(dictionary)
    labels = store.column(settings.factor)[sounds] if settings.factor else None
    rows, tops = [], []
    for l1 in sorted(set([*settings.l1s, settings.report_l1])):
        weights = decompose(audio, text, l1)
        cosine = reconstruction_cosine(audio, weights, text)
        row = {"l1": l1, "nonzero": float((weights > 0).sum(1).mean()), "cosine": float(cosine.mean())}
        if labels is not None:
            row["sparse_accuracy"] = probe_accuracy(weights, labels, settings)
        rows.append(row)
        if l1 == settings.report_l1:
            tops = top_concepts(weights, vocabulary, settings.top)
    dense = probe_accuracy(audio, labels, settings) if labels is not None else None
    return {"rows": rows, "top": tops, "dense_accuracy": dense, "concepts": len(vocabulary), "sounds": sounds}


def concepts_figure(result: dict[str, Any], factor: Optional[str] = None):
    """Reconstruction cosine against sparsity, and (with a factor) probe accuracy of sparse weights against l1."""
    import matplotlib.pyplot as plt

    rows = result["rows"]
    panels = 2 if result["dense_accuracy"] is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 3.5), squeeze=False)
    ax = axes[0][0]
    ax.plot([r["nonzero"] for r in rows], [r["cosine"] for r in rows], marker="o")
    for r in rows:
        ax.annotate(f"l1={r['l1']:g}", (r["nonzero"], r["cosine"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("concepts per sound (mean, log scale)")
    ax.set_ylabel("reconstruction cosine")
    ax.grid(alpha=0.3)
    if panels == 2:
        ax = axes[0][1]
        ax.plot([r["l1"] for r in rows], [r["sparse_accuracy"] for r in rows], marker="o", label="sparse concept weights")
        ax.axhline(result["dense_accuracy"], color="grey", linestyle="--", label="dense embeddings")
        ax.set_xlabel("l1")
        ax.set_ylabel(f"{factor} accuracy (linear probe, CV)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_concepts(result: dict[str, Any], store: ActivationStore, out: Path, settings: ConceptSettings) -> list[Path]:
    """sparsity.csv, top_concepts.csv (a row per sound) and concepts.png in `out`."""

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sparsity.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result["rows"][0]) + ["dense_accuracy"])
        writer.writeheader()
        writer.writerows({**row, "dense_accuracy": result["dense_accuracy"]} for row in result["rows"])
    paths = store.column("path")
    with open(out / "top_concepts.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "path", "l1", "concepts"])
        writer.writerows([i, paths[i], settings.report_l1, "; ".join(f"{name} {weight:.3f}" for name, weight in top)]
                         for i, top in zip(result["sounds"], result["top"]))
    figure = save_figure(concepts_figure(result, settings.factor), out / "concepts.png")
    return [out / "sparsity.csv", out / "top_concepts.csv", figure]


def track_concepts(result: dict[str, Any], out: Path, name: str, settings: dict, factor: Optional[str] = None,
                   backend: str = "wandb") -> None:
    """Log the sweep (one step per l1) and the figure to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    for step, row in enumerate(result["rows"]):
        tracking.log({f"concepts/{k}": v for k, v in row.items()}, step, float(step))
    tracking.log_figures({"concepts": concepts_figure(result, factor)}, len(result["rows"]), "concepts")
    tracking.finish()
