"""`audiointerp analyze probe`: linear probes per layer, with transfer across a property (Bost et al. 2024).

Per layer: L2-regularised multinomial logistic regression on the standardised activations, C chosen by inner
cross-validation on the training sounds (`LogisticRegressionCV`). Wide layers are first written in a basis of
the training sounds' span (`row_space`): an exact change of coordinates for an L2-penalised model, which makes the
solver's cost depend on the number of sounds rather than the layer's width. The training sounds are those where
`train_where` holds, the test sounds those where `test_where` holds (e.g. train on hollow objects, test on solid
ones); the two sets must not share a sound. The no-transfer baseline trains and tests on a random split of the
same sizes drawn from both sets together. Chance is the accuracy of always answering the training set's
majority class. Accuracies get bootstrap confidence intervals over the test sounds.

Conditions: `column==value`, `column!=value`, `column in a,b,c`, `column not in a,b`, joined by `&`.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.evaluation.plots import save_figure
from audiointerp.train.tracking import analysis_tracking

# scikit-learn >= 1.9 asks for the pure-L2 penalty as l1_ratios=(0,) and has simplified fitted attributes
L2_ONLY = ({"l1_ratios": (0.0,), "use_legacy_attributes": False}
           if "use_legacy_attributes" in inspect.signature(LogisticRegressionCV).parameters else {})
CONDITION = re.compile(r"^\s*(?P<column>[\w.-]+)\s*(?P<op>==|!=|\bnot in\b|\bin\b)\s*(?P<value>.+?)\s*$")


def select(store: ActivationStore, where: str) -> np.ndarray:
    """Store indices of the clips where the condition holds (see the module docstring)."""
    keep = np.ones(len(store), dtype=bool)
    for part in where.split("&"):
        match = CONDITION.match(part)
        if not match:
            raise StoreError(f"condition {part.strip()!r}: write column==value, column!=value, column in a,b or "
                             "column not in a,b (joined by &)")
        values = store.column(match["column"])
        op, value = match["op"], match["value"]
        if op in ("==", "!="):
            hit = values == value
        else:
            hit = np.isin(values, [v.strip() for v in value.split(",")])
        keep &= hit if op in ("==", "in") else ~hit
    return np.flatnonzero(keep)


@dataclass
class Settings:
    """What `analyze probe` fits and reports (see the module docstring)."""

    factor: str = field(metadata={"help": "the clip-table column to predict (e.g. material)"})
    train_where: Optional[str] = field(default=None, metadata={
        "help": "condition of the training sounds, e.g. 'hollow==1' or 'action in tapping,rubbing' (default: a random "
                "80/20 split, no transfer)"})
    test_where: Optional[str] = field(default=None, metadata={
        "help": "condition of the test sounds (disjoint from the training ones)"})
    layers: Optional[Sequence[str]] = field(default=None, metadata={
        "help": "comma-separated layers (default: every layer of the store)", "many": "comma"})
    cs: int = field(default=10, metadata={
        "help": "C values tried by the inner cross-validation, log-spaced from 1e-4 to 1e4"})
    inner_folds: int = field(default=5, metadata={"help": "inner cross-validation folds that choose C"})
    bootstrap: int = field(default=1000, metadata={"help": "resamples of the test sounds for 95% intervals"})
    max_sounds: Optional[int] = field(default=None, metadata={
        "help": "draw at most this many of the store's sounds at random first (default: all)"})
    max_iter: int = field(default=1000, metadata={"help": "solver iterations per fit"})
    seed: int = field(default=0, metadata={"help": "the sound sample, the baseline split, the folds, the bootstrap"})


ProbeSettings = Settings  # the name before every analysis had a `Settings`

INPUTS = (Input("store", "an activation store"),)
DEFAULT_OUT = "STORE/probe-FACTOR"


def splits(store: ActivationStore, settings: Settings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"transfer": (train, test), "no transfer": (train, test)} store indices; without conditions only the
    random split."""
    rng = np.random.default_rng(settings.seed)
    universe = np.arange(len(store))
    if settings.max_sounds is not None and settings.max_sounds < len(store):
        universe = np.sort(rng.choice(universe, size=settings.max_sounds, replace=False))
    if settings.train_where is None or settings.test_where is None:
        if settings.train_where or settings.test_where:
            raise StoreError("give both --train-where and --test-where (or neither, for a random 80/20 split)")
        order = rng.permutation(universe)
        cut = len(order) * 4 // 5
        return {"no transfer": (np.sort(order[:cut]), np.sort(order[cut:]))}
    train = np.intersect1d(select(store, settings.train_where), universe)
    test = np.intersect1d(select(store, settings.test_where), universe)
    shared = np.intersect1d(train, test)
    if len(shared):
        raise StoreError(f"{len(shared)} sounds satisfy both conditions ({settings.train_where!r}, "
                         f"{settings.test_where!r}): a transfer test must not test on training sounds")
    for name, part in (("train", train), ("test", test)):
        if len(part) < 2:
            raise StoreError(f"--{name}-where selects {len(part)} sounds")
    pool = rng.permutation(np.concatenate([train, test]))
    return {"transfer": (train, test), "no transfer": (np.sort(pool[:len(train)]), np.sort(pool[len(train):]))}


