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

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.datasets.embeddings import glove_6b_50d, load_word_vectors, word_vector_dictionary
from audiointerp.datasets.store import ActivationStore, StoreError, clip_embeddings
from audiointerp.datasets.vocabulary import audio_concepts
from audiointerp.evaluation.plots import save_figure
from audiointerp.evaluation.sparse_coding import decompose, prepare, reconstruction_cosine, top_concepts
from audiointerp.models import build
from audiointerp.models.clap import load_pretrained
from audiointerp.train.tasks.concepts_task import run_vectors
from audiointerp.train.tracking import analysis_tracking

__all__ = ["ConceptSettings", "Result", "Settings", "analyse", "clap_dictionary", "clip_embeddings", "run", "run_vectors", "summary",
           "word_vector_dictionary"]


ENCODERS = ("word-vectors", "clap")


@dataclass
class Settings:
    """What `analyze concepts` decomposes, over which concepts, and what it reports (see the module docstring)."""

    layer: str = field(metadata={"help": "the store layer holding the audio embeddings"})
    l1s: Sequence[float] = field(default_factory=lambda: [0.0, 0.01, 0.05, 0.1, 0.15], metadata={
        "help": "sparsity penalties", "flag": "--l1", "many": "+"})
    report_l1: float = field(default=0.05, metadata={"help": "the l1 whose top concepts are listed per sound"})
    top: int = field(default=5, metadata={"help": "concepts listed per sound"})
    factor: Optional[str] = field(default=None, metadata={
        "help": "a clip-table column probed from sparse weights and from dense embeddings"})
    folds: int = field(default=5, metadata={"help": "cross-validation folds of that probe"})
    max_sounds: Optional[int] = field(default=None, metadata={
        "help": "at most this many sounds, drawn at random (default: all)"})
    seed: int = field(default=0, metadata={"help": "the sound sample and the probe's folds"})
    vocabulary: Optional[str] = field(default=None, metadata={
        "help": "concepts, one per line (default: the shipped audio vocabulary)"})
    encoder: str = field(default="word-vectors", metadata={
        "help": "how concepts are embedded: word vectors, or CLAP's text tower (the store then holds CLAP's embedding "
                "layer)", "choices": ENCODERS})
    vectors: str = field(default="glove-6b-50d", metadata={
        "help": "glove-6b-50d (audiointerp[glove]), a word-vector file, or a semDNN run or export folder (its own "
                "dictionary)"})
    clap: Optional[str] = field(default=None, metadata={
        "help": "with --encoder clap: a local CLAP folder (model and processor)"})


ConceptSettings = Settings  # the name before every analysis had a `Settings`

INPUTS = (Input("store", "an activation store whose --layer lives in the word vectors' space (e.g. a semDNN's "
                "output)"),)
DEFAULT_OUT = "STORE/concepts"


def clap_dictionary(vocabulary: Sequence[str], network, tokenizer) -> tuple[list[str], np.ndarray]:
    """(the vocabulary, its CLAP text embeddings [K, D]) through a `CLAPAudio` network's text tower."""
    return list(vocabulary), network.text_embeddings(list(vocabulary), tokenizer)


def probe_accuracy(x: np.ndarray, labels: np.ndarray, settings: Settings) -> float:
    """Cross-validated accuracy of a logistic-regression probe of `labels` from `x`."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
    return float(cross_val_score(model, x, labels, cv=folds).mean())


def analyse(store: ActivationStore, vocabulary: Sequence[str], dictionary: np.ndarray,
            settings: Settings) -> dict[str, Any]:
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


def write_concepts(result: dict[str, Any], store: ActivationStore, out: Path, settings: Settings) -> list[Path]:
    """sparsity.csv, top_concepts.csv (a row per sound) and concepts.png in `out`."""
    paths = store.column("path")
    tops = [{"index": i, "path": paths[i], "l1": settings.report_l1,
             "concepts": "; ".join(f"{name} {weight:.3f}" for name, weight in top)}
            for i, top in zip(result["sounds"], result["top"])]
    return [write_csv(out / "sparsity.csv", [{**row, "dense_accuracy": result["dense_accuracy"]} for row in result["rows"]],
                      list(result["rows"][0]) + ["dense_accuracy"]),
            write_csv(out / "top_concepts.csv", tops, ["index", "path", "l1", "concepts"]),
            save_figure(concepts_figure(result, settings.factor), out / "concepts.png")]


def track_concepts(result: dict[str, Any], out: Path, name: str, settings: dict, factor: Optional[str] = None,
                   backend: str = "wandb") -> None:
    """Log the sweep (one step per l1) and the figure to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    for step, row in enumerate(result["rows"]):
        tracking.log({f"concepts/{k}": v for k, v in row.items()}, step, float(step))
    tracking.log_figures({"concepts": concepts_figure(result, factor)}, len(result["rows"]), "concepts")
    tracking.finish()


