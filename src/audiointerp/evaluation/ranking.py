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
with thousands of others, and the tie rule moves the score. :func:`word_scores` gives semDNN and catDNN the same
rule (the `semantic` task's ``task.ties``):

- ``"average"`` (default): no tie-break; tied words share the mean rank of their block, as
  ``scipy.stats.rankdata(method="average")``. A constant prediction scores 0.5.
- ``"cosine"``: ties are broken by a cosine similarity for both networks: to the prediction (semDNN), or to the
  mean vector of the top-k words (catDNN; every word tied with the k-th included, so no word order leaks in).

:func:`nnls_ranking_score` (semDNN alone) keeps its rules:

- ``ties="cosine"`` (default): words with equal betas are ordered by the cosine similarity of their vector to the
  prediction (deterministic, and the natural order of words the projection left out); exact ties that remain
  count as the average rank of the tied block.
- ``ties="pessimistic"``: the true word is ranked after every word tied with it (a conservative lower bound).

:func:`ranking_score` exposes the general rule: an optional tie-break matrix is consulted first, then exact ties
that remain are resolved by ``ties`` ("average", "pessimistic" or "optimistic").

AMCSS: for each true word, the maximum cosine similarity between its vector and the vectors of the top-N
predicted words; averaged over the clip's words, then over clips. The top-N list follows the same order as the
ranking (score, then tie-break); words still tied at the N-th place are taken by word index (``ties="index"``) or,
with ``ties="average"`` (what the task uses), AMCSS is its expectation over every order of the tied block.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import nnls as scipy_nnls
from scipy.special import gammaln
from tqdm.auto import tqdm

TIES = ("average", "pessimistic", "optimistic")
NNLS_TIES = ("cosine", "pessimistic", "average")
WORD_TIES = ("average", "cosine")  # the rules of word_scores, for semDNN and catDNN alike
AMCSS_TIES = ("index", "average")
TARGETS = ("embedding", "multi_hot")


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


def word_scores(
    outputs: np.ndarray,
    dictionary: np.ndarray,
    *,
    target: str,
    ties: str = "average",
    top_k: int = 5,
    n_jobs: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(scores [n, N], tie_break [n, N] or None) that rank every dictionary word for each clip, for
    :func:`ranking_score` and :func:`amcss_curve`, with the same tie rule for both networks.

    ``target="embedding"`` (semDNN): ``outputs`` [n, d] are predicted embeddings; scores are their NNLS betas on
    ``dictionary`` [N, d]. ``target="multi_hot"`` (catDNN): ``outputs`` [n, N] are logits; scores are the sigmoid
    probabilities in float64 (a float32 sigmoid rounds every logit above ~17 to 1.0, inventing ties).

    ``ties="average"``: no tie-break (tied words get their block's mean rank). ``ties="cosine"``: the tie-break is
    the cosine similarity of each word vector to the prediction (semDNN), or to the mean vector of the catDNN's
    ``top_k`` most probable words (all words tied with the k-th included). Raises ValueError on an unknown
    ``target`` or ``ties``, or outputs whose width fits neither the dictionary's dimension nor its size.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if ties not in WORD_TIES:
        raise ValueError(f"ties must be one of {WORD_TIES}, not {ties!r}")
    D = np.asarray(dictionary, dtype=np.float64)
    O = np.atleast_2d(np.asarray(outputs, dtype=np.float64))
    if target == "embedding":
        scores = nnls_betas(O, D, n_jobs=n_jobs, progress=progress)
        return scores, (cosine_similarities(O, D) if ties == "cosine" else None)
    if O.shape[1] != D.shape[0]:
        raise ValueError(f"catDNN outputs have {O.shape[1]} logits for a dictionary of {D.shape[0]} words")
    scores = 1.0 / (1.0 + np.exp(-O))
    if ties == "average":
        return scores, None
    k = int(top_k)
    if not 1 <= k <= D.shape[0]:
        raise ValueError(f"top_k must be in [1, {D.shape[0]}], not {top_k}")
    threshold = np.partition(scores, D.shape[0] - k, axis=1)[:, D.shape[0] - k][:, None]
    chosen = (scores >= threshold).astype(np.float64)  # the top k, and every word tied with the k-th
    means = (chosen @ D) / chosen.sum(axis=1, keepdims=True)
    return scores, cosine_similarities(means, D)


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
    ties: str = "index",
) -> dict[int, float]:
    """AMCSS for each top-N in ``top_ns`` (the paper uses 5..15), from one sort of the scores.

    Words tied (in score and tie-break) across the N-th place fill the top-N list by word index
    (``ties="index"``), or AMCSS is the expectation over all orders of the tied block (``ties="average"``, the
    AMCSS counterpart of average ranks): if a words rank strictly above the block of b tied words and m = N - a of
    these are drawn, the best of the drawn ones is the j-th best of the block with probability
    C(b - j, m - 1) / C(b, m).
    """
    wanted = sorted({int(k) for k in top_ns})
    if not wanted:
        raise ValueError("top_ns is empty")
    if ties not in AMCSS_TIES:
        raise ValueError(f"ties must be one of {AMCSS_TIES}, not {ties!r}")
    if ties == "average":
        return _expected_amcss_curve(scores, true_words, word_vectors, wanted, tie_break)
    units = _unit(np.asarray(word_vectors, dtype=np.float64))
    top = top_words(scores, wanted[-1], tie_break=tie_break)
    truth = _check_true_words(true_words, top.shape[0], units.shape[0])
    per_clip = np.empty((len(truth), len(wanted)))
    columns = np.array(wanted) - 1
    for i, (t, p) in enumerate(zip(truth, top)):
        running = np.maximum.accumulate(units[t] @ units[p].T, axis=1)  # [words, K]: best within the first k
        per_clip[i] = running[:, columns].mean(axis=0)
    return {k: float(v) for k, v in zip(wanted, per_clip.mean(axis=0))}


def _expected_amcss_curve(scores: np.ndarray, true_words: Sequence[Iterable[int]], word_vectors: np.ndarray,
                          wanted: list[int], tie_break: np.ndarray | None) -> dict[int, float]:
    """amcss_curve with ties="average": the expectation over every order of the words tied at the N-th place."""
    S = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n, N = S.shape
    if wanted[0] < 1 or wanted[-1] > N:
        raise ValueError(f"top_n must be in [1, {N}], not {wanted[0] if wanted[0] < 1 else wanted[-1]}")
    T = np.zeros_like(S) if tie_break is None else np.atleast_2d(np.asarray(tie_break, dtype=np.float64))
    if T.shape != S.shape:
        raise ValueError(f"tie_break {T.shape} must have the shape of scores {S.shape}")
    units = _unit(np.asarray(word_vectors, dtype=np.float64))
    truth = _check_true_words(true_words, n, units.shape[0])
    per_clip = np.empty((n, len(wanted)))
    deepest = wanted[-1]
    for i, t in enumerate(truth):
        # every word tied with one of the first `deepest` places scores at least the deepest-th score
        floor = np.partition(S[i], N - deepest)[N - deepest]
        candidates = np.flatnonzero(S[i] >= floor)
        order = candidates[np.lexsort((candidates, -T[i, candidates], -S[i, candidates]))]
        s_sorted, t_sorted = S[i, order], T[i, order]
        similarity = (units[t] @ units.T)[:, order]  # [words, candidates] in ranking order
        sorted_blocks: dict[tuple[int, int], np.ndarray] = {}  # one sort per tied block, shared by every N in it
        for col, top in enumerate(wanted):
            same = (s_sorted == s_sorted[top - 1]) & (t_sorted == t_sorted[top - 1])
            block = np.flatnonzero(same)
            first, size = int(block[0]), int(block.size)  # the block is contiguous in ranking order
            drawn = top - first
            above = similarity[:, :first].max(axis=1) if first else np.full(len(t), -np.inf)
            if (first, size) not in sorted_blocks:
                sorted_blocks[(first, size)] = -np.sort(-similarity[:, first:first + size], axis=1)  # best first
            block_sims = sorted_blocks[(first, size)]
            j = np.arange(1, size - drawn + 2)  # the best drawn word is the j-th best of the block
            log_p = (gammaln(size - j + 1) - gammaln(drawn) - gammaln(size - j - drawn + 2)
                     - (gammaln(size + 1) - gammaln(drawn + 1) - gammaln(size - drawn + 1)))
            best = np.maximum(above[:, None], block_sims[:, : j.size])
            per_clip[i, col] = float((best @ np.exp(log_p)).mean())
    return {k: float(v) for k, v in zip(wanted, per_clip.mean(axis=0))}
