"""The factor loss of Esser et al. 2020."""

from __future__ import annotations

import math

import pytest
import torch

from audiointerp.losses import FactorLoss, SupervisedFactorLoss
from audiointerp.losses.factor import class_centres


def test_value_equals_a_direct_computation() -> None:
    torch.manual_seed(0)
    loss_fn = FactorLoss([3, 1, 2], rho=0.9)
    z_a, z_b = torch.randn(4, 6), torch.randn(4, 6)
    logdet_a, logdet_b = torch.randn(4), torch.randn(4)
    factor = torch.tensor([1, 2, 2, 1])
    loss, report = loss_fn(z_a, logdet_a, z_b, logdet_b, factor)
    expected = []
    for i in range(4):
        dims = [3] if factor[i] == 1 else [4, 5]
        rest = [d for d in range(6) if d not in dims]
        nll_a = 0.5 * float((z_a[i] ** 2).sum()) - float(logdet_a[i])
        nll_b = 0.5 * float(((z_b[i, dims] - 0.9 * z_a[i, dims]) ** 2).sum()) / (1 - 0.81) \
            + 0.5 * float((z_b[i, rest] ** 2).sum()) - float(logdet_b[i])
        expected.append(nll_a + nll_b)
    assert float(loss) == pytest.approx(sum(expected) / 4, rel=1e-6)
    assert float(report["bits_per_dim"]) == pytest.approx(
        (float(report["nll_a"]) + 3 * math.log(2 * math.pi)) / (6 * math.log(2)), rel=1e-6)


