"""Factor losses for the flow disentangler: Esser et al. 2020's pair loss and LatentAudio's supervised loss.

The flow T maps x to z, split into factor blocks `[residual, factor 1, factor 2, ...]` of `factor_dims`.

`FactorLoss` (`task.loss=pairs`, the IIN original). A pair (x_a, x_b) shares the value of one factor f. Under
the model z_a is standard normal, and z_b's block f is correlated with z_a's by rho (the other blocks of z_b are
independent standard normal):

    L = E[ 1/2 ||z_a||^2 - log|J_a| ]
      + E[ 1/2 ||z_b,f - rho z_a,f||^2 / (1 - rho^2) + 1/2 ||z_b,not f||^2 - log|J_b| ]

(constants dropped).

`SupervisedFactorLoss` (`task.loss=supervised`, LatentAudio's final code, `SupervisedFactorLossMultiNormal` in
its disentangle.py): the same Gaussian pair model, but on codes whose factor coordinates are first carried from
a mixture of normals to a standard normal, so that each factor coordinate is distributed as an equal mixture of
N(c_k, s^2), one component per class of the factor, at the class centres c_k = spacing * (k - (K - 1) / 2)
(LatentAudio: spacing 4, s = 1: six materials at -10, -6, -2, 2, 6, 10; four actions at -6, -2, 2, 6). Pairs are
drawn independently and share every factor whose values agree (none, one or several). For a block wider than one
dimension the mixture lies along the block's first axis (the centres on a line, as in the 1-D case; the block's
other axes stay standard normal and pair-correlated like the first), so the block's first axis is its factor
coordinate. Mixture components are not assigned to classes: the pair term puts clips of one class in one mode.

Naming. rho is the correlation of the shared factor's codes within a pair. LatentAudio's (and gyoza's) code calls
this value `sigma` (0.9 in its configuration, 0.975 by default); here it is only `rho`. The conditional standard
deviation sqrt(1 - rho^2) is derived (`conditional_std`), never given.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from audiointerp.models.precision import full_precision, full_precision_forward

LOG_2PI = math.log(2 * math.pi)


def _check_rho(rho: float) -> float:
    if rho is None or not 0.0 <= float(rho) < 1.0:
        raise ValueError(f"rho must be in [0, 1) (the within-pair correlation of a shared factor's codes, "
                         f"LatentAudio's `sigma`), got {rho}")
    return float(rho)


def _block_masks(factor_dims: Sequence[int]) -> tuple[list[int], torch.Tensor]:
    if len(factor_dims) < 2 or any(int(d) < 1 for d in factor_dims):
        raise ValueError(f"factor_dims is [residual, factor 1, ...] with positive sizes, got {list(factor_dims)}")
    dims = [int(d) for d in factor_dims]
    bounds = torch.tensor([0, *dims]).cumsum(0)
    masks = torch.zeros(len(dims), int(bounds[-1]), dtype=torch.bool)
    for block in range(len(dims)):
        masks[block, bounds[block]:bounds[block + 1]] = True
    return dims, masks


def _shared_mask(masks: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """[B, dim] dimensions each pair shares, from `shared`: [B] 1-based block indices (one factor per pair) or
    [B, factors] booleans (every factor whose values agree)."""
    factors = masks.shape[0] - 1
    if shared.dim() == 1:
        if bool((shared < 1).any()) or bool((shared > factors).any()):
            raise ValueError(f"shared factors must be in 1..{factors}")
        return masks[shared]
    if shared.dim() != 2 or shared.shape[1] != factors:
        raise ValueError(f"shared must be [pairs] factor indices or [pairs, {factors}] booleans, got {tuple(shared.shape)}")
    return (shared.to(masks.dtype).unsqueeze(2) & masks[1:].unsqueeze(0)).any(1)


@full_precision_forward
class FactorLoss(nn.Module):
    """Esser et al.'s pair loss above; returns the mean over pairs and a report of its terms (detached).

    `rho` is the within-pair correlation of the shared factor's block (LatentAudio's `sigma`)."""

    def __init__(self, factor_dims: Sequence[int], rho: float = 0.975) -> None:
        super().__init__()
        self.rho = _check_rho(rho)
        self.factor_dims, masks = _block_masks(factor_dims)
        self.register_buffer("masks", masks)  # [blocks, dim]; block 0 is the residual

    @property
    def dim(self) -> int:
        return int(self.masks.shape[1])

    @property
    def conditional_std(self) -> float:
        """sqrt(1 - rho^2): the standard deviation of z_b's shared block given z_a's."""
        return math.sqrt(1.0 - self.rho**2)

    @full_precision
    def pair_nll(self, z_a: torch.Tensor, logdet_a: torch.Tensor, z_b: torch.Tensor, logdet_b: torch.Tensor,
                 factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair negative log-likelihoods (nats, constants dropped) of a and of b given a: ([B], [B]).
        `factor` [B]: the shared factor of each pair, 1-based (block index; 0 would be the residual), or
        [B, factors] booleans: the factors each pair shares."""
        if z_a.shape[1] != self.dim:
            raise ValueError(f"the flow gives {z_a.shape[1]} dimensions but factor_dims sum to {self.dim}")
        shared = _shared_mask(self.masks, factor)  # [B, dim]
        nll_a = 0.5 * z_a.pow(2).sum(1) - logdet_a
        correlated = (z_b - self.rho * z_a).pow(2) / (1.0 - self.rho**2)
        nll_b = 0.5 * torch.where(shared, correlated, z_b.pow(2)).sum(1) - logdet_b
        return nll_a, nll_b

    def bits_per_dim(self, nll: torch.Tensor) -> torch.Tensor:
        """The NLL of codes (the standard normal's constants restored) in bits per dimension."""
        return (nll + 0.5 * self.dim * LOG_2PI) / (self.dim * math.log(2.0))

    def forward(self, z_a: torch.Tensor, logdet_a: torch.Tensor, z_b: torch.Tensor, logdet_b: torch.Tensor,
                factor: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss over pairs and its report (see `pair_nll`)."""
        nll_a, nll_b = self.pair_nll(z_a, logdet_a, z_b, logdet_b, factor)
        loss = (nll_a + nll_b).mean()
        return loss, {"loss": loss.detach(), "nll_a": nll_a.mean().detach(), "nll_b": nll_b.mean().detach(),
                      "logdet": logdet_a.mean().detach(), "bits_per_dim": self.bits_per_dim(nll_a.mean()).detach()}


def class_centres(num_classes: int, spacing: float = 4.0) -> torch.Tensor:
    """K centres spaced `spacing` apart, symmetric about 0 (LatentAudio: spacing 4; K = 6 gives -10 ... 10)."""
    if int(num_classes) < 1:
        raise ValueError(f"a factor needs at least one class, got {num_classes}")
    return float(spacing) * (torch.arange(int(num_classes), dtype=torch.float64) - (int(num_classes) - 1) / 2)


class SupervisedFactorLoss(FactorLoss):
    """LatentAudio's supervised factor loss (module docstring): each factor block's first axis u is mapped to
    g(u) = Phi^-1(F(u)), F the CDF of the equal mixture of N(c_k, scale^2) at `class_centres(K, spacing)`; the
    Gaussian pair model with correlation rho applies to the mapped codes, on pairs that share every factor
    marked in `shared` [B, factors]. The change of variables' log-derivative log g'(u) is part of the NLL, so the
    marginal of u is exactly the mixture (LatentAudio's code drops it, which leaves its objective unbounded:
    the flow can spread u while g saturates). Unlike `FactorLoss`, the conditional's log-variance
    1/2 log(1 - rho^2) per shared dimension is kept (pairs share a varying number of factors)."""

    def __init__(self, factor_dims: Sequence[int], num_classes: Sequence[int], rho: float = 0.9, spacing: float = 4.0,
                 scale: float = 1.0) -> None:
        super().__init__(factor_dims, rho)
        if len(num_classes) != len(self.factor_dims) - 1:
            raise ValueError(f"num_classes gives {len(num_classes)} class counts for {len(self.factor_dims) - 1} factors")
        if not float(scale) > 0 or not float(spacing) >= 0:
            raise ValueError(f"the mixture needs scale > 0 and spacing >= 0, got scale={scale}, spacing={spacing}")
        self.num_classes, self.spacing, self.scale = [int(k) for k in num_classes], float(spacing), float(scale)
        self.first_axes = [int(sum(self.factor_dims[:f])) for f in range(1, len(self.factor_dims))]
        for f, k in enumerate(self.num_classes):
            self.register_buffer(f"centres_{f}", class_centres(k, self.spacing))

    def centres(self, factor: int) -> torch.Tensor:
        """The class centres of factor `factor` (0-based, the residual excluded)."""
        return getattr(self, f"centres_{factor}")

    def to_normal(self, u: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(g(u), log g'(u)) for a factor coordinate u [B], in float64: F's tails taken on the nearer side, so
        g stays exact out to about 37 scales past the outermost centre."""
        u = u.double()
        x = (u.unsqueeze(1) - self.centres(factor)) / self.scale  # [B, K]
        log_k = math.log(x.shape[1])
        log_lower = torch.logsumexp(torch.special.log_ndtr(x), 1) - log_k  # log F(u)
        log_upper = torch.logsumexp(torch.special.log_ndtr(-x), 1) - log_k  # log (1 - F(u))
        tiny = math.log(torch.finfo(torch.float64).tiny)
        lower = torch.special.ndtri(log_lower.clamp(min=tiny).exp())
        upper = -torch.special.ndtri(log_upper.clamp(min=tiny).exp())
        g = torch.where(log_lower < log_upper, lower, upper)
        log_density = torch.logsumexp(-0.5 * x.pow(2), 1) - log_k - math.log(self.scale) - 0.5 * LOG_2PI
        return g, log_density + 0.5 * g.pow(2) + 0.5 * LOG_2PI

    def mapped(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes with each factor's first axis mapped to a standard normal, and the summed log g' [B]."""
        columns, log_derivative = list(z.double().unbind(1)), torch.zeros(len(z), dtype=torch.float64, device=z.device)
        for f, axis in enumerate(self.first_axes):
            columns[axis], term = self.to_normal(z[:, axis], f)
            log_derivative = log_derivative + term
        return torch.stack(columns, 1), log_derivative

    @full_precision
    def pair_nll(self, z_a: torch.Tensor, logdet_a: torch.Tensor, z_b: torch.Tensor, logdet_b: torch.Tensor,
                 factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pair NLLs (nats, the standard normal's constants dropped) of a and of b given a, in z_a's dtype.
        `factor`: [B, factors] booleans, the factors each pair shares (or [B] 1-based indices, one each)."""
        if z_a.shape[1] != self.dim:
            raise ValueError(f"the flow gives {z_a.shape[1]} dimensions but factor_dims sum to {self.dim}")
        shared = _shared_mask(self.masks, factor)
        (w_a, log_da), (w_b, log_db) = self.mapped(z_a), self.mapped(z_b)
        nll_a = 0.5 * w_a.pow(2).sum(1) - log_da - logdet_a.double()
        variance = 1.0 - self.rho**2
        correlated = (w_b - self.rho * w_a).pow(2) / variance + math.log(variance)
        nll_b = 0.5 * torch.where(shared, correlated, w_b.pow(2)).sum(1) - log_db - logdet_b.double()
        return nll_a.to(z_a.dtype), nll_b.to(z_a.dtype)


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
