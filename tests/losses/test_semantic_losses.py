from __future__ import annotations

import math

import pytest
import torch

from audiointerp.losses import AngularDistanceLoss, MultiHotBCELoss, ReconstructionLoss


def test_angular_distance_values() -> None:
    loss = AngularDistanceLoss(eps=0.0)
    a = torch.tensor([[1.0, 0.0]])
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(a, torch.tensor([[0.0, 3.0]])).item() == pytest.approx(0.5)
    assert loss(a, -a).item() == pytest.approx(1.0, abs=1e-6)
    assert loss(a * 5, a).item() == pytest.approx(0.0, abs=1e-6)  # scale-free


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_angular_distance_gradients_are_finite_at_the_extremes(sign: float) -> None:
    prediction = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)
    loss = AngularDistanceLoss()(prediction, sign * prediction.detach().clone())
    loss.backward()
    assert torch.isfinite(prediction.grad).all()
    zero = torch.zeros(1, 3, requires_grad=True)  # a zero prediction has no direction
    AngularDistanceLoss()(zero, torch.ones(1, 3)).backward()
    assert torch.isfinite(zero.grad).all()


def test_angular_distance_gradient_points_towards_the_target() -> None:
    prediction = torch.tensor([[1.0, 0.2]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0]])
    AngularDistanceLoss()(prediction, target).backward()
    stepped = prediction.detach() - 0.1 * prediction.grad
    assert AngularDistanceLoss()(stepped, target) < AngularDistanceLoss()(prediction.detach(), target)


def test_multi_hot_bce_and_reconstruction() -> None:
    logits = torch.tensor([[10.0, -10.0, 0.0]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    assert MultiHotBCELoss()(logits, target).item() == pytest.approx(math.log(2) / 3, rel=1e-3)
    x = torch.randn(2, 1, 96, 64)
    assert ReconstructionLoss()(x, x).item() == 0.0
    assert ReconstructionLoss()(x + 1, x).item() == pytest.approx(1.0)
