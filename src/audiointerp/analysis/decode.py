"""`audiointerp analyze decode`: how well each layer of a store encodes each factor (Dick et al.).

Per layer and factor: n random clips (default 3,000), activations flattened, StandardScaler -> PCA(64) ->
StandardScaler -> KNN (k = 10), scored by 10-fold cross-validation. The folds are the same for every layer and
factor (stratified on the factors' joint classes), so scores pair up, and each fold's transform, fitted on its
training part only, serves every factor. Paired t-tests over the folds compare the first, the best and the last layer, Bonferroni-corrected.
Writes `decoding.csv` (a row per layer, factor and fold), `decoding_summary.csv`, `tests.csv` and
`decoding.png` (accuracy against layer with error bars, the best layer marked).
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.evaluation.plots import save_figure
from audiointerp.train.tracking import analysis_tracking


@dataclass
class DecodeSettings:
    factors: Sequence[str]  # clip-table columns to decode (e.g. material, action)
    layers: Optional[Sequence[str]] = None  # default: every layer of the store, in order
    instances: int = 3000  # random clips per layer (all when fewer)
    components: int = 64  # PCA components (capped by the data)
    neighbors: int = 10  # k of the KNN classifier
    folds: int = 10  # cross-validation folds
    alpha: float = 0.05  # family-wise significance level (Bonferroni)
    seed: int = 0  # the clip sample and the folds


@dataclass
class DecodeResult:
    scores: dict[str, dict[str, np.ndarray]]  # factor -> layer -> fold accuracies
    best: dict[str, str]  # factor -> best layer (highest mean accuracy)
    tests: list[dict[str, object]]  # paired t-tests: factor, pair, t, p, p_bonferroni, significant
    seconds_per_layer: float


def _folds(labels: dict[str, np.ndarray], settings: DecodeSettings) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The cross-validation folds, shared by every layer and factor: stratified on the factors' joint classes when
    each has at least `folds` clips, else on the first factor."""
    joint = np.array(["|".join(values) for values in zip(*labels.values())])
    _, counts = np.unique(joint, return_counts=True)
    strata = joint if counts.min() >= settings.folds else next(iter(labels.values()))
    yield from StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed).split(strata, strata)


def decode(store: ActivationStore, settings: DecodeSettings, progress: bool = True) -> DecodeResult:
    """Cross-validated KNN accuracy per layer and factor, and the t-tests."""
    layers = list(settings.layers or store.layers)
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(len(store), size=min(settings.instances, len(store)), replace=False))
    labels = {f: store.column(f)[sample] for f in settings.factors}
    for factor, values in labels.items():
        if len(set(values)) < 2:
            raise StoreError(f"factor {factor!r} has a single value in the sampled clips: nothing to decode")
    scores: dict[str, dict[str, np.ndarray]] = {f: {} for f in settings.factors}
    splits = list(_folds(labels, settings))
    started = time.perf_counter()
    for layer in tqdm(layers, desc="decode", unit="layer", disable=not progress):
        x = store.load(layer, sample).reshape(len(sample), -1)  # float32: sklearn's PCA keeps it, twice as fast
        components = min(settings.components, x.shape[1], min(len(train) for train, _ in splits) - 1)
        fold_scores = {f: [] for f in settings.factors}
        for train, test in splits:  # the transform is fitted once per fold, on its training part, for every factor
            transform = make_pipeline(StandardScaler(), PCA(components, random_state=settings.seed), StandardScaler())
            x_train, x_test = transform.fit_transform(x[train]), transform.transform(x[test])
            for factor in settings.factors:
                knn = KNeighborsClassifier(settings.neighbors).fit(x_train, labels[factor][train])
                fold_scores[factor].append(knn.score(x_test, labels[factor][test]))
        for factor in settings.factors:
            scores[factor][layer] = np.array(fold_scores[factor])
    seconds_per_layer = (time.perf_counter() - started) / max(1, len(layers))
    best = {f: max(layers, key=lambda layer: scores[f][layer].mean()) for f in settings.factors}
    tests = []
    for factor in settings.factors:
        pairs = [(layers[0], best[factor]), (best[factor], layers[-1]), (layers[0], layers[-1])]
        pairs = [p for p in dict.fromkeys(pairs) if p[0] != p[1]]
        for a, b in pairs:
            difference = scores[factor][b] - scores[factor][a]
            # equal scores in every fold: no difference (scipy would return nan)
            t, p = stats.ttest_rel(scores[factor][b], scores[factor][a]) if np.ptp(difference) or difference.any() else (0.0, 1.0)
            if not np.isfinite(t):  # a constant non-zero difference: as certain as the folds allow
                t, p = float(np.sign(difference.mean()) * np.inf), 0.0
            tests.append({"factor": factor, "layer_a": a, "layer_b": b, "t": float(t), "p": float(p),
                          "df": settings.folds - 1})
    for row in tests:  # Bonferroni over every test made
        row["p_bonferroni"] = min(1.0, float(row["p"]) * len(tests))
        row["significant"] = bool(row["p_bonferroni"] < settings.alpha)
    return DecodeResult(scores, best, tests, seconds_per_layer)


def decoding_figure(result: DecodeResult, layers: Sequence[str]):
    """Mean accuracy ± standard deviation over folds against layer, one line per factor, best layers marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(layers) + 2.0), 3.6))
    positions = np.arange(len(layers))
    for factor, per_layer in result.scores.items():
        means = np.array([per_layer[layer].mean() for layer in layers])
        spread = np.array([per_layer[layer].std(ddof=1) for layer in layers])
        line = ax.errorbar(positions, means, yerr=spread, marker="o", markersize=4, capsize=3, label=factor)
        best = layers.index(result.best[factor])
        ax.scatter([best], [means[best]], s=120, facecolors="none", edgecolors=line[0].get_color(), linewidths=1.5)
    ax.set_xticks(positions, layers, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("KNN accuracy (10-fold CV)")
    ax.set_xlabel("layer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_decoding(result: DecodeResult, layers: Sequence[str], out: Path) -> list[Path]:
    """decoding.csv (per fold), decoding_summary.csv, tests.csv and decoding.png in `out`."""

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "decoding.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["factor", "layer", "fold", "accuracy"])
        for factor, per_layer in result.scores.items():
            for layer in layers:
                writer.writerows([factor, layer, fold, float(score)] for fold, score in enumerate(per_layer[layer]))
    with open(out / "decoding_summary.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["factor", "layer", "mean_accuracy", "std_accuracy", "best"])
        for factor, per_layer in result.scores.items():
            for layer in layers:
                writer.writerow([factor, layer, float(per_layer[layer].mean()), float(per_layer[layer].std(ddof=1)),
                                 layer == result.best[factor]])
    with open(out / "tests.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(result.tests[0]) if result.tests else ["factor"])
        writer.writeheader()
        writer.writerows(result.tests)
    figure = save_figure(decoding_figure(result, layers), out / "decoding.png")
    return [out / "decoding.csv", out / "decoding_summary.csv", out / "tests.csv", figure]


def track_decoding(result: DecodeResult, layers: Sequence[str], out: Path, name: str, settings: dict,
                   backend: str = "wandb") -> None:
    """Log the curves (one step per layer) and the figure to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    for step, layer in enumerate(layers):
        tracking.log({f"decode/{f}": float(result.scores[f][layer].mean()) for f in result.scores}, step, float(step))
    tracking.log_figures({"decoding": decoding_figure(result, layers)}, len(layers), "decode")
    tracking.finish()
