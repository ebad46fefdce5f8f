"""Losses as plain `nn.Module`s."""

from audiointerp.losses.semantic import AngularDistanceLoss, MultiHotBCELoss, ReconstructionLoss

__all__ = ["AngularDistanceLoss", "MultiHotBCELoss", "ReconstructionLoss"]
