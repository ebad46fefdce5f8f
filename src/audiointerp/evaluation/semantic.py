"""Semantic evaluation of sound-to-word networks: NNLS projection, ranking score and AMCSS.

The ranking score (Esposito et al. 2023) places a clip's true words among all N dictionary words by a score
(NNLS betas of a predicted embedding for semDNN, output probabilities for catDNN): a word of rank r (1 = top)
scores m = 1 - (r - 1)/(N - 1), so the top word gets 1, the last 0 and a random order 0.5 on average; a clip's
score is the mean of m over its distinct true words. As the paper states it, a clip's true words compete with
each other (k words take ranks 1..k at best); ``filtered=True`` ranks each one only against non-true words.

**NNLS.** With more words than dimensions (N = 10,000 > d = 300) the fitted vector of the projection is unique
but the betas need not be: when the prediction lies inside the cone of the word vectors, many non-negative
combinations reproduce it exactly. :func:`nnls_betas` returns the vertex that ``scipy.optimize.nnls``
(Lawson-Hanson's greedy active-set path) reaches.

**Ties.** NNLS leaves most betas at exactly zero (at most d of them are positive), so a true word is often tied
with thousands of others. :func:`nnls_ranking_score` offers two rules:

- ``ties="cosine"`` (default): words with equal betas are ordered by the cosine similarity of their vector to the
  prediction (deterministic, and the natural order of words the projection left out); exact ties that remain
  count as the average rank of the tied block.
- ``ties="pessimistic"``: the true word is ranked after every word tied with it (a conservative lower bound).

:func:`ranking_score` exposes the general rule: an optional tie-break matrix is consulted first, then exact ties
that remain are resolved by ``ties`` ("average", "pessimistic" or "optimistic").

AMCSS: for each true word, the maximum cosine similarity between its vector and the vectors of the top-N
predicted words; averaged over the clip's words, then over clips. The top-N list follows the same order as the
ranking (score, then tie-break, then word index).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import nnls as scipy_nnls
from tqdm.auto import tqdm

TIES = ("average", "pessimistic", "optimistic")
NNLS_TIES = ("cosine", "pessimistic", "average")


# --------------------------------------------------------------------------------------------------------------
# NNLS projection
# --------------------------------------------------------------------------------------------------------------


def _nnls_rows(A: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.stack([scipy_nnls(A, p)[0] for p in rows])


def nnls_betas(
    predictions: np.ndarray,
    dictionary: np.ndarray,
    *,
    n_jobs: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Non-negative least-squares weights [n, N] of each prediction [n, d] on the word vectors [N, d].

    ``scipy.optimize.nnls`` (Lawson-Hanson) solves min ||D^T beta - p|| subject to beta >= 0 for every clip,
    in parallel over clips with joblib (``n_jobs``; None: all cores when the problem is large, else one).
    Cost grows with the dictionary: about 1 ms a clip for 100 words x 50 dimensions, and seconds a clip for
    10,000 words x 300 dimensions on one core (see benchmarks/bench_semantic.py).
    """
    P = np.atleast_2d(np.asarray(predictions, dtype=np.float64))
    D = np.ascontiguousarray(np.asarray(dictionary, dtype=np.float64))
    if D.ndim != 2 or P.shape[1] != D.shape[1]:
        raise ValueError(f"predictions {P.shape} and dictionary {D.shape} must share the embedding dimension")
    if not (np.isfinite(P).all() and np.isfinite(D).all()):
        raise ValueError("predictions and dictionary must be finite")
    n, N = P.shape[0], D.shape[0]
    A = np.ascontiguousarray(D.T)
    if n_jobs is None:
        n_jobs = -1 if n * N * D.shape[1] > 5e7 else 1
    chunks = np.array_split(np.arange(n), max(1, min(n, 64 if n_jobs != 1 else 1)))
    if n_jobs == 1:
        parts = [_nnls_rows(A, P[c]) for c in tqdm(chunks, disable=not progress, desc="nnls")]
    else:
        from joblib import Parallel, delayed

        parts = Parallel(n_jobs=n_jobs)(delayed(_nnls_rows)(A, P[c]) for c in tqdm(chunks, disable=not progress, desc="nnls"))
    return np.concatenate(parts) if n else np.zeros((0, N))


def cosine_similarities(predictions: np.ndarray, dictionary: np.ndarray) -> np.ndarray:
    """Cosine similarity [n, N] of each prediction to each word vector (0 where either vector is zero)."""
    P = np.atleast_2d(np.asarray(predictions, dtype=np.float64))
    return _unit(P) @ _unit(np.asarray(dictionary, dtype=np.float64)).T


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


