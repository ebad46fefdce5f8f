"""Benchmark `audiointerp analyze decode`: seconds per layer, against the literal per-factor recipe.

The literal recipe (what a research script would write) runs sklearn's `cross_val_score` on
scaler -> PCA(64) -> scaler -> KNN in float64 for each factor, with folds stratified on that factor: the PCA is
fitted folds x factors times. `decode` shares each fold's fitted transform between the factors (folds stratified
on the joint classes) and works in float32. Both run on the same store in one process, interleaved per layer;
their accuracies are printed side by side (they differ only by the folds). Writes benchmarks/results/decode.json.

    python benchmarks/bench_decode.py [--clips 3000] [--dims 512 4096 16384]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import environment, write_results
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from audiointerp.analysis import ActivationStore
from audiointerp.analysis.decode import DecodeSettings, decode
from audiointerp.datasets.store import write_store

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "decode.json"
FACTORS = {"material": 6, "action": 4}


def make_store(folder: Path, clips: int, dims: list[int]) -> Path:
    """Layers of the given widths where material and action each add a low-rank signal to noise."""
    rng = np.random.default_rng(0)
    codes = {f: rng.integers(0, n, clips) for f, n in FACTORS.items()}
    layers = {}
    for d in dims:
        signal = sum(rng.normal(size=(n, d))[codes[f]] * 0.15 for f, n in FACTORS.items())
        layers[f"width{d}"] = (rng.normal(size=(clips, d)) + signal).astype(np.float32)
    return write_store(folder, layers, {f: [f"{f}{c}" for c in codes[f]] for f in FACTORS})


def literal(store: ActivationStore, layer: str, sample: np.ndarray, settings: DecodeSettings) -> dict[str, float]:
    """Per factor: cross_val_score of the whole pipeline in float64, folds stratified on that factor."""
    x = store.load(layer, sample).reshape(len(sample), -1).astype(np.float64)
    out = {}
    for factor in settings.factors:
        model = make_pipeline(StandardScaler(), PCA(settings.components, random_state=settings.seed), StandardScaler(),
                              KNeighborsClassifier(settings.neighbors))
        folds = StratifiedKFold(settings.folds, shuffle=True, random_state=settings.seed)
        out[factor] = float(cross_val_score(model, x, store.column(factor)[sample], cv=folds).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3000, help="instances decoded per layer (the paper's 3,000)")
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 4096, 16384], help="layer widths")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ActivationStore(make_store(Path(tmp) / "store", args.clips, args.dims))
        sample = np.arange(args.clips)
        for layer in store.layers:
            settings = DecodeSettings(factors=list(FACTORS), layers=[layer], instances=args.clips)
            started = time.perf_counter()
            literal_scores = literal(store, layer, sample, settings)
            literal_seconds = time.perf_counter() - started
            started = time.perf_counter()
            result = decode(store, settings, progress=False)
            ours_seconds = time.perf_counter() - started
            ours_scores = {f: float(result.scores[f][layer].mean()) for f in FACTORS}
            rows.append({"layer": layer, "literal_seconds": literal_seconds, "decode_seconds": ours_seconds,
                         "speedup": literal_seconds / ours_seconds, "literal_accuracy": literal_scores,
                         "decode_accuracy": ours_scores})
    print(f"{'layer':>12} {'literal s':>10} {'decode s':>9} {'speed-up':>9}   accuracy literal / decode")
    for row in rows:
        accuracy = ", ".join(f"{f} {row['literal_accuracy'][f]:.3f}/{row['decode_accuracy'][f]:.3f}" for f in FACTORS)
        print(f"{row['layer']:>12} {row['literal_seconds']:10.1f} {row['decode_seconds']:9.1f} {row['speedup']:8.2f}x   {accuracy}")
    write_results(RESULTS_PATH, {"clips": args.clips, "factors": list(FACTORS), "rows": rows,
                                 "environment": environment(load_before)})
    print(f"wrote {RESULTS_PATH}")


if __name__ == "__main__":
    main()
