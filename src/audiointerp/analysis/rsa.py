"""`audiointerp analyze rsa`: per-layer RSA of stored activations against target RDMs (Bost et al. 2024), in blocks.

Model RDMs are cosine distances between a layer's activations (flattened). Targets (`Target`):

- `factor:<column>`: a clip-table column (e.g. a physical ground truth such as material) as a 0/1 RDM;
- `dissimilarity:<file>`: a behavioural or brain dissimilarity matrix (CSV/TSV/NPY with sound ids, see
  `evaluation.rdm.load_dissimilarities`);
- `responses:<file>[:kl|:mode]`: per-sound response distributions over categories (a CSV: id column, then one
  column per category of counts or probabilities), as a symmetric-KL RDM or a 0/1 RDM of disagreeing modes;
- several targets averaged (`MeanTarget`, `--average`).

Nothing N x N is held: the upper triangle is visited in blocks of row and column sounds (`block_size`), and each
statistic is a sum over pairs accumulated block by block. Pearson's r comes from those sums. Spearman's rho is
Pearson's r of ranks; ranks come from a histogram of all pair values (`rank_bins` bins, mid-rank within a bin:
exact for the ties of discrete RDMs, within about 1/rank_bins of the exact rank otherwise), which costs a
second pass. Bootstrap confidence intervals resample sounds (`bootstrap` replicates): a pair's weight is the
product of its two sounds' counts, pairs of a sound with itself are left out, and the ranks are the full
sample's. Optionally the model RDM is regressed on a spectrogram-distance RDM (Euclidean distance of log-mel
spectrograms) and the residuals are correlated with the target: Pearson's r (the regression refitted in each
bootstrap resample) and Spearman's rho (the residuals of the full sample's regression, ranked through their own
histogram in a further pass, against the target's ranks; resamples reweight those pairs as for Spearman).
"""

from __future__ import annotations

import csv
import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.datasets import load_manifest
from audiointerp.datasets.manifest import ManifestDataset
from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.evaluation.plots import save_figure
from audiointerp.evaluation.rdm import load_dissimilarities
from audiointerp.models.frontends import LogMel
from audiointerp.train.tracking import analysis_tracking

log = logging.getLogger("audiointerp")

EPSILON = 1e-6  # added to response probabilities before the KL divergence (then renormalised)


# --- targets -----------------------------------------------------------------------------------------------------


class Target(ABC):
    """A target RDM over the store's sounds, computed block by block."""

    name: str

    @abstractmethod
    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Dissimilarities [len(rows), len(cols)] between the sounds `rows` and `cols` (positions in the analysis)."""

    @abstractmethod
    def value_range(self) -> tuple[float, float]:
        """The smallest and largest dissimilarity (for the rank histogram)."""


class FactorTarget(Target):
    """0/1 RDM of a clip-table column: 0 for two sounds of the same value."""

    def __init__(self, name: str, values: np.ndarray) -> None:
        self.name, self.values = name, np.asarray(values)

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return (self.values[rows, None] != self.values[None, cols]).astype(np.float64)

    def value_range(self) -> tuple[float, float]:
        return 0.0, 1.0


class MatrixTarget(Target):
    """A dissimilarity matrix already aligned to the analysed sounds."""

    def __init__(self, name: str, matrix: np.ndarray) -> None:
        self.name, self.matrix = name, np.asarray(matrix, dtype=np.float64)

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.matrix[np.ix_(rows, cols)]

    def value_range(self) -> tuple[float, float]:
        return float(self.matrix.min()), float(self.matrix.max())


class ResponsesTarget(Target):
    """Per-sound response distributions [N, K]: symmetric KL divergence, or 0/1 disagreement of the modes."""

    def __init__(self, name: str, distributions: np.ndarray, kind: str = "kl") -> None:
        if kind not in ("kl", "mode"):
            raise ValueError(f"responses RDM kind {kind!r}; choose kl or mode")
        p = np.asarray(distributions, dtype=np.float64)
        if (p < 0).any() or not (p.sum(1) > 0).all():
            raise ValueError(f"{name}: response counts must be non-negative with at least one response per sound")
        p = p / p.sum(1, keepdims=True) + EPSILON
        self.name, self.kind = name, kind
        self.p = p / p.sum(1, keepdims=True)
        self.log_p = np.log(self.p)
        self.entropy_term = (self.p * self.log_p).sum(1)  # sum p log p
        self.mode = self.p.argmax(1)

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.kind == "mode":
            return (self.mode[rows, None] != self.mode[None, cols]).astype(np.float64)
        # KL(p||q) + KL(q||p) = sum p log p + sum q log q - sum p log q - sum q log p
        cross = self.p[rows] @ self.log_p[cols].T + self.log_p[rows] @ self.p[cols].T
        return np.maximum(self.entropy_term[rows, None] + self.entropy_term[None, cols] - cross, 0.0)

    def value_range(self) -> tuple[float, float]:
        if self.kind == "mode":
            return 0.0, 1.0
        high = 0.0
        for start in range(0, len(self.p), 1024):
            rows = np.arange(start, min(start + 1024, len(self.p)))
            high = max(high, float(self.block(rows, np.arange(len(self.p))).max()))
        return 0.0, high


class MeanTarget(Target):
    """The mean of several target RDMs."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.targets = list(targets)
        self.name = "mean(" + ", ".join(t.name for t in self.targets) + ")"

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.mean([t.block(rows, cols) for t in self.targets], axis=0)

    def value_range(self) -> tuple[float, float]:
        ranges = [t.value_range() for t in self.targets]
        return float(np.mean([r[0] for r in ranges])), float(np.mean([r[1] for r in ranges]))


