"""The concept bottleneck of the `concepts` family (Zhang, Thomaz & Lu 2025): projector -> SpLiCE preparation ->
non-negative lasso over a fixed concept dictionary, solved exactly -> linear head.

`nonnegative_lasso` runs FISTA with adaptive restarts until the exact minimiser on the iterate's support passes the
KKT conditions; gradients reach the projector by implicit differentiation on the support (`support_solution`),
not through the iterations. The objective and the scale of l1 are `evaluation.sparse_coding.decompose`'s.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.errors import ConfigError

log = logging.getLogger("audiointerp")


def support_solution(a: torch.Tensor, dictionary: torch.Tensor, gram: torch.Tensor, penalty: float,
                     support: torch.Tensor) -> torch.Tensor:
    """w [B, K] with w = 0 off `support` [B, K] and, on it, the stationarity condition of the non-negative lasso
    min 1/2 ||w D - a||^2 + penalty * sum(w) solved exactly: G_SS w_S = (D a)_S - penalty (G = D D^T).

    This is the lasso solution whenever `support` is its support (`kkt_holds` checks), and it is differentiable in
    `a`: its gradient is the implicit derivative of the solution (the support is locally constant). Each sound's
    system is gathered to the largest support in the batch, padded with identity rows; a relative ridge of 1e-13
    on the diagonal keeps a singular G_SS (a support larger than d) solvable."""
    batch, concepts = support.shape
    out = a.new_zeros(batch, concepts)
    size = int(support.sum(1).max()) if support.any() else 0
    if size == 0:
        return out
    order = torch.argsort((~support).to(torch.int8), dim=1, stable=True)[:, :size]  # each sound's support first
    valid = support.gather(1, order)
    zero = a.new_zeros(())
    both = valid[:, :, None] & valid[:, None, :]
    system = torch.where(both, gram[order[:, :, None], order[:, None, :]], zero)
    diagonal = torch.where(valid, gram.diagonal().amax() * 1e-13, a.new_ones(()))
    system = system + torch.diag_embed(diagonal)
    rhs = torch.where(valid, (a @ dictionary.T).gather(1, order) - penalty, zero)
    values = torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)
    return out.scatter(1, order, torch.where(valid, values, zero))


def kkt_holds(w: torch.Tensor, b: torch.Tensor, gram: torch.Tensor, penalty: float, tol: float) -> torch.Tensor:
    """[B] bool: w >= 0 satisfies the optimality conditions of min 1/2 w G w - b w + penalty sum(w), w >= 0, to
    `tol` relative to each sound's largest |b| + penalty: gradient 0 on the support, >= 0 off it."""
    gradient = w @ gram - b + penalty
    scale = (b.abs().amax(1, keepdim=True) + penalty) * tol
    on = w > 0
    return (w >= 0).all(1) & (torch.where(on, gradient.abs(), 0.0) <= scale).all(1) & \
        (torch.where(on, 0.0, -gradient) <= scale).all(1)