def row_space(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in coordinates of an orthonormal basis of the training rows' span, when there are fewer rows than
    features. An L2-penalised linear model's weights lie in that span (representer theorem), so its fit and its
    predictions are unchanged, and the solver works in n instead of d dimensions."""
    if train.shape[1] <= train.shape[0]:
        return train, test
    values, vectors = np.linalg.eigh(train @ train.T)  # the Gram matrix: one product, cheaper than an SVD
    keep = values > values.max() * 1e-12
    scale = vectors[:, keep] / np.sqrt(values[keep])  # basis = train^T U L^(-1/2), orthonormal
    return train @ train.T @ scale, test @ train.T @ scale


def probe_layer(x: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                settings: Settings) -> dict[str, Any]:
    """Fit on `train`, score on `test` (positions into x): accuracy, its interval, chance, and the chosen C."""
    classes = np.unique(labels[train])
    if len(classes) < 2:
        raise StoreError(f"the training sounds hold a single {settings.factor}: nothing to learn")
    folds = min(settings.inner_folds, int(np.unique(labels[train], return_counts=True)[1].min()))
    scaler = StandardScaler().fit(x[train])
    x_train, x_test = row_space(scaler.transform(x[train]), scaler.transform(x[test]))
    model = LogisticRegressionCV(Cs=settings.cs, cv=max(2, folds), scoring="accuracy", max_iter=settings.max_iter,
                                 random_state=settings.seed, **L2_ONLY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, labels[train])
    correct = model.predict(x_test) == labels[test]
    values, counts = np.unique(labels[train], return_counts=True)
    majority = values[counts.argmax()]
    rng = np.random.default_rng(settings.seed)
    resampled = [correct[rng.integers(0, len(correct), len(correct))].mean() for _ in range(settings.bootstrap)]
    out = {"accuracy": float(correct.mean()), "chance": float((labels[test] == majority).mean()),
           "C": float(np.atleast_1d(model.C_)[0]), "train_sounds": len(train), "test_sounds": len(test)}
    if settings.bootstrap:
        out["accuracy_low"], out["accuracy_high"] = (float(np.percentile(resampled, q)) for q in (2.5, 97.5))
    return out


def probe(store: ActivationStore, settings: Settings, progress: bool = True) -> list[dict[str, Any]]:
    """A row per layer and split: accuracy with its interval, chance, the chosen C."""
    labels = store.column(settings.factor)
    layers = list(settings.layers or store.layers)
    rows = []
    split = splits(store, settings)
    used = np.unique(np.concatenate([part for pair in split.values() for part in pair]))
    position = {int(clip): k for k, clip in enumerate(used)}
    for layer in tqdm(layers, desc="probe", unit="layer", disable=not progress):
        x = store.load(layer, used).reshape(len(used), -1).astype(np.float64)
        for name, (train, test) in split.items():
            result = probe_layer(x, labels[used], np.array([position[int(c)] for c in train]),
                                 np.array([position[int(c)] for c in test]), settings)
            rows.append({"layer": layer, "depth": (layers.index(layer) + 1) / len(layers), "split": name,
                         "factor": settings.factor, **result})
    return rows


def probe_figure(rows: list[dict[str, Any]], title: str = ""):
    """Accuracy against layer for each split, with intervals, and chance (the probing paper's Fig. 2)."""
    import matplotlib.pyplot as plt

    layers = list(dict.fromkeys(row["layer"] for row in rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(layers) + 2.5), 3.6))
    positions = np.arange(len(layers))
    for split in dict.fromkeys(row["split"] for row in rows):
        mine = [row for row in rows if row["split"] == split]
        accuracy = np.array([row["accuracy"] for row in mine])
        if "accuracy_low" in mine[0]:
            error = np.array([[a - row["accuracy_low"], row["accuracy_high"] - a] for a, row in zip(accuracy, mine)]).T
        else:
            error = None
        ax.errorbar(positions, accuracy, yerr=error, marker="o", markersize=4, capsize=3, label=split)
        ax.plot(positions, [row["chance"] for row in mine], linestyle=":", color="grey",
                label="chance (majority class)" if split == "transfer" or len(set(r["split"] for r in rows)) == 1 else None)
    ax.set_xticks(positions, layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{rows[0]['factor']} accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_probe(rows: list[dict[str, Any]], out: Path, title: str = "") -> list[Path]:
    """probe.csv and probe.png in `out`."""
    return [write_csv(out / "probe.csv", rows), save_figure(probe_figure(rows, title), out / "probe.png")]


def track_probe(rows: list[dict[str, Any]], out: Path, name: str, settings: dict, title: str = "",
                backend: str = "wandb") -> None:
    """Log the accuracies (one step per layer) and the figure to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    for step, layer in enumerate(dict.fromkeys(row["layer"] for row in rows)):
        tracking.log({f"probe/{row['split']}": row["accuracy"] for row in rows if row["layer"] == layer}, step, float(step))
    tracking.log_figures({"probe": probe_figure(rows, title)}, len(rows), "probe")
    tracking.finish()


@dataclass
class Result(AnalysisResult):
    """`run`'s answer: `rows` are probe.csv's (a row per layer and split)."""

    settings: Settings
    title: str  # the figure's title


def run(settings: Settings, store: str | Path | ActivationStore, out: Optional[Path] = None, tracking: str = "wandb",
        progress: bool = True, name: Optional[str] = None) -> Result:
    """Probe every layer, write probe.csv and probe.png to `out` (default: STORE/probe-FACTOR), and track them in
    a W&B run `name` (default: probe-STORE-FACTOR) of job type analysis (`tracking="none"`: metrics.jsonl only)."""
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    rows = probe(store, settings, progress=progress)
    out = Path(out or store.folder / f"probe-{settings.factor}")
    title = (f"{settings.factor}: train {settings.train_where}, test {settings.test_where}" if settings.train_where
             else settings.factor)
    files = write_probe(rows, out, title)
    track_probe(rows, out, name or f"probe-{store.folder.name}-{settings.factor}", asdict(settings), title, tracking)
    return Result(rows, out, files, settings, title)


def summary(result: Result) -> str:
    """A line per layer and split (accuracy, interval, chance, C, sizes), then the folder."""
    lines = []
    for row in result.rows:
        interval = f" [{row['accuracy_low']:.3f}, {row['accuracy_high']:.3f}]" if "accuracy_low" in row else ""
        lines.append(f"{row['layer']} {row['split']}: accuracy {row['accuracy']:.3f}{interval}, chance {row['chance']:.3f} "
                     f"(C {row['C']:.3g}; {row['train_sounds']} train / {row['test_sounds']} test sounds)")
    lines.append(f"wrote {result.out}")
    return "\n".join(lines)
