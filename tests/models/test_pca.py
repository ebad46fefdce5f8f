"""The invertible PCA pipeline of the flow's input."""

from __future__ import annotations

import numpy as np
import pytest

from audiointerp.models.pca import InvertiblePCA


@pytest.mark.parametrize("samples,features", [(400, 50), (60, 300)])
def test_round_trip_within_1e_4_relative_and_standardised_components(samples: int, features: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 8)) @ rng.normal(size=(8, features)) * 3 + rng.normal(size=(samples, features)) + 5
    pca = InvertiblePCA().fit(x)
    components, remainder = pca.transform(x)
    assert components.shape == (samples, min(samples - 1, features))  # full rank: centring removes one direction
    np.testing.assert_allclose(components.mean(0), 0, atol=1e-8)
    np.testing.assert_allclose(components.std(0), 1, atol=1e-6)
    variances = pca.output_scale**2
    assert np.all(np.diff(variances) <= 1e-9)  # ordered by explained variance
    assert np.linalg.norm(pca.inverse(components, remainder) - x) / np.linalg.norm(x) < 1e-4
    new = rng.normal(size=(5, 8)) @ rng.normal(size=(8, features)) + 5  # unseen data also round-trip
    np.testing.assert_allclose(pca.inverse(*pca.transform(new)), new, rtol=1e-6, atol=1e-6)
    if samples > features:
        np.testing.assert_allclose(remainder, 0, atol=1e-8)


def test_editing_a_component_moves_the_input_along_that_direction_only() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 20))
    pca = InvertiblePCA().fit(x)
    components, remainder = pca.transform(x[:3])
    edited = components.copy()
    edited[:, 0] += 1.0
    moved = pca.inverse(edited, remainder)
    again, _ = pca.transform(moved)
    np.testing.assert_allclose(again[:, 1:], components[:, 1:], atol=1e-8)
    np.testing.assert_allclose(again[:, 0], components[:, 0] + 1.0, atol=1e-8)


def test_first_k_components_equal_the_full_rank_ones_and_still_invert_exactly() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 40)) * 2 + rng.normal(size=(200, 40)) * 0.3
    full, first = InvertiblePCA().fit(x), InvertiblePCA(num_components=5).fit(x)
    full_components, _ = full.transform(x)
    components, remainder = first.transform(x)
    assert components.shape == (200, 5) and remainder.shape == (200, 40)
    signs = np.sign((full_components[:, :5] * components).sum(0))  # a principal axis is defined up to sign
    np.testing.assert_allclose(components * signs, full_components[:, :5], atol=1e-6)
    np.testing.assert_allclose(first.inverse(components, remainder), x, rtol=1e-8, atol=1e-8)


def test_saved_state_rebuilds_the_same_pipeline() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 12))
    pca = InvertiblePCA(num_components=4).fit(x)
    again = InvertiblePCA.from_state({k: v.astype(np.float32).astype(np.float64) if k == "mean" else v
                                      for k, v in pca.state().items()})
    np.testing.assert_allclose(again.transform(x)[0], pca.transform(x)[0], atol=1e-5)
    with pytest.raises(ValueError, match="lacks components"):
        InvertiblePCA.from_state({k: v for k, v in pca.state().items() if k != "components"})
    with pytest.raises(ValueError, match="at most 12"):
        InvertiblePCA(num_components=13).fit(x)
    with pytest.raises(ValueError, match="fitted on 12 features"):
        pca.transform(x[:, :5])
