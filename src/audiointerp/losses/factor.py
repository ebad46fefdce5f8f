"""The factor loss of Esser et al. 2020 (interpretable invertible networks), for the flow disentangler.

The flow T maps x to z, split into factor blocks `[residual, factor 1, factor 2, ...]` of `factor_dims`. A pair
(x_a, x_b) shares the value of one factor f. Under the model, z_a is standard normal, and z_b's block f is
correlated with z_a's by rho (the other blocks of z_b are independent standard normal):

    L = E[ 1/2 ||z_a||^2 - log|J_a| ]
      + E[ 1/2 ||z_b,f - rho z_a,f||^2 / (1 - rho^2) + 1/2 ||z_b,not f||^2 - log|J_b| ]

(constants dropped). `sigma` may be given instead of rho: rho = sqrt(1 - sigma^2).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn


class FactorLoss(nn.Module):
    """The pair loss above; returns the mean over pairs and a report of its terms (detached)."""

    def __init__(self, factor_dims: Sequence[int], rho: Optional[float] = 0.975, sigma: Optional[float] = None) -> None:
        super().__init__()
        if sigma is not None:
            rho = math.sqrt(1.0 - sigma**2)
        if rho is None or not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1) (or sigma in (0, 1]), got rho={rho}, sigma={sigma}")
        if len(factor_dims) < 2 or any(int(d) < 1 for d in factor_dims):
            raise ValueError(f"factor_dims is [residual, factor 1, ...] with positive sizes, got {list(factor_dims)}")
        self.rho = float(rho)
        self.factor_dims = [int(d) for d in factor_dims]
        bounds = torch.tensor([0, *self.factor_dims]).cumsum(0)
        masks = torch.zeros(len(self.factor_dims), int(bounds[-1]), dtype=torch.bool)
        for block in range(len(self.factor_dims)):
            masks[block, bounds[block]:bounds[block + 1]] = True
        self.register_buffer("masks", masks)  # [blocks, dim]; block 0 is the residual

    @property
    def dim(self) -> int:
        return int(self.masks.shape[1])

    def pair_nll(self, z_a: torch.Tensor, logdet_a: torch.Tensor, z_b: torch.Tensor, logdet_b: torch.Tensor,
                 factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair negative log-likelihoods (nats, constants dropped) of a and of b given a: ([B], [B]).
        `factor` [B]: the shared factor of each pair, 1-based (block index; 0 would be the residual)."""
        if z_a.shape[1] != self.dim:
            raise ValueError(f"the flow gives {z_a.shape[1]} dimensions but factor_dims sum to {self.dim}")
        if bool((factor < 1).any()) or bool((factor >= len(self.factor_dims)).any()):
            raise ValueError(f"shared factors must be in 1..{len(self.factor_dims) - 1}")
        shared = self.masks[factor]  # [B, dim]
        nll_a = 0.5 * z_a.pow(2).sum(1) - logdet_a
        correlated = (z_b - self.rho * z_a).pow(2) / (1.0 - self.rho**2)
        nll_b = 0.5 * torch.where(shared, correlated, z_b.pow(2)).sum(1) - logdet_b
        return nll_a, nll_b

    def bits_per_dim(self, nll: torch.Tensor) -> torch.Tensor:
        """The NLL of standard-normal codes (constants restored) in bits per dimension."""
        return (nll + 0.5 * self.dim * math.log(2 * math.pi)) / (self.dim * math.log(2.0))

    def forward(self, z_a: torch.Tensor, logdet_a: torch.Tensor, z_b: torch.Tensor, logdet_b: torch.Tensor,
                factor: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss over pairs and its report (see `pair_nll`)."""
        nll_a, nll_b = self.pair_nll(z_a, logdet_a, z_b, logdet_b, factor)
        loss = (nll_a + nll_b).mean()
        return loss, {"loss": loss.detach(), "nll_a": nll_a.mean().detach(), "nll_b": nll_b.mean().detach(),
                      "logdet": logdet_a.mean().detach(), "bits_per_dim": self.bits_per_dim(nll_a.mean()).detach()}


def estimate_factor_dims(x_a: torch.Tensor, x_b: torch.Tensor, factor: torch.Tensor, num_factors: int) -> list[int]:
    """The per-factor dimension estimate of Esser et al. (iin's "dim callback"), a diagnostic for `factor_dims`.

    For pairs (x_a, x_b) sharing factor f (1..num_factors), the score of f is the summed covariance between the
    pair members around their joint mean, divided by the total variance of all x; the residual scores 1. The
    softmax of the scores splits the dimension; rounding leftovers go to the residual. Returns
    `[residual, factor 1, ..., factor num_factors]`.
    """
    x_a, x_b = x_a.double().flatten(1), x_b.double().flatten(1)
    both = torch.cat([x_a, x_b])
    total_variance = both.var(0, unbiased=False).sum()
    scores = [torch.tensor(1.0, dtype=torch.float64)]
    for f in range(1, num_factors + 1):
        pairs = factor == f
        if not bool(pairs.any()):
            raise ValueError(f"no pair shares factor {f}")
        a, b = x_a[pairs], x_b[pairs]
        centre = 0.5 * (a.mean(0) + b.mean(0))
        scores.append(((a - centre) * (b - centre)).mean(0).sum() / total_variance)
    shares = torch.softmax(torch.stack(scores), 0)
    dim = x_a.shape[1]
    dims = [int(s * dim) for s in shares.tolist()]
    dims[0] += dim - sum(dims)
    return dims