def symmetric_kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p||q) + KL(q||p) of two distributions (smoothed as the responses target does)."""
    return float(ResponsesTarget("pair", np.stack([p, q])).block(np.array([0]), np.array([1]))[0, 0])


def read_responses(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """A responses CSV: (sound ids, categories, counts [N, K]); the first column holds the ids."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 3 or len(rows[0]) < 3:
        raise StoreError(f"{path}: a responses file needs a header (id, two or more categories) and a row per sound")
    header, body = rows[0], rows[1:]
    try:
        counts = np.array([[float(cell) for cell in row[1:]] for row in body])
    except ValueError as err:
        raise StoreError(f"{path}: response counts must be numbers ({err})") from err
    return [row[0] for row in body], header[1:], counts


# --- features, blocks and sums -----------------------------------------------------------------------------------


def block_ranges(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(start, min(start + size, n)) for start in range(0, n, size)]


def upper_pairs(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Mask [rows, cols] of the pairs above the diagonal (row position < column position)."""
    return rows[:, None] < cols[None, :]


class CosineBlocks:
    """Cosine distances between a layer's activations, block by block, read from the store as needed."""

    def __init__(self, store: ActivationStore, layer: str, clips: np.ndarray) -> None:
        self.store, self.layer, self.clips = store, layer, clips
        self._cache: dict[tuple[int, int], np.ndarray] = {}

    def unit(self, positions: np.ndarray) -> np.ndarray:
        key = (int(positions[0]), len(positions))
        if key not in self._cache:
            x = self.store.load(self.layer, self.clips[positions]).reshape(len(positions), -1).astype(np.float64)
            norms = np.linalg.norm(x, axis=1)
            if not (norms > 0).all():
                raise StoreError(f"layer {self.layer}: cosine distance is undefined for all-zero activations "
                                 f"(clips {self.clips[positions][norms == 0][:5].tolist()})")
            if len(self._cache) > 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = x / norms[:, None]
        return self._cache[key]

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return 1.0 - self.unit(rows) @ self.unit(cols).T


class EuclideanBlocks:
    """Euclidean distances between per-sound feature vectors held in memory (e.g. log-mel spectrograms)."""

    def __init__(self, features: np.ndarray) -> None:
        self.x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        self.squared = (self.x**2).sum(1)

    def block(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        d2 = self.squared[rows, None] + self.squared[None, cols] - 2.0 * self.x[rows] @ self.x[cols].T
        return np.sqrt(np.maximum(d2, 0.0))


class RankHistogram:
    """Mid-ranks of all pair values through a fine histogram over a known range."""

    def __init__(self, low: float, high: float, bins: int) -> None:
        self.low, self.high = float(low), float(high) if high > low else float(low) + 1.0
        self.counts = np.zeros(bins, dtype=np.float64)

    def index(self, values: np.ndarray) -> np.ndarray:
        scaled = (values - self.low) / (self.high - self.low) * len(self.counts)
        return np.clip(scaled.astype(np.int64), 0, len(self.counts) - 1)

    def add(self, values: np.ndarray) -> None:
        self.counts += np.bincount(self.index(values), minlength=len(self.counts))

    def ranks(self, values: np.ndarray) -> np.ndarray:
        before = np.cumsum(self.counts) - self.counts
        mid = before + (self.counts + 1.0) / 2.0
        return mid[self.index(values)]


def _weights(n: int, bootstrap: int, seed: int) -> np.ndarray:
    """[1 + bootstrap, n] sound weights: all ones, then the counts of each bootstrap resample of the sounds."""
    rng = np.random.default_rng(seed)
    resampled = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(bootstrap)]
    return np.vstack([np.ones(n), *resampled]).astype(np.float64)


def _weighted_sums(weights: np.ndarray, rows: np.ndarray, cols: np.ndarray, mask: np.ndarray,
                   terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """For each weighting r: sum over masked pairs (a, b) of w_ra w_rb f(a, b), for each term f."""
    left, right = weights[:, rows], weights[:, cols]
    return {name: ((left @ np.where(mask, values, 0.0)) * right).sum(1) for name, values in terms.items()}


def _pearson(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
             sxy: np.ndarray) -> np.ndarray:
    cov = sxy - sx * sy / n
    var_x, var_y = sxx - sx**2 / n, syy - sy**2 / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(var_x * var_y)


# --- the analysis ------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """What `analyze rsa` correlates and how (see the module docstring)."""

    layers: Optional[Sequence[str]] = field(default=None, metadata={
        "help": "comma-separated layers (default: every layer of the store)", "many": "comma"})
    bootstrap: int = field(default=1000, metadata={
        "help": "resamples of the sounds for the confidence intervals (0: none)"})
    confidence: float = field(default=0.95, metadata={"help": "two-sided level of the bootstrap intervals"})
    block_size: int = field(default=1024, metadata={
        "help": "sounds per block of the upper triangle (memory ~ 16 arrays of block^2 float64)"})
    rank_bins: int = field(default=1 << 20, metadata={"help": "histogram bins for Spearman's ranks"})
    seed: int = field(default=0, metadata={"help": "the sound sample and the bootstrap resamples"})
    targets: Sequence[str] = field(default_factory=list, metadata={
        "help": "factor:<column>, dissimilarity:<file>, or responses:<file>[:kl|:mode] (repeatable)",
        "flag": "--target", "many": "append", "required": True})
    average: bool = field(default=False, metadata={"help": "also the mean of the targets' RDMs"})
    spectrogram: bool = field(default=False, metadata={
        "help": "also regress each model RDM on the log-mel spectrogram distances and correlate the residuals"})
    id_column: str = field(default="path", metadata={
        "help": "clip-table column naming the sounds in target files (path: by its file name without extension)"})
    max_sounds: Optional[int] = field(default=None, metadata={
        "help": "at most this many sounds, drawn at random (default: all)"})


RSASettings = Settings  # the name before every analysis had a `Settings`

INPUTS = (Input("stores", "activation stores (one line per store in the figure)", many=True),)
DEFAULT_OUT = "the first STORE/rsa"


def pair_sums(model: Callable[[np.ndarray, np.ndarray], np.ndarray], target: Target, n: int, settings: Settings,
              spectrogram: Optional[EuclideanBlocks] = None, progress: bool = False,
              desc: str = "rsa") -> dict[str, np.ndarray]:
    """Sums over the upper triangle's pairs of the model's (x) and the target's (y) dissimilarities, their
    products, their ranks' (rx, ry) and the spectrogram's (s): each [1 + bootstrap], for the unweighted pairs
    and each bootstrap resample of the sounds."""
    blocks = block_ranges(n, settings.block_size)
    pairs = [(i, j) for i in range(len(blocks)) for j in range(i, len(blocks))]
    model_ranks = RankHistogram(0.0, 2.0, settings.rank_bins)
    target_ranks = RankHistogram(*target.value_range(), settings.rank_bins)
    fit = {"n": 0.0, "x": 0.0, "s": 0.0, "xs": 0.0, "ss": 0.0, "max_s": 0.0}  # the full sample's x ~ a + b s
    for i, j in tqdm(pairs, desc=f"{desc} (ranks)", disable=not progress, leave=False):
        rows, cols = blocks[i], blocks[j]
        mask = upper_pairs(rows, cols)
        x = model(rows, cols)[mask]
        model_ranks.add(x)
        target_ranks.add(target.block(rows, cols)[mask])
        if spectrogram is not None:
            s = spectrogram.block(rows, cols)[mask]
            for name, value in (("n", float(len(x))), ("x", x.sum()), ("s", s.sum()), ("xs", x @ s), ("ss", s @ s)):
                fit[name] += float(value)
            fit["max_s"] = max(fit["max_s"], float(s.max(initial=0.0)))
    residual_ranks, intercept, slope = None, 0.0, 0.0
    if spectrogram is not None:
        var_s = fit["ss"] - fit["s"] ** 2 / fit["n"]
        slope = (fit["xs"] - fit["x"] * fit["s"] / fit["n"]) / var_s if var_s > 0 else 0.0
        intercept = (fit["x"] - slope * fit["s"]) / fit["n"]
        # x in [0, 2] and s in [0, max_s] bound the residuals x - intercept - slope s
        residual_ranks = RankHistogram(-intercept - max(0.0, slope * fit["max_s"]),
                                       2.0 - intercept - min(0.0, slope * fit["max_s"]), settings.rank_bins)
        for i, j in tqdm(pairs, desc=f"{desc} (residual ranks)", disable=not progress, leave=False):
            rows, cols = blocks[i], blocks[j]
            mask = upper_pairs(rows, cols)
            residual_ranks.add((model(rows, cols) - intercept - slope * spectrogram.block(rows, cols))[mask])
    weights = _weights(n, settings.bootstrap, settings.seed)
    sums: dict[str, np.ndarray] = {}
    for i, j in tqdm(pairs, desc=desc, disable=not progress, leave=False):
        rows, cols = blocks[i], blocks[j]
        mask = upper_pairs(rows, cols)
        x, y = model(rows, cols), target.block(rows, cols)
        rx, ry = model_ranks.ranks(x), target_ranks.ranks(y)
        terms = {"n": np.ones_like(x), "x": x, "y": y, "xx": x * x, "yy": y * y, "xy": x * y,
                 "rx": rx, "ry": ry, "rxrx": rx * rx, "ryry": ry * ry, "rxry": rx * ry}
        if spectrogram is not None and residual_ranks is not None:
            s = spectrogram.block(rows, cols)
            re = residual_ranks.ranks(x - intercept - slope * s)
            terms.update({"s": s, "ss": s * s, "xs": x * s, "sy": s * y, "re": re, "rere": re * re, "rery": re * ry})
        for name, value in _weighted_sums(weights, rows, cols, mask, terms).items():
            sums[name] = sums.get(name, 0.0) + value
    return sums


def correlations(sums: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pearson, Spearman (and, given spectrogram sums, the residuals' Pearson and Spearman) for each weighting of
    `pair_sums`."""
    out = {"pearson": _pearson(sums["n"], sums["x"], sums["y"], sums["xx"], sums["yy"], sums["xy"]),
           "spearman": _pearson(sums["n"], sums["rx"], sums["ry"], sums["rxrx"], sums["ryry"], sums["rxry"])}
    if "s" in sums:
        out["pearson_residual"] = _residual_pearson(sums)
    if "re" in sums:
        out["spearman_residual"] = _pearson(sums["n"], sums["re"], sums["ry"], sums["rere"], sums["ryry"], sums["rery"])
    return out


def correlate(model: Callable[[np.ndarray, np.ndarray], np.ndarray], target: Target, n: int,
              settings: Settings, spectrogram: Optional[EuclideanBlocks] = None,
              progress: bool = False, desc: str = "rsa") -> dict[str, Any]:
    """Pearson and Spearman correlation of the model's and the target's upper triangles over n sounds, with
    bootstrap intervals, and (given a spectrogram RDM) Pearson's r and Spearman's rho (`pearson_residual`,
    `spearman_residual`) of the model's residuals after regressing it on the spectrogram RDM."""
    sums = pair_sums(model, target, n, settings, spectrogram, progress, desc)
    result: dict[str, Any] = {"pairs": int(sums["n"][0])}
    for name, values in correlations(sums).items():
        result.update(_with_interval(name, values, settings))
    return result


def _residual_pearson(s: dict[str, np.ndarray]) -> np.ndarray:
    """Pearson's r between the target and the model's residuals after x ~ a + b s (least squares), from sums."""
    n = s["n"]
    var_s = s["ss"] - s["s"] ** 2 / n
    b = (s["xs"] - s["x"] * s["s"] / n) / var_s
    a = (s["x"] - b * s["s"]) / n
    # residual e = x - a - b s: its sums follow from the raw ones
    se = s["x"] - a * n - b * s["s"]
    sey = s["xy"] - a * s["y"] - b * s["sy"]
    see = s["xx"] + a**2 * n + b**2 * s["ss"] - 2 * a * s["x"] - 2 * b * s["xs"] + 2 * a * b * s["s"]
    return _pearson(n, se, s["y"], see, s["yy"], sey)


def _with_interval(name: str, values: np.ndarray, settings: Settings) -> dict[str, float]:
    out = {name: float(values[0])}
    if settings.bootstrap:
        tail = (1.0 - settings.confidence) / 2.0 * 100.0
        resampled = values[1:][np.isfinite(values[1:])]
        out[f"{name}_low"], out[f"{name}_high"] = (float(np.percentile(resampled, q)) for q in (tail, 100.0 - tail))
    return out


def rsa(store: ActivationStore, targets: Sequence[Target], clips: np.ndarray, settings: Settings,
        spectrogram: Optional[EuclideanBlocks] = None, progress: bool = True) -> list[dict[str, Any]]:
    """A row per layer and target: the correlations and their intervals, for the store clips `clips` (the
    targets' positions follow `clips`)."""
    rows = []
    layers = list(settings.layers or store.layers)
    for layer in tqdm(layers, desc=f"rsa {store.folder.name}", unit="layer", disable=not progress):
        model = CosineBlocks(store, layer, clips)
        for target in targets:
            result = correlate(model.block, target, len(clips), settings, spectrogram, progress=False)
            rows.append({"store": str(store.folder), "model": store.meta.get("network") or store.meta.get("model"),
                         "layer": layer, "depth": (layers.index(layer) + 1) / len(layers), "target": target.name,
                         "sounds": len(clips), **result})
    return rows


def sound_ids(store: ActivationStore, column: str = "path") -> list[str]:
    """Each clip's id: the file stem of its path, or the values of another clip-table column."""
    values = store.column(column)
    ids = [Path(v).stem for v in values] if column == "path" else [str(v) for v in values]
    if len(set(ids)) != len(ids):
        raise StoreError(f"the store's clip ids (from its {column!r} column) are not unique: choose --id-column")
    return ids


def _file_ids(spec: str) -> Optional[set[str]]:
    """The sound ids a file target covers (None for a factor target, which covers every clip)."""

    kind, _, rest = spec.partition(":")
    if kind == "dissimilarity":
        return set(load_dissimilarities(rest)[1])
    if kind == "responses":
        return set(read_responses(rest.partition(":")[0])[0])
    return None


def select_sounds(specs: Sequence[str], ids: Sequence[str], max_sounds: Optional[int] = None, seed: int = 0) -> np.ndarray:
    """Store positions of the clips every target covers, in store order (at most `max_sounds` of them, drawn at
    random)."""
    keep = np.ones(len(ids), dtype=bool)
    for spec in specs:
        covered = _file_ids(spec)
        if covered is not None:
            keep &= np.array([sound in covered for sound in ids])
    if keep.sum() < 3:
        raise StoreError(f"only {int(keep.sum())} of the store's {len(ids)} clips are in every target: RSA needs 3 "
                         "(do the target files' ids match the clips' file names? see --id-column)")
    if not keep.all():
        log.warning("RSA on the %d of %d clips that every target covers", int(keep.sum()), len(ids))
    chosen = np.flatnonzero(keep)
    if max_sounds is not None and len(chosen) > max_sounds:
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, size=max_sounds, replace=False))
    return chosen


def build_targets(specs: Sequence[str], store: ActivationStore, clips: np.ndarray, ids: Sequence[str],
                  average: bool = False) -> list[Target]:
    """Targets from command-line specs for the store clips `clips` (ids `ids`); with `average`, their mean too."""

    targets: list[Target] = []
    for spec in specs:
        kind, _, rest = spec.partition(":")
        if kind == "factor":
            targets.append(FactorTarget(spec, store.column(rest)[clips]))
        elif kind == "dissimilarity":
            targets.append(MatrixTarget(spec, load_dissimilarities(rest, ids=list(ids))[0]))
        elif kind == "responses":
            path, _, how = rest.partition(":")
            file_ids, _, counts = read_responses(path)
            position = {sound: k for k, sound in enumerate(file_ids)}
            targets.append(ResponsesTarget(spec, counts[[position[sound] for sound in ids]], how or "kl"))
        else:
            raise StoreError(f"target {spec!r}: write factor:<column>, dissimilarity:<file> or responses:<file>[:kl|:mode]")
    if average and len(targets) > 1:
        targets.append(MeanTarget(targets))
    return targets


def spectrogram_features(store: ActivationStore, clips: np.ndarray, n_mels: int = 64, progress: bool = False) -> np.ndarray:
    """Log-mel spectrograms [len(clips), n_mels x frames] of the store's clips, read from its data set (clips of
    different lengths are cut to the shortest)."""
    import torch

    meta = store.meta
    if "data" not in meta:
        raise StoreError(f"{store.folder} records no data set: a spectrogram RDM needs a store from `audiointerp extract`")
    manifest = load_manifest(meta["data"], format=meta.get("data_format", "auto"))
    if meta.get("folds"):
        manifest = manifest.select_folds(list(meta["folds"]))
    if len(manifest.rows) != len(store):
        raise StoreError(f"{meta['data']} now has {len(manifest.rows)} clips, the store {len(store)}: the data changed")
    rate = int(meta.get("frontend", {}).get("sample_rate", 16000))
    dataset = ManifestDataset(manifest, sample_rate=rate, seconds=None, train=False,
                              classes=manifest.class_list("label"), progress=False)
    frontend = LogMel(sample_rate=rate, n_mels=n_mels, f_max=min(7500.0, rate / 2))
    with torch.no_grad():
        spectra = [frontend(dataset[int(i)]["audio"][None])[0, 0].numpy()
                   for i in tqdm(clips, desc="spectrograms", unit="clip", disable=not progress, leave=False)]
    frames = min(s.shape[-1] for s in spectra)
    return np.stack([s[:, :frames].reshape(-1) for s in spectra]).astype(np.float32)


def track_rsa(rows: list[dict[str, Any]], out: Path, name: str, settings: dict, backend: str = "wandb") -> None:
    """Log every correlation (one step per layer) and the figure to a W&B run of job type `analysis`."""

    tracking = analysis_tracking(out, name, settings, backend)
    for row in rows:
        key = f"rsa/{Path(row['store']).name}/{row['target']}"
        tracking.log({f"{key}/{m}": row[m] for m in ("pearson", "spearman", "pearson_residual", "spearman_residual")
                      if m in row},
                     int(round(row["depth"] * 1000)), row["depth"])
    tracking.log_figures({"rsa": rsa_figure(rows)}, 1000, "rsa")
    tracking.finish()


def write_rsa(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """rsa.csv and rsa.png (correlation against relative depth, one line per model and target)."""
    return [write_csv(out / "rsa.csv", rows), save_figure(rsa_figure(rows), out / "rsa.png")]


def rsa_figure(rows: list[dict[str, Any]], measure: str = "spearman"):
    """The probing paper's Fig. 1: RDM correlation against relative layer depth, a line per model, a panel per
    target, bootstrap intervals as bands; with spectrogram residuals, their correlation as a dashed line."""
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(row["target"] for row in rows))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets):
        for store in dict.fromkeys(row["store"] for row in rows):
            mine = [row for row in rows if row["store"] == store and row["target"] == target]
            depth = [row["depth"] for row in mine]
            line = ax.plot(depth, [row[measure] for row in mine], marker="o", markersize=3,
                           label=f"{mine[0]['model']} ({Path(store).name})")
            if f"{measure}_low" in mine[0]:
                ax.fill_between(depth, [row[f"{measure}_low"] for row in mine], [row[f"{measure}_high"] for row in mine],
                                color=line[0].get_color(), alpha=0.2, linewidth=0)
            if f"{measure}_residual" in mine[0]:  # after regressing out the spectrogram RDM: dashed, same colour
                ax.plot(depth, [row[f"{measure}_residual"] for row in mine], linestyle="--", marker="o", markersize=3,
                        color=line[0].get_color(), label=f"{mine[0]['model']} ({Path(store).name}), spectrogram residual")
        ax.set_xlabel("relative layer depth")
        ax.set_ylabel(f"{measure} correlation with the target RDM")
        ax.set_title(target, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@dataclass
class Result(AnalysisResult):
    """`run`'s answer: `rows` are rsa.csv's (a row per store, layer and target)."""

    settings: Settings


def run(settings: Settings, stores: Sequence[str | Path | ActivationStore], out: Optional[Path] = None,
        tracking: str = "wandb", progress: bool = True, name: Optional[str] = None) -> Result:
    """RSA of every store against `settings.targets` (on the sounds every target covers), written to `out`
    (default: the first STORE/rsa) and tracked in a W&B run `name` (default: rsa-FIRST_STORE) of job type
    analysis (`tracking="none"`: metrics.jsonl only)."""
    opened = [store if isinstance(store, ActivationStore) else ActivationStore(store) for store in stores]
    if not opened:
        raise StoreError("RSA needs at least one activation store")
    rows: list[dict[str, Any]] = []
    for store in opened:
        ids = sound_ids(store, settings.id_column)
        clips = select_sounds(settings.targets, ids, settings.max_sounds, settings.seed)
        targets = build_targets(settings.targets, store, clips, [ids[i] for i in clips], settings.average)
        spectrogram = EuclideanBlocks(spectrogram_features(store, clips, progress=progress)) if settings.spectrogram else None
        rows += rsa(store, targets, clips, settings, spectrogram, progress=progress)
    out = Path(out or opened[0].folder / "rsa")
    files = write_rsa(rows, out)
    track_rsa(rows, out, name or f"rsa-{opened[0].folder.name}", asdict(settings), tracking)
    return Result(rows, out, files, settings)


def summary(result: Result) -> str:
    """A line per store, layer and target (correlations, intervals, residual correlations, sounds), then the folder."""
    lines = []
    for row in result.rows:
        interval = f" [{row['spearman_low']:.3f}, {row['spearman_high']:.3f}]" if "spearman_low" in row else ""
        residual = (f", residual Spearman {row['spearman_residual']:.3f}, Pearson {row['pearson_residual']:.3f}"
                    if "pearson_residual" in row else "")
        lines.append(f"{Path(row['store']).name} {row['layer']} ~ {row['target']}: Spearman {row['spearman']:.3f}{interval}, "
                     f"Pearson {row['pearson']:.3f}{residual} ({row['sounds']} sounds)")
    lines.append(f"wrote {result.out}")
    return "\n".join(lines)
