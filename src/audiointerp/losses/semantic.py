"""Losses of the semantic-embedding family (semDNN / catDNN / CAE), as plain modules."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.models.precision import full_precision_forward


@full_precision_forward
class AngularDistanceLoss(nn.Module):
    """arccos(cosine(prediction, target)) / pi, averaged: 0 for the same direction, 1 for opposite ones.

    The cosine is clamped to [-1 + eps, 1 - eps] before arccos, whose derivative is infinite at +-1, so the
    gradients stay finite when a prediction is (anti)parallel to its target.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cosine = F.cosine_similarity(prediction.float(), target.float(), dim=-1, eps=1e-8)
        return (torch.arccos(cosine.clamp(-1.0 + self.eps, 1.0 - self.eps)) / math.pi).mean()


@full_precision_forward
class MultiHotBCELoss(nn.Module):
    """Binary cross-entropy of one sigmoid unit per dictionary word against multi-hot targets."""

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, multi_hot: torch.Tensor) -> torch.Tensor:
        weight = None if self.pos_weight is None else torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits.float(), multi_hot.float(), pos_weight=weight)


@full_precision_forward
class ReconstructionLoss(nn.Module):
    """Mean squared error between a reconstruction and its input (the CAE's loss)."""

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(reconstruction.float(), target.float())
