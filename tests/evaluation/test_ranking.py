from __future__ import annotations

import itertools

import numpy as np
import pytest

from audiointerp.evaluation import ranking as S


def brute_force_nnls(D: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NNLS by enumerating every support: the best unconstrained fit on a support with all weights >= 0."""
    N = D.shape[0]
    best, best_x = np.linalg.norm(b), np.zeros(N)
    for size in range(1, N + 1):
        for support in itertools.combinations(range(N), size):
            A = D[list(support)].T
            z = np.linalg.lstsq(A, b, rcond=None)[0]
            if np.all(z >= -1e-12):
                residual = np.linalg.norm(A @ z - b)
                if residual < best - 1e-12:
                    best, best_x = residual, np.zeros(N)
                    best_x[list(support)] = np.maximum(z, 0.0)
    return best_x


def brute_force_rank(scores: np.ndarray, tie_break: np.ndarray | None, word: int, ties: str) -> float:
    """Rank by explicit pairwise counting."""
    before, tied = 0, 0
    for j in range(scores.size):
        if j == word:
            continue
        if scores[j] > scores[word]:
            before += 1
        elif scores[j] == scores[word]:
            if tie_break is not None and tie_break[j] > tie_break[word]:
                before += 1
            elif tie_break is None or tie_break[j] == tie_break[word]:
                tied += 1
    return 1 + before + {"pessimistic": tied, "optimistic": 0, "average": tied / 2}[ties]


def test_nnls_matches_brute_force_on_tiny_problems() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        N = int(rng.integers(2, 7))
        D = rng.standard_normal((N, int(rng.integers(N, 9))))  # N <= d: the solution is unique
        P = rng.standard_normal((3, D.shape[1]))
        for p, beta in zip(P, S.nnls_betas(P, D)):
            np.testing.assert_allclose(beta, brute_force_nnls(D, p), atol=1e-9)
            assert beta.min() >= 0.0


def test_nnls_residual_is_minimal_when_overcomplete() -> None:
    rng = np.random.default_rng(6)
    for _ in range(10):
        D = rng.standard_normal((6, 3))  # more words than dimensions: betas may differ, the residual may not
        P = rng.standard_normal((2, 3))
        for p, beta in zip(P, S.nnls_betas(P, D)):
            expected = brute_force_nnls(D, p)
            assert np.linalg.norm(beta @ D - p) == pytest.approx(np.linalg.norm(expected @ D - p), abs=1e-9)
            assert beta.min() >= 0.0


def test_nnls_is_a_kkt_point_when_overcomplete_and_parallel_equals_serial() -> None:
    rng = np.random.default_rng(1)
    D = rng.standard_normal((400, 40)) + 0.5  # more words than dimensions, shared offset as in word2vec
    P = D[rng.integers(0, 400, (6, 3))].mean(axis=1) + 0.2 * rng.standard_normal((6, 40))
    betas = S.nnls_betas(P, D, n_jobs=1)
    np.testing.assert_allclose(S.nnls_betas(P, D, n_jobs=2), betas)
    # KKT: the gradient is <= 0 off the support and ~0 on it
    gradient = (P - betas @ D) @ D.T
    assert np.all(gradient[betas == 0] <= 1e-8)
    np.testing.assert_allclose(gradient[betas > 0], 0.0, atol=1e-8)


def test_nnls_edge_cases() -> None:
    D = np.eye(3)
    np.testing.assert_allclose(S.nnls_betas(np.zeros((1, 3)), D), 0.0)
    np.testing.assert_allclose(S.nnls_betas(np.array([[1.0, -2.0, 0.5]]), D), [[1.0, 0.0, 0.5]])
    with pytest.raises(ValueError):
        S.nnls_betas(np.zeros((1, 4)), D)
    # a zero word vector (out-of-vocabulary word) never gets weight
    D0 = np.vstack([D, np.zeros(3)])
    assert S.nnls_betas(np.array([[1.0, 1.0, 1.0]]), D0)[0, 3] == 0.0


def test_ranks_match_brute_force_counting() -> None:
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 4, (5, 12)).astype(float)  # many ties
    tie_break = rng.integers(0, 3, (5, 12)).astype(float)
    true_words = [[0, 3], [5], [1, 2, 11], [7], [4, 9]]
    for ties in S.TIES:
        for tb in (None, tie_break):
            ranks = S.word_ranks(scores, true_words, tie_break=tb, ties=ties)
            for i, words in enumerate(true_words):
                expected = [brute_force_rank(scores[i], None if tb is None else tb[i], w, ties) for w in sorted(words)]
                np.testing.assert_allclose(ranks[i], expected)
            m = S.ranking_score(scores, true_words, tie_break=tb, ties=ties)
            np.testing.assert_allclose(m, [np.mean(1 - (r - 1) / 11) for r in ranks])


def test_ranking_score_hand_examples() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.3]])
    assert S.ranking_score(scores, [[0]])[0] == 1.0  # top word
    assert S.ranking_score(scores, [[1]])[0] == 0.0  # last word
    assert S.ranking_score(scores, [[2, 3]])[0] == pytest.approx((1 - 1 / 3 + 1 - 2 / 3) / 2)
    assert S.ranking_score(scores, [[2, 2]])[0] == pytest.approx(1 - 1 / 3)  # duplicates count once
    tied = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    assert S.ranking_score(tied, [[3]], ties="pessimistic")[0] == 0.0
    assert S.ranking_score(tied, [[3]], ties="optimistic")[0] == pytest.approx(0.75)
    assert S.ranking_score(tied, [[3]], ties="average")[0] == pytest.approx(1 - 2.5 / 4)
    with pytest.raises(ValueError):
        S.ranking_score(tied, [[]])
    with pytest.raises(ValueError):
        S.ranking_score(tied, [[5]])


def test_ranking_score_perfect_and_random() -> None:
    rng = np.random.default_rng(3)
    n, N = 2000, 50
    true_words = [list(rng.choice(N, size=rng.integers(1, 4), replace=False)) for _ in range(n)]
    perfect = np.zeros((n, N))
    for i, words in enumerate(true_words):
        perfect[i, words] = 1.0 + rng.random(len(words))
    # as in the paper, a clip's k true words take ranks 1..k
    expected = [np.mean([1 - r / (N - 1) for r in range(len(w))]) for w in true_words]
    np.testing.assert_allclose(S.ranking_score(perfect, true_words), expected)
    np.testing.assert_allclose(S.ranking_score(perfect, true_words, filtered=True), 1.0)
    single = [w[:1] for w in true_words]
    one_hot = np.zeros((n, N))
    one_hot[np.arange(n), [w[0] for w in single]] = 1.0
    np.testing.assert_allclose(S.ranking_score(one_hot, single), 1.0)
    random = rng.random((n, N))
    assert abs(S.ranking_score(random, true_words).mean() - 0.5) < 0.02
    assert abs(S.ranking_score(random, true_words, filtered=True).mean() - 0.5) < 0.02


def test_filtered_ranks_ignore_other_true_words() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.5, 0.3]])
    assert S.ranking_score(scores, [[0, 1]])[0] == pytest.approx((1 + 1 - 1 / 4) / 2)
    assert S.ranking_score(scores, [[0, 1]], filtered=True)[0] == 1.0
    assert S.ranking_score(scores, [[0, 2]], filtered=True)[0] == pytest.approx((1 + 0) / 2)


def test_nnls_ranking_score_perfect_prediction_and_cosine_ties() -> None:
    rng = np.random.default_rng(4)
    D = rng.standard_normal((30, 40))  # fewer words than dimensions: NNLS recovers the generating words
    true_words = [[3], [7, 12]]
    P = np.stack([D[3], D[7] + D[12]])
    np.testing.assert_allclose(S.nnls_ranking_score(P, D, true_words, filtered=True), 1.0)
    np.testing.assert_allclose(S.nnls_ranking_score(P, D, true_words, ties="pessimistic", filtered=True), 1.0)
    np.testing.assert_allclose(S.nnls_ranking_score(P, D, true_words), [1.0, 1 - 0.5 / 29])
    # a word the projection leaves at zero: cosine tie-breaking ranks it among the zero-beta words by similarity
    betas = S.nnls_betas(P, D)
    cos = S.cosine_similarities(P, D)
    zero = int(np.flatnonzero(betas[0] == 0)[0])
    above = (betas[0] > 0).sum() + ((betas[0] == 0) & (cos[0] > cos[0, zero])).sum()
    got = S.nnls_ranking_score(P[:1], D, [[zero]], betas=betas[:1])[0]
    assert got == pytest.approx(1 - above / 29)
    pessimistic = S.nnls_ranking_score(P[:1], D, [[zero]], betas=betas[:1], ties="pessimistic")[0]
    assert pessimistic == 0.0  # every other zero-beta word goes first
    assert got >= pessimistic


def test_top_words_order() -> None:
    scores = np.array([[0.0, 2.0, 0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(S.top_words(scores, 3), [[1, 3, 0]])  # ties by index
    tie_break = np.array([[0.1, 0.0, 0.9, 0.0, 0.5]])
    np.testing.assert_array_equal(S.top_words(scores, 4, tie_break=tie_break), [[1, 3, 2, 4]])


def test_amcss_hand_examples() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    # true word in the top-N: 1
    assert S.amcss([[2, 0]], [[0]], vectors) == pytest.approx(1.0)
    # best match is word 2 at 45 degrees
    assert S.amcss([[2, 3]], [[0]], vectors) == pytest.approx(np.sqrt(0.5))
    # two true words, averaged: word 0 -> 1 (itself), word 1 -> cos(1, 2) = sqrt(.5)
    assert S.amcss([[0, 2]], [[0, 1]], vectors) == pytest.approx((1 + np.sqrt(0.5)) / 2)
    # averaged over clips; lists truncated to top_n
    assert S.amcss([[3, 0], [1]], [[0], [1]], vectors, top_n=1) == pytest.approx((-1 + 1) / 2)
    scores = np.array([[0.1, 0.0, 0.3, 0.2]])
    assert S.amcss(scores, [[0]], vectors, top_n=1) == pytest.approx(np.sqrt(0.5))
    assert S.amcss(scores, [[0]], vectors, top_n=3) == pytest.approx(1.0)


def test_amcss_curve_matches_single_values_and_is_monotone() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((60, 8))
    scores = rng.random((15, 60))
    true_words = [list(rng.choice(60, size=2, replace=False)) for _ in range(15)]
    curve = S.amcss_curve(scores, true_words, vectors, top_ns=range(5, 16))
    assert list(curve) == list(range(5, 16))
    for k, value in curve.items():
        assert value == pytest.approx(S.amcss(scores, true_words, vectors, top_n=k))
    values = list(curve.values())
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_ranking_with_probabilities_like_catdnn() -> None:
    probabilities = np.array([[0.9, 0.8, 0.1, 0.1], [0.2, 0.2, 0.9, 0.05]], dtype=np.float32)
    m = S.ranking_score(probabilities, [[1], [0, 1]])
    np.testing.assert_allclose(m, [1 - 1 / 3, 1 - 1.5 / 3])


def test_ranking_bars_and_amcss_curves_render(tmp_path) -> None:
    from audiointerp.evaluation import plots

    table = {"FSD50K": {"semDNN": (0.84, 0.01), "catDNN": (0.79, 0.01)}, "ESC-50": {"semDNN": 0.9, "catDNN": 0.85}}
    fig = plots.ranking_bars(table)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title() == "ranking score"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["FSD50K", "ESC-50"]
    assert len(ax.patches) == 4
    assert plots.save_figure(fig, tmp_path / "bars.png").stat().st_size > 0

    curves = {"semDNN": {k: 0.5 + 0.01 * k for k in range(5, 16)}, "catDNN": {k: 0.4 + 0.01 * k for k in range(5, 16)}}
    fig = plots.amcss_curves(curves)
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "AMCSS"
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["semDNN", "catDNN"]
    assert list(fig.axes[0].get_lines()[0].get_xdata()) == list(range(5, 16))
    plots.save_figure(fig, tmp_path / "amcss.png")


# --- one tie rule for both networks (issue 11.2) ---------------------------------------------------------------
# Five words in the positive orthant: e1 is reached by NNLS only through word 0, so the betas of a prediction
# equal to e1 are exactly [1, 0, 0, 0, 0] and word 1 (cosine 0.8 with e1) is tied with three zero-beta words.
CONE = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0.6, 0.8]])


def test_word_scores_rank_semdnn_and_catdnn_with_the_same_tie_rule() -> None:
    p = np.array([[1.0, 0.0, 0.0]])
    betas, tie_break = S.word_scores(p, CONE, target="embedding", ties="average")
    np.testing.assert_allclose(betas, [[1, 0, 0, 0, 0]], atol=1e-12)
    assert tie_break is None
    # average ranks: word 1 is 1 + 1 + 3/2 = 3.5th of 5 -> m = 1 - 2.5/4
    assert S.ranking_score(betas, [[1]], tie_break=tie_break)[0] == pytest.approx(0.375)
    betas, tie_break = S.word_scores(p, CONE, target="embedding", ties="cosine")
    assert S.ranking_score(betas, [[1]], tie_break=tie_break)[0] == pytest.approx(0.75)  # 2nd of 5
    logits = np.array([[5.0, -5.0, -5.0, -5.0, -5.0]])  # catDNN: word 0 certain, the others tied
    probabilities, tie_break = S.word_scores(logits, CONE, target="multi_hot", ties="average")
    assert tie_break is None and probabilities[0, 0] > probabilities[0, 1] == probabilities[0, 4]
    assert S.ranking_score(probabilities, [[1]], tie_break=tie_break)[0] == pytest.approx(0.375)
    # cosine: the tied words are ordered by their cosine to the mean vector of the top word (e1), as for semDNN
    probabilities, tie_break = S.word_scores(logits, CONE, target="multi_hot", ties="cosine", top_k=1)
    assert S.ranking_score(probabilities, [[1]], tie_break=tie_break)[0] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="ties"):
        S.word_scores(p, CONE, target="embedding", ties="optimistic")


def test_a_prediction_away_from_the_truth_scores_below_half_and_a_constant_one_half() -> None:
    D = np.vstack([CONE, [[-1.0, 0, 0]]])  # word 5 points away from word 0
    for ties in ("average", "cosine"):
        away, tb = S.word_scores(np.array([[-1.0, 0, 0]]), D, target="embedding", ties=ties)
        assert S.ranking_score(away, [[0]], tie_break=tb)[0] < 0.5
        constant, tb = S.word_scores(np.zeros((1, 3)), D, target="embedding", ties=ties)
        assert S.ranking_score(constant, [[0], ], tie_break=tb)[0] == pytest.approx(0.5)
        assert S.ranking_score(constant, [[0, 3]], tie_break=tb)[0] == pytest.approx(0.5)
        lowest, tb = S.word_scores(np.array([[1.0, -9.0, -9.0, 2.0, 3.0, 1.5]]), D, target="multi_hot", ties=ties)
        assert S.ranking_score(lowest, [[1, 2]], tie_break=tb)[0] < 0.5
        assert S.ranking_score(lowest, [[1]], ties="average")[0] == pytest.approx(1 - 4.5 / 5)  # tied last two
    constant, tb = S.word_scores(np.full((1, 6), 0.3), D, target="multi_hot", ties="average")
    assert S.ranking_score(constant, [[0], ], tie_break=tb)[0] == pytest.approx(0.5)


def test_probabilities_are_ranked_without_float32_saturation_ties() -> None:
    logits = np.array([[30.0, 25.0, 20.0, -5.0]], dtype=np.float32)  # float32 sigmoid: 1.0, 1.0, 1.0
    probabilities, _ = S.word_scores(logits, np.eye(4), target="multi_hot")
    assert S.ranking_score(probabilities, [[2]])[0] == pytest.approx(1 - 2 / 3)


def test_amcss_with_average_ties_is_the_expectation_over_orders_of_the_tied_words() -> None:
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    scores = np.array([[1.0, 0.0, 0.0, 0.0]])  # word 0 on top, words 1..3 tied
    # top-2 = word 0 plus one of words 1, 2, 3 with probability 1/3 each; true word 2: max(cos(2,0), cos(2,k))
    c = np.sqrt(0.5)
    expected = (max(c, c) + max(c, 1.0) + max(c, -c)) / 3
    assert S.amcss_curve(scores, [[2]], vectors, top_ns=[2], ties="average")[2] == pytest.approx(expected)
    # by index (the old fill), word 1 would always be chosen: max(c, c) = c
    assert S.amcss_curve(scores, [[2]], vectors, top_ns=[2], ties="index")[2] == pytest.approx(c)
    # no tie at the boundary: both rules agree with amcss()
    rng = np.random.default_rng(5)
    V, P = rng.standard_normal((30, 4)), rng.random((6, 30))
    truth = [list(rng.choice(30, size=2, replace=False)) for _ in range(6)]
    a = S.amcss_curve(P, truth, V, top_ns=range(1, 8), ties="average")
    assert a == pytest.approx(S.amcss_curve(P, truth, V, top_ns=range(1, 8), ties="index"))
    # exhaustive check: the expectation over every order of a larger tied block
    scores = np.array([[0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    W = rng.standard_normal((7, 3))
    perms = list(itertools.permutations(range(1, 7)))
    brute = np.mean([S.amcss([[0, *perm[:2]]], [[3]], W) for perm in perms])
    assert S.amcss_curve(scores, [[3]], W, top_ns=[3], ties="average")[3] == pytest.approx(brute)