# --------------------------------------------------------------------------------------------------------------
# Ranking score
# --------------------------------------------------------------------------------------------------------------


def _check_true_words(true_words: Sequence[Iterable[int]], n: int, N: int) -> list[np.ndarray]:
    if len(true_words) != n:
        raise ValueError(f"{len(true_words)} label lists for {n} rows of scores")
    checked = []
    for i, words in enumerate(true_words):
        w = np.unique(np.asarray(list(words), dtype=np.int64))
        if w.size == 0:
            raise ValueError(f"clip {i} has no true words")
        if w.min() < 0 or w.max() >= N:
            raise ValueError(f"clip {i}: word index out of range [0, {N}): {w[(w < 0) | (w >= N)].tolist()}")
        checked.append(w)
    return checked


def word_ranks(
    scores: np.ndarray,
    true_words: Sequence[Iterable[int]],
    *,
    tie_break: np.ndarray | None = None,
    ties: str = "average",
    filtered: bool = False,
) -> list[np.ndarray]:
    """Rank (1 = top; fractional under ``ties="average"``) of each clip's distinct true words, in sorted word order.

    With ``filtered``, a true word is ranked only against the words that are not true words of the clip.
    """
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n, N = S.shape
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")
    if np.isnan(S).any():
        raise ValueError("scores contain NaN")
    T = None
    if tie_break is not None:
        T = np.atleast_2d(np.asarray(tie_break, dtype=np.float64))
        if T.shape != S.shape:
            raise ValueError(f"tie_break {T.shape} must have the shape of scores {S.shape}")
    ranks = []
    for i, words in enumerate(_check_true_words(true_words, n, N)):
        row = S[i]
        others = np.ones(N, dtype=bool)
        others[words] = False
        own = row[words][:, None]
        competitors = others[None, :] if filtered else (np.arange(N)[None, :] != words[:, None])
        above = ((row[None, :] > own) & competitors).sum(axis=1)
        tied = (row[None, :] == own) & competitors
        if T is not None:
            tb = T[i]
            tb_own = tb[words][:, None]
            above = above + (tied & (tb[None, :] > tb_own)).sum(axis=1)
            tied = tied & (tb[None, :] == tb_own)
        n_tied = tied.sum(axis=1)
        if ties == "pessimistic":
            above = above + n_tied
        elif ties == "average":
            above = above + n_tied / 2.0
        ranks.append(1.0 + above)
    return ranks


def ranking_score(
    scores: np.ndarray,
    true_words: Sequence[Iterable[int]],
    *,
    tie_break: np.ndarray | None = None,
    ties: str = "average",
    filtered: bool = False,
) -> np.ndarray:
    """Per-clip ranking score [n]: mean over the clip's distinct true words of 1 - (rank - 1)/(N - 1).

    ``scores`` [n, N] are NNLS betas (semDNN) or output probabilities (catDNN); higher is better. Words with
    equal scores are ordered by ``tie_break`` (higher first) when given; exact ties that remain count as the
    mean rank of the tied block (``"average"``), after it (``"pessimistic"``) or before it (``"optimistic"``).

    As in the paper, a clip's true words compete with each other, so a clip with k words scores at most
    1 - (k - 1)/(2(N - 1)). ``filtered=True`` ranks each true word only against the N - k other words, with
    m = 1 - (rank - 1)/(N - k): a perfect prediction then scores exactly 1 and random scores 0.5 on average.
    """
    S = np.atleast_2d(np.asarray(scores))
    N = S.shape[1]
    ranks = word_ranks(S, true_words, tie_break=tie_break, ties=ties, filtered=filtered)
    out = np.empty(len(ranks))
    for i, r in enumerate(ranks):
        span = N - r.size if filtered else N - 1
        if span < 1:
            raise ValueError(f"clip {i}: the ranking score needs at least one competing word (N = {N})")
        out[i] = float(np.mean(1.0 - (r - 1.0) / span))
    return out


def nnls_ranking_score(
    predictions: np.ndarray,
    dictionary: np.ndarray,
    true_words: Sequence[Iterable[int]],
    *,
    ties: str = "cosine",
    betas: np.ndarray | None = None,
    filtered: bool = False,
) -> np.ndarray:
    """semDNN ranking score [n]: NNLS betas of the predictions, ties by cosine (default) or pessimistic.

    Pass precomputed ``betas`` (from :func:`nnls_betas`) to avoid solving NNLS again; ``filtered`` as in
    :func:`ranking_score`.
    """
    if ties not in NNLS_TIES:
        raise ValueError(f"ties must be one of {NNLS_TIES}, not {ties!r}")
    B = nnls_betas(predictions, dictionary) if betas is None else np.asarray(betas)
    if ties == "cosine":
        cosine = cosine_similarities(predictions, dictionary)
        return ranking_score(B, true_words, tie_break=cosine, ties="average", filtered=filtered)
    return ranking_score(B, true_words, ties=ties, filtered=filtered)