def test_pairs_that_share_their_factor_coordinate_cost_less_than_unrelated_pairs() -> None:
    torch.manual_seed(0)
    loss_fn = FactorLoss([62, 1, 1], rho=0.98)
    z_a = torch.randn(2000, 64)
    factor = torch.ones(2000, dtype=torch.long)
    related = torch.randn(2000, 64)
    related[:, 62] = loss_fn.rho * z_a[:, 62] + math.sqrt(1 - loss_fn.rho**2) * torch.randn(2000)
    zeros = torch.zeros(2000)
    assert loss_fn(z_a, zeros, related, zeros, factor)[0] < loss_fn(z_a, zeros, torch.randn(2000, 64), zeros, factor)[0] - 1


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rho must be in"):
        FactorLoss([62, 1, 1], rho=1.0)
    with pytest.raises(ValueError, match="factor_dims"):
        FactorLoss([64])
    loss_fn = FactorLoss([2, 1, 1])
    with pytest.raises(ValueError, match="sum to 4"):
        loss_fn(torch.randn(2, 5), torch.zeros(2), torch.randn(2, 5), torch.zeros(2), torch.ones(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in 1..2"):
        loss_fn(torch.randn(2, 4), torch.zeros(2), torch.randn(2, 4), torch.zeros(2), torch.tensor([0, 3]))


def test_dimension_estimate_gives_more_dimensions_to_the_factor_pairs_share_most() -> None:
    from audiointerp.losses import estimate_factor_dims

    torch.manual_seed(0)
    n, dim = 4000, 64
    material, action = torch.randint(0, 6, (2, n)), torch.randint(0, 4, (2, n))
    material_code, action_code = torch.randn(6, dim) * 2.0, torch.randn(4, dim) * 0.5

    def features(i: int) -> torch.Tensor:
        return material_code[material[i]] + action_code[action[i]] + torch.randn(n, dim)

    factor = torch.randint(1, 3, (n,))
    material[1] = torch.where(factor == 1, material[0], material[1])  # pairs share the material (factor 1) ...
    action[1] = torch.where(factor == 2, action[0], action[1])  # ... or the action (factor 2)
    dims = estimate_factor_dims(features(0), features(1), factor, 2)
    assert sum(dims) == dim and dims[1] > dims[2] >= 0
    with pytest.raises(ValueError, match="no pair shares factor 2"):
        estimate_factor_dims(features(0), features(1), torch.ones(n, dtype=torch.long), 2)


def test_rho_is_the_within_pair_correlation_and_sigma_is_derived_not_accepted() -> None:
    """LatentAudio's `sigma` (0.9) is the correlation of paired factor codes: here that is rho; the conditional
    standard deviation sqrt(1 - rho^2) is derived, and a `sigma` argument is refused rather than reinterpreted."""
    loss_fn = FactorLoss([62, 1, 1], rho=0.9)
    assert loss_fn.rho == 0.9 and loss_fn.conditional_std == pytest.approx(math.sqrt(1 - 0.81))
    with pytest.raises(TypeError):
        FactorLoss([62, 1, 1], sigma=0.9)  # type: ignore[call-arg]


def test_class_centres_are_latentaudios() -> None:
    """disentangle.py: 6 materials at -10, -6, -2, 2, 6, 10 and 4 actions at -6, -2, 2, 6 (spacing 4, sd 1)."""
    assert class_centres(6).tolist() == [-10.0, -6.0, -2.0, 2.0, 6.0, 10.0]
    assert class_centres(4).tolist() == [-6.0, -2.0, 2.0, 6.0]
    assert class_centres(3, spacing=2.0).tolist() == [-2.0, 0.0, 2.0]


def test_supervised_marginal_is_the_mixture_of_normals_at_the_class_centres() -> None:
    """nll_a of the supervised loss, by hand: the first axis of each factor block is distributed as the equal
    mixture of N(centre_k, 1) over the factor's classes; every other dimension is standard normal."""
    torch.manual_seed(1)
    loss_fn = SupervisedFactorLoss([2, 3, 1], num_classes=[4, 6], rho=0.9)
    z_a, z_b = 4 * torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    logdet = torch.randn(5, dtype=torch.float64)
    nll_a, _ = loss_fn.pair_nll(z_a, logdet, z_b, logdet, torch.zeros(5, 2, dtype=torch.bool))

    def mixture_nll(u: float, centres: list[float]) -> float:
        density = sum(math.exp(-0.5 * (u - c) ** 2) / math.sqrt(2 * math.pi) for c in centres) / len(centres)
        return -math.log(density) - 0.5 * math.log(2 * math.pi)  # as the loss, the standard normal's constant dropped

    for i in range(5):
        z = z_a[i].tolist()
        expected = 0.5 * (z[0] ** 2 + z[1] ** 2 + z[3] ** 2 + z[4] ** 2) - float(logdet[i])
        expected += mixture_nll(z[2], [-6, -2, 2, 6]) + mixture_nll(z[5], [-10, -6, -2, 2, 6, 10])
        assert float(nll_a[i]) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_supervised_loss_with_one_class_per_factor_is_the_pair_loss() -> None:
    """With one class per factor the mixture is N(0, 1), the transform is the identity, and the supervised loss
    on pairs that share one factor is Esser et al.'s pair loss plus its log-variance constant."""
    torch.manual_seed(2)
    rho = 0.9
    pairs, supervised = FactorLoss([3, 1, 2], rho=rho), SupervisedFactorLoss([3, 1, 2], num_classes=[1, 1], rho=rho)
    z_a, z_b = torch.randn(8, 6), torch.randn(8, 6)
    logdet_a, logdet_b = torch.randn(8), torch.randn(8)
    factor = torch.tensor([1, 2, 2, 1, 1, 2, 1, 2])
    shared = torch.nn.functional.one_hot(factor - 1, 2).bool()
    a_pairs, b_pairs = pairs.pair_nll(z_a, logdet_a, z_b, logdet_b, factor)
    a_sup, b_sup = supervised.pair_nll(z_a, logdet_a, z_b, logdet_b, shared)
    shared_dims = torch.tensor([1.0 if f == 1 else 2.0 for f in factor.tolist()])
    torch.testing.assert_close(a_sup, a_pairs)
    torch.testing.assert_close(b_sup, b_pairs + 0.5 * shared_dims * math.log(1 - rho**2))


def test_supervised_pairs_of_a_class_cost_less_near_their_centre_than_between_centres() -> None:
    """Two clips of one class (shared factor) placed at the same class centre cost less than at the outer centres."""
    loss_fn = SupervisedFactorLoss([1, 1, 1], num_classes=[4, 4], rho=0.9)
    zero = torch.zeros(1)
    same = torch.tensor([[True, False]])
    at = lambda u: torch.tensor([[0.0, u, 0.0]])  # noqa: E731
    near, _ = loss_fn(at(-6.0), zero, at(-6.1), zero, same)
    apart, _ = loss_fn(at(-6.0), zero, at(6.0), zero, same)
    unrelated, _ = loss_fn(at(-6.0), zero, at(6.0), zero, torch.tensor([[False, False]]))
    assert float(near) < float(apart) - 5.0 and float(unrelated) < float(apart) - 5.0
    with pytest.raises(ValueError, match="num_classes"):
        SupervisedFactorLoss([1, 1, 1], num_classes=[4], rho=0.9)
    with pytest.raises(ValueError, match="rho must be in"):
        SupervisedFactorLoss([1, 1, 1], num_classes=[4, 4], rho=1.0)