@torch.no_grad()
def nonnegative_lasso(a: torch.Tensor, dictionary: torch.Tensor, l1: float, tol: float = 1e-9, max_steps: int = 5000,
                      check_every: int = 10, init: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The non-negative lasso of `decompose`: w [B, K] >= 0 minimising (1/2d)(||w D - a||^2 + l1 ||w||_1) for each
    row of a [B, d] over the dictionary D [K, d], in float64. Returns (w, solved [B] bool, iterations run).

    FISTA (step 1/sigma_max(D)^2) with O'Donoghue and Candes' gradient restart, per sound, from `init` (a warm
    start) or zero. Every `check_every` iterations the iterate's support is polished (`support_solution`: the exact
    minimiser on that support) and a sound whose polished point satisfies the KKT conditions to `tol`
    (`kkt_holds`) is solved: its answer is that point, exact up to the linear solve. A sound still unsolved after
    `max_steps` keeps its last FISTA iterate (solved False)."""
    a = a.double()
    dictionary = dictionary.to(a)
    penalty = float(l1) / 2.0  # the objective times d
    gram = dictionary @ dictionary.T
    step = 1.0 / float(torch.linalg.matrix_norm(dictionary, ord=2)) ** 2
    b = a @ dictionary.T
    w = a.new_zeros(b.shape) if init is None else init.to(b).clamp_min(0.0)
    y, momentum = w.clone(), a.new_ones(len(b), 1)
    result, solved = w.clone(), torch.zeros(len(b), dtype=torch.bool, device=a.device)
    tried = torch.zeros_like(b, dtype=torch.bool)  # the support last polished, per sound
    steps = 0
    for steps in range(0 if init is not None else 1, max_steps + 1):
        if steps > 0:
            new = torch.relu(y - step * ((y @ dictionary - a) @ dictionary.T + penalty))
            restart = ((y - new) * (new - w)).sum(1, keepdim=True) > 0
            following = (1.0 + torch.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
            y = new + torch.where(restart, 0.0, (momentum - 1.0) / following) * (new - w)
            momentum = torch.where(restart, 1.0, following)
            w = new
        if steps % check_every:
            continue
        support = w > 0
        todo = torch.nonzero(~solved & (support != tried).any(1)).squeeze(1)
        if len(todo):
            tried[todo] = support[todo]
            polished = support_solution(a[todo], dictionary, gram, penalty, support[todo])
            good = kkt_holds(polished, b[todo], gram, penalty, tol)
            result[todo[good]] = polished[good]
            solved[todo[good]] = True
        if bool(solved.all()):
            return result, solved, steps
    result[~solved] = w[~solved]
    return result, solved, steps


class ConceptBottleneck(nn.Module):
    """Projector -> SpLiCE preparation -> non-negative lasso over the concepts (solved exactly) -> linear head.

    The lasso is `decompose`'s (same objective and scale of l1), solved by `nonnegative_lasso` to `tol`; its
    gradient is implicit differentiation on the solution's support (`support_solution`), not backpropagation
    through the iterations. `forward(x, index)` with the examples' indices warm-starts each from its previous
    solution (kept per index, outside the state dict)."""

    def __init__(self, dictionary: torch.Tensor, audio_mean: torch.Tensor, num_classes: int, l1: float,
                 tol: float = 1e-9, max_steps: int = 5000) -> None:
        super().__init__()
        if l1 < 0:
            raise ConfigError(f"task.l1={l1}: the lasso penalty must be >= 0 (0 is non-negative least squares)")
        dim = dictionary.shape[1]
        self.projector = nn.Linear(dim, dim)
        with torch.no_grad():
            self.projector.weight.copy_(torch.eye(dim))
            self.projector.bias.zero_()
        self.register_buffer("dictionary", dictionary.float())  # [K, d], prepared
        self.register_buffer("audio_mean", audio_mean.float())
        self.head = nn.Linear(dictionary.shape[0], num_classes)
        self.l1, self.tol, self.max_steps = float(l1), float(tol), int(max_steps)
        self.warm: dict[str, torch.Tensor] = {}  # data set -> [examples, K] float64 last solutions (warm starts)
        self.last_steps, self.unsolved = 0, 0  # the last call's FISTA iterations and sounds left unsolved

    def prepared(self, x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(self.projector(x), dim=-1)
        return F.normalize(unit - self.audio_mean, dim=-1)

    def concept_weights(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, cache: str = "train") -> torch.Tensor:
        """Non-negative weights [B, K] minimising (1/2d)(||w D - a||^2 + l1 ||w||_1), `decompose`'s objective, for the
        prepared projections a of x; differentiable in x (implicit differentiation on the support). With the
        examples' `index` (positions in one data set, named `cache`), each starts from its previous solution."""
        a = self.prepared(x)
        dictionary = self.dictionary.double()
        previous = self.warm.get(cache) if index is not None else None
        usable = previous is not None and previous.device == a.device and int(index.max()) < len(previous)
        w, solved, self.last_steps = nonnegative_lasso(a.detach(), dictionary, self.l1, self.tol, self.max_steps,
                                                       init=previous[index] if usable else None)
        self.unsolved = int((~solved).sum())
        if self.unsolved:
            log.warning("concept bottleneck: %d of %d sounds not solved to tol %g in %d FISTA steps (their last "
                        "iterate is used)", self.unsolved, len(w), self.tol, self.max_steps)
        if index is not None:
            if not usable:
                grown = w.new_zeros(max(int(index.max()) + 1, 0 if previous is None else len(previous)), w.shape[1])
                if previous is not None and previous.device == a.device:
                    grown[: len(previous)] = previous
                self.warm[cache] = previous = grown
            previous[index] = w
        if torch.is_grad_enabled() and a.requires_grad:
            exact = support_solution(a.double(), dictionary, dictionary @ dictionary.T, self.l1 / 2.0, w > 0)
            w = w + (exact - exact.detach())  # the solution's value, the implicit derivative's gradient
        return w.to(a.dtype)

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, cache: str = "train") -> torch.Tensor:
        return self.head(self.concept_weights(x, index, cache))