# --------------------------------------------------------------------------------------------------------------
# AMCSS
# --------------------------------------------------------------------------------------------------------------


def top_words(scores: np.ndarray, top_n: int, *, tie_break: np.ndarray | None = None) -> np.ndarray:
    """Indices [n, top_n] of the highest-scoring words: by score, then tie-break (both descending), then index."""
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n, N = S.shape
    if not 1 <= top_n <= N:
        raise ValueError(f"top_n must be in [1, {N}], not {top_n}")
    T = None if tie_break is None else np.atleast_2d(np.asarray(tie_break, dtype=np.float64))
    if T is not None and T.shape != S.shape:
        raise ValueError(f"tie_break {T.shape} must have the shape of scores {S.shape}")
    out = np.empty((n, top_n), dtype=np.int64)
    for i in range(n):
        row = S[i]
        threshold = np.partition(row, N - top_n)[N - top_n]
        candidates = np.flatnonzero(row >= threshold)
        secondary = np.zeros(candidates.size) if T is None else -T[i, candidates]
        order = np.lexsort((candidates, secondary, -row[candidates]))
        out[i] = candidates[order[:top_n]]
    return out


def _predicted_lists(predicted: np.ndarray | Sequence[Sequence[int]], top_n: int | None, tie_break: np.ndarray | None) -> list[np.ndarray]:
    if isinstance(predicted, np.ndarray) and predicted.dtype.kind == "f":
        if top_n is None:
            raise ValueError("top_n is required when predicted is a score matrix")
        return list(top_words(predicted, top_n, tie_break=tie_break))
    lists = [np.asarray(list(p), dtype=np.int64) for p in predicted]
    if top_n is not None:
        lists = [p[:top_n] for p in lists]
    for i, p in enumerate(lists):
        if p.size == 0:
            raise ValueError(f"clip {i} has no predicted words")
    return lists


def amcss_per_clip(
    predicted: np.ndarray | Sequence[Sequence[int]],
    true_words: Sequence[Iterable[int]],
    word_vectors: np.ndarray,
    top_n: int | None = None,
    *,
    tie_break: np.ndarray | None = None,
) -> np.ndarray:
    """AMCSS of each clip [n]: mean over its true words of the max cosine similarity to the top-N predicted words.

    ``predicted`` is either a float score matrix [n, N] (top-N taken with :func:`top_words`) or the predicted
    word indices per clip, best first (truncated to ``top_n`` when given). Zero word vectors have similarity 0.
    """
    units = _unit(np.asarray(word_vectors, dtype=np.float64))
    lists = _predicted_lists(predicted, top_n, tie_break)
    truth = _check_true_words(true_words, len(lists), units.shape[0])
    return np.array([float((units[t] @ units[p].T).max(axis=1).mean()) for t, p in zip(truth, lists)])


def amcss(
    predicted: np.ndarray | Sequence[Sequence[int]],
    true_words: Sequence[Iterable[int]],
    word_vectors: np.ndarray,
    top_n: int | None = None,
    *,
    tie_break: np.ndarray | None = None,
) -> float:
    """Average maximum cosine similarity score, averaged over clips (see :func:`amcss_per_clip`)."""
    return float(amcss_per_clip(predicted, true_words, word_vectors, top_n, tie_break=tie_break).mean())


def amcss_curve(
    scores: np.ndarray,
    true_words: Sequence[Iterable[int]],
    word_vectors: np.ndarray,
    top_ns: Iterable[int] = range(5, 16),
    *,
    tie_break: np.ndarray | None = None,
) -> dict[int, float]:
    """AMCSS for each top-N in ``top_ns`` (the paper uses 5..15), from one sort of the scores."""
    wanted = sorted({int(k) for k in top_ns})
    if not wanted:
        raise ValueError("top_ns is empty")
    units = _unit(np.asarray(word_vectors, dtype=np.float64))
    top = top_words(scores, wanted[-1], tie_break=tie_break)
    truth = _check_true_words(true_words, top.shape[0], units.shape[0])
    per_clip = np.empty((len(truth), len(wanted)))
    columns = np.array(wanted) - 1
    for i, (t, p) in enumerate(zip(truth, top)):
        running = np.maximum.accumulate(units[t] @ units[p].T, axis=1)  # [words, K]: best within the first k
        per_clip[i] = running[:, columns].mean(axis=0)
    return {k: float(v) for k, v in zip(wanted, per_clip.mean(axis=0))}