def concept_dictionary(settings: Settings) -> tuple[list[str], np.ndarray]:
    """(the concepts that have an embedding, their embeddings [K, D]): the vocabulary (`settings.vocabulary`, or
    the shipped one) through CLAP's text tower, a semDNN run's or export's own dictionary, GloVe or a word-vector
    file, as `settings.encoder` and `settings.vectors` say."""
    concepts = audio_concepts(settings.vocabulary)
    if settings.encoder not in ENCODERS:
        raise ValueError(f"encoder {settings.encoder!r}; choose one of {', '.join(ENCODERS)}")
    if settings.encoder == "clap":
        if not settings.clap:
            raise ValueError("--encoder clap needs --clap FOLDER (a local CLAP model with its processor)")
        network = build("clap", pretrained=settings.clap)
        return clap_dictionary(concepts, network, load_pretrained(settings.clap, "ClapProcessor").tokenizer)
    if Path(settings.vectors).is_dir():  # a semDNN run or export: its own dictionary and tokenizer
        vectors, words = run_vectors(settings.vectors)
        return word_vector_dictionary(concepts, vectors, words)
    vectors = glove_6b_50d() if settings.vectors == "glove-6b-50d" else load_word_vectors(settings.vectors)
    return word_vector_dictionary(concepts, vectors)


@dataclass
class Result(AnalysisResult):
    """`run`'s answer: `rows` are the sweep over l1 (sparsity.csv without its dense_accuracy column)."""

    settings: Settings
    top: list[list[tuple[str, float]]]  # per sound, its top concepts and weights at `settings.report_l1`
    dense_accuracy: Optional[float]  # the probe on the dense embeddings (None without a factor)
    concepts: int  # concepts with an embedding
    sounds: np.ndarray  # store indices of the sounds decomposed


def run(settings: Settings, store: str | Path | ActivationStore, out: Optional[Path] = None, tracking: str = "wandb",
        progress: bool = True, name: Optional[str] = None) -> Result:
    """Decompose the layer's embeddings over the concepts' (`concept_dictionary`), write the tables and figure to
    `out` (default: STORE/concepts) and track them in a W&B run `name` (default: concepts-STORE) of job type
    analysis (`tracking="none"`: metrics.jsonl only). `progress` is accepted for the common shape (no bars here)."""
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    vocabulary, dictionary = concept_dictionary(settings)
    result = analyse(store, vocabulary, dictionary, settings)
    out = Path(out or store.folder / "concepts")
    files = write_concepts(result, store, out, settings)
    track_concepts(result, out, name or f"concepts-{store.folder.name}", asdict(settings), settings.factor, tracking)
    return Result(result["rows"], out, files, settings, result["top"], result["dense_accuracy"], result["concepts"],
                  result["sounds"])


def summary(result: Result) -> str:
    """Concepts and sounds, a line per l1, the dense probe, the first five sounds' top concepts, the folder."""
    factor = result.settings.factor
    lines = [f"{result.concepts} concepts with vectors, {len(result.sounds)} sounds"]
    for row in result.rows:
        accuracy = f", {factor} accuracy {row['sparse_accuracy']:.3f}" if "sparse_accuracy" in row else ""
        lines.append(f"l1 {row['l1']:g}: {row['nonzero']:.1f} concepts per sound, reconstruction cosine {row['cosine']:.3f}{accuracy}")
    if result.dense_accuracy is not None:
        lines.append(f"dense embeddings: {factor} accuracy {result.dense_accuracy:.3f}")
    for index, top in list(zip(result.sounds, result.top))[:5]:
        lines.append(f"sound {index}: " + ", ".join(f"{name} ({weight:.2f})" for name, weight in top))
    lines.append(f"wrote {result.out}")
    return "\n".join(lines)
