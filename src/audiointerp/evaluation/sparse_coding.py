"""Concept-based sparse representations (Zhang, Thomaz & Lu 2025; the SpLiCE recipe of Bhalla et al. 2024).

An audio embedding is written as a sparse, non-negative combination of the text embeddings of a concept
vocabulary:

1. `prepare`: L2-normalise each embedding, subtract the modality's mean, renormalise; the dictionary (one row
   per concept) the same way with its own mean.
2. `decompose`: for each audio embedding a, weights w >= 0 minimising ||D^T w - a||^2 + l1 ||w||_1, SpLiCE's
   scale of l1 (scikit-learn's `Lasso(positive=True)` with alpha = l1 / (2d), d the embedding dimension, as
   SpLiCE's own code sets it). At l1 = 0 this is non-negative least squares, solved by `scipy.optimize.nnls`;
   semDNN's NNLS ranking (`semantic.nnls_betas`) is this call. The coordinate descent runs to `tol=1e-7`
   (scikit-learn's default 1e-4, SpLiCE's setting, leaves the weights up to ~1 % off the lasso solution on a
   correlated dictionary; at 1e-7 they are within ~1e-5 of it, at about twice the time).

`reconstruction_cosine` scores how much of each embedding the weights keep, `top_concepts` lists a sound's
strongest concepts, and `sparsity_sweep` tabulates both against l1.
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from audiointerp.evaluation.ranking import nnls_betas


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if not (norms > 0).all():
        raise ValueError("an all-zero embedding has no direction")
    return x / norms


def prepare(embeddings: np.ndarray, mean: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(normalised, centred and renormalised rows, the modality mean used). `mean` defaults to the mean of the
    normalised rows (give the training set's to prepare new data the same way)."""
    unit = unit_rows(np.atleast_2d(embeddings))
    centre = unit.mean(0) if mean is None else np.asarray(mean, dtype=np.float64)
    return unit_rows(unit - centre), centre


def decompose(embeddings: np.ndarray, dictionary: np.ndarray, l1: float = 0.0, max_iter: int = 10000,
              n_jobs: Optional[int] = None, progress: bool = False, tol: float = 1e-7) -> np.ndarray:
    """Non-negative weights [n, K] of embeddings [n, d] over a dictionary [K, d] (see the module docstring); `tol`
    is scikit-learn's duality-gap tolerance of the lasso (l1 > 0)."""

    if l1 < 0:
        raise ValueError(f"l1 must be >= 0, got {l1}")
    if l1 == 0:
        return nnls_betas(embeddings, dictionary, n_jobs=n_jobs, progress=progress)
    x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    d = np.asarray(dictionary, dtype=np.float64)
    if d.ndim != 2 or x.shape[1] != d.shape[1]:
        raise ValueError(f"embeddings {x.shape} and dictionary {d.shape} must share the embedding dimension")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lasso = Lasso(alpha=l1 / (2 * d.shape[1]), positive=True, fit_intercept=False, max_iter=max_iter,
                      tol=tol).fit(d.T, x.T)
    return np.atleast_2d(lasso.coef_).reshape(len(x), len(d))


def reconstruction_cosine(embeddings: np.ndarray, weights: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """Cosine similarity [n] between each embedding and its reconstruction D^T w (0 where w is all zero)."""
    reconstruction = np.asarray(weights) @ np.asarray(dictionary)
    norms = np.linalg.norm(reconstruction, axis=1) * np.linalg.norm(embeddings, axis=1)
    dots = (reconstruction * embeddings).sum(1)
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def top_concepts(weights: np.ndarray, vocabulary: Sequence[str], k: int = 5) -> list[list[tuple[str, float]]]:
    """Each row's k largest positive weights as (concept, weight), strongest first."""
    out = []
    for row in np.atleast_2d(weights):
        order = np.argsort(-row, kind="stable")[:k]
        out.append([(vocabulary[i], float(row[i])) for i in order if row[i] > 0])
    return out


def sparsity_sweep(embeddings: np.ndarray, dictionary: np.ndarray, l1s: Sequence[float]) -> list[dict[str, float]]:
    """For each l1: mean number of non-zero concepts, and mean and SD of the reconstruction cosine."""
    rows = []
    for l1 in l1s:
        weights = decompose(embeddings, dictionary, l1)
        cosine = reconstruction_cosine(embeddings, weights, dictionary)
        rows.append({"l1": float(l1), "nonzero": float((weights > 0).sum(1).mean()),
                     "cosine": float(cosine.mean()), "cosine_sd": float(cosine.std())})
    return rows
