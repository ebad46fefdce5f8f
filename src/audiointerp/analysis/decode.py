"""`audiointerp analyze decode`: how well each layer of a store encodes each factor (Dick et al.).

Per layer and factor: n random clips (default 3,000), activations flattened, StandardScaler -> PCA(64) ->
StandardScaler -> KNN (k = 10), scored by 10-fold cross-validation. The folds are the same for every layer and
factor (stratified on the factors' joint classes), so scores pair up, and each fold's transform, fitted on its
training part only, serves every factor. Paired t-tests over the folds compare the first, the best and the last layer, Bonferroni-corrected.
Writes `decoding.csv` (a row per layer, factor and fold), `decoding_summary.csv`, `tests.csv` and
`decoding.png` (accuracy against layer with error bars, the best layer marked).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from scipy import stats
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.evaluation.plots import save_figure
from audiointerp.train.tracking import analysis_tracking


@dataclass
class Settings:
    """What `analyze decode` computes (see the module docstring)."""

    factors: Sequence[str] = field(metadata={"help": "a clip-table column to decode, e.g. material (repeatable)",
                                             "flag": "--factor", "many": "append"})
    layers: Optional[Sequence[str]] = field(default=None, metadata={
        "help": "comma-separated layers (default: every layer of the store, in order)", "many": "comma"})
    instances: int = field(default=3000, metadata={"help": "random clips per layer (all when fewer)"})
    components: int = field(default=64, metadata={"help": "PCA components (capped by the data)"})
    neighbors: int = field(default=10, metadata={"help": "k of the KNN classifier"})
    folds: int = field(default=10, metadata={"help": "cross-validation folds"})
    alpha: float = field(default=0.05, metadata={"help": "family-wise significance level (Bonferroni)"})
    seed: int = field(default=0, metadata={"help": "the clip sample and the folds"})


DecodeSettings = Settings  # the name before every analysis had a `Settings`

INPUTS = (Input("store", "an activation store (audiointerp extract)"),)
DEFAULT_OUT = "STORE/decoding"


@dataclass
class DecodeResult:
    scores: dict[str, dict[str, np.ndarray]]  # factor -> layer -> fold accuracies
    best: dict[str, str]  # factor -> best layer (highest mean accuracy)
    tests: list[dict[str, object]]  # paired t-tests: factor, pair, t, p, p_bonferroni, significant
    seconds_per_layer: float


def _folds(labels: dict[str, np.ndarray], settings: Settings) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The cross-validation folds, shared by every layer and factor: stratified on the factors' joint classes when
    each has at least `folds` clips, else on the first factor."""
    joint = np.array(["|".join(values) for values in zip(*labels.values())])
    _, counts = np.unique(joint, return_counts=True)
    strata = joint if counts.min() >= settings.folds else next(iter(labels.values()))
    yield from StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed).split(strata, strata)


def decode(store: ActivationStore, settings: Settings, progress: bool = True) -> DecodeResult:
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


def summary_rows(result: DecodeResult, layers: Sequence[str]) -> list[dict[str, Any]]:
    """A row per factor and layer: mean and standard deviation of the fold accuracies, and whether it is the best."""
    return [{"factor": factor, "layer": layer, "mean_accuracy": float(per_layer[layer].mean()),
             "std_accuracy": float(per_layer[layer].std(ddof=1)), "best": layer == result.best[factor]}
            for factor, per_layer in result.scores.items() for layer in layers]


def write_decoding(result: DecodeResult, layers: Sequence[str], out: Path) -> list[Path]:
    """decoding.csv (per fold), decoding_summary.csv, tests.csv and decoding.png in `out`."""
    folds = [{"factor": factor, "layer": layer, "fold": fold, "accuracy": float(score)}
             for factor, per_layer in result.scores.items() for layer in layers for fold, score in enumerate(per_layer[layer])]
    return [write_csv(out / "decoding.csv", folds, ["factor", "layer", "fold", "accuracy"]),
            write_csv(out / "decoding_summary.csv", summary_rows(result, layers)),
            write_csv(out / "tests.csv", result.tests, None if result.tests else ["factor"]),
            save_figure(decoding_figure(result, layers), out / "decoding.png")]


def track_decoding(result: DecodeResult, layers: Sequence[str], out: Path, name: str, settings: dict,
                   backend: str = "wandb") -> None:
    """Log the curves (one step per layer) and the figure to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    for step, layer in enumerate(layers):
        tracking.log({f"decode/{f}": float(result.scores[f][layer].mean()) for f in result.scores}, step, float(step))
    tracking.log_figures({"decoding": decoding_figure(result, layers)}, len(layers), "decode")
    tracking.finish()


@dataclass
class Result(AnalysisResult):
    """`run`'s answer: `rows` are decoding_summary.csv's (a row per factor and layer)."""

    settings: Settings
    layers: list[str]  # the layers decoded, in order
    decoding: DecodeResult  # the fold accuracies, the best layers and the t-tests


def run(settings: Settings, store: str | Path | ActivationStore, out: Optional[Path] = None, tracking: str = "wandb",
        progress: bool = True, name: Optional[str] = None) -> Result:
    """Decode, write the tables and the figure to `out` (default: STORE/decoding), and track them in a W&B run
    `name` (default: decode-STORE) of job type analysis (`tracking="none"`: metrics.jsonl only)."""
    store = store if isinstance(store, ActivationStore) else ActivationStore(store)
    decoding = decode(store, settings, progress=progress)
    layers = list(settings.layers or store.layers)
    out = Path(out or store.folder / "decoding")
    files = write_decoding(decoding, layers, out)
    track_decoding(decoding, layers, out, name or f"decode-{store.folder.name}", asdict(settings), tracking)
    return Result(summary_rows(decoding, layers), out, files, settings, layers, decoding)


def summary(result: Result) -> str:
    """Per factor its best layer and mean accuracies, then the t-tests, the time per layer and the folder."""
    decoding, lines = result.decoding, []
    for factor in result.settings.factors:
        means = ", ".join(f"{layer} {decoding.scores[factor][layer].mean():.3f}" for layer in result.layers)
        lines.append(f"{factor}: best {decoding.best[factor]}; {means}")
    for row in decoding.tests:
        lines.append(f"{row['factor']}: {row['layer_b']} vs {row['layer_a']}: t({row['df']}) = {row['t']:.2f}, "
                     f"p = {row['p']:.3g}, Bonferroni p = {row['p_bonferroni']:.3g}")
    lines.append(f"{decoding.seconds_per_layer:.1f} s per layer; wrote {result.out}")
    return "\n".join(lines)
