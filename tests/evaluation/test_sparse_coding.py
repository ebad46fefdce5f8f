"""Concept decomposition: preparation, the lasso's limit at l1 = 0 (NNLS, semDNN's solver), sparsity, recovery."""

from __future__ import annotations

import numpy as np
import pytest

from audiointerp.evaluation.ranking import nnls_betas
from audiointerp.evaluation.sparse_coding import (
    decompose,
    prepare,
    reconstruction_cosine,
    sparsity_sweep,
    top_concepts,
)


def planted(n: int = 20, concepts: int = 50, dim: int = 100, seed: int = 0):
    """Embeddings that are non-negative mixtures of 3 dictionary rows each."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(concepts, dim))
    chosen = np.stack([rng.choice(concepts, 3, replace=False) for _ in range(n)])
    weights = np.zeros((n, concepts))
    for row, idx in enumerate(chosen):
        weights[row, idx] = rng.uniform(0.5, 1.5, 3)
    return weights @ dictionary, dictionary, chosen


def test_prepare_normalises_centres_and_renormalises() -> None:
    x = np.random.default_rng(1).normal(size=(30, 8)) + 3.0
    prepared, mean = prepare(x)
    np.testing.assert_allclose(np.linalg.norm(prepared, axis=1), 1.0)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(mean, unit.mean(0))
    again, _ = prepare(x[:3], mean=mean)  # new data prepared with the training mean
    np.testing.assert_allclose(again, prepared[:3])


def test_l1_zero_is_nnls_and_the_lasso_tends_to_it() -> None:
    rng = np.random.default_rng(2)
    dictionary, x = rng.normal(size=(12, 40)), rng.normal(size=(5, 40))  # fewer concepts than dimensions: unique
    exact = decompose(x, dictionary, 0.0)
    np.testing.assert_array_equal(exact, nnls_betas(x, dictionary))  # the same solver as semDNN's ranking
    assert (exact >= 0).all() and (exact == 0).any()
    np.testing.assert_allclose(decompose(x, dictionary, 1e-8, max_iter=100000), exact, atol=1e-4)


def test_sparser_with_larger_l1_and_planted_concepts_come_first() -> None:
    x, dictionary, chosen = planted()
    sweep = sparsity_sweep(x, dictionary, [0.0, 0.01, 0.1, 1.0])
    nonzero = [row["nonzero"] for row in sweep]
    assert nonzero == sorted(nonzero, reverse=True) and nonzero[-1] < nonzero[0]
    assert sweep[0]["cosine"] > 0.999 and sweep[-1]["cosine"] < sweep[0]["cosine"]
    weights = decompose(x, dictionary, 0.05)
    vocabulary = [f"concept{i}" for i in range(50)]
    for row, top in enumerate(top_concepts(weights, vocabulary, k=3)):
        assert {name for name, _ in top} == {f"concept{i}" for i in chosen[row]}
    assert reconstruction_cosine(x, weights, dictionary).min() > 0.99
    with pytest.raises(ValueError, match="l1 must be"):
        decompose(x, dictionary, -1.0)


def test_the_default_decomposition_is_the_lasso_to_1e_4_on_a_correlated_dictionary() -> None:
    """The concepts task's baseline and `analyze concepts` read `decompose` at its default tolerance: on a correlated
    dictionary of the shipped vocabulary's size (402 x 50) its weights are the lasso's (scikit-learn at tol=1e-10)."""
    from tests.train.tasks.test_concepts_task import correlated_problem, exact_lasso

    x, mean, text = correlated_problem(0)
    audio, _ = prepare(x, mean=mean)
    star = exact_lasso(audio, text, 0.05)
    error = np.linalg.norm(decompose(audio, text, 0.05) - star, axis=1) / np.linalg.norm(star, axis=1)
    assert error.max() <= 1e-4, f"relative error per sound up to {error.max():.3g}"
