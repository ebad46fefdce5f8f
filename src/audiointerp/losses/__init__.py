"""Losses as plain `nn.Module`s."""

from audiointerp.losses.factor import FactorLoss, SupervisedFactorLoss, class_centres, estimate_factor_dims
from audiointerp.losses.semantic import AngularDistanceLoss, MultiHotBCELoss, ReconstructionLoss
from audiointerp.losses.spectral import MultiResolutionSTFTDistance, snr_db

__all__ = [
    "AngularDistanceLoss",
    "FactorLoss",
    "MultiHotBCELoss",
    "MultiResolutionSTFTDistance",
    "ReconstructionLoss",
    "SupervisedFactorLoss",
    "class_centres",
    "estimate_factor_dims",
    "snr_db",
]
