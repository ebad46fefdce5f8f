"""An invertible flow on vectors (the disentangler of Esser et al. 2020, as used by Dick et al.).

Every layer maps x -> (y, log|det dy/dx|) exactly and has an exact inverse:

- `ActNorm`: per-dimension scale and shift, initialised from the first training batch (zero mean, unit variance);
- `Coupling`: half the dimensions (a fixed mask: alternating or halves) condition a shift (`additive`) or a
  tanh-bounded log-scale and a shift (`affine`) of the other half, through an MLP with LeakyReLU;
- `Permutation`: a fixed random permutation (seeded), log-determinant 0;
- `Householder`: a product of learned reflections (orthogonal), log-determinant 0.

`Flow(dim, blocks, ...)` stacks LatentAudio's stages: [shuffle (a fixed permutation), coupling, coupling with the
complementary mask (LatentAudio's checkerboard swap between its two couplings), ActNorm, Householder].
`forward(x) -> (z, logdet)`, `inverse(z) -> x`.

Nothing in a training step waits for the device: the couplings select their halves by integer indices (a boolean
mask would need `nonzero`, a host-device synchronisation per coupling, and a graph break under `torch.compile`),
and ActNorm reads its `initialised` flag from the device once, not at every step.
"""

from __future__ import annotations

import torch
from torch import nn


class ActNorm(nn.Module):
    """y = (x + shift) * exp(log_scale), data-initialised on the first forward in training mode."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialised", torch.tensor(False))
        self.known_initialised = False  # `initialised` was read as True: no more reads (each would synchronise)
        self.register_load_state_dict_post_hook(ActNorm._forget_initialised)

    @staticmethod
    def _forget_initialised(module: nn.Module, incompatible_keys: object) -> None:
        """After loading a state dict: read its `initialised` again at the next training forward."""
        module.known_initialised = False

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        self.shift.copy_(-x.mean(0))
        self.log_scale.copy_(-torch.log(x.std(0, unbiased=False).clamp_min(1e-6)))
        self.initialised.fill_(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and not self.known_initialised:
            if not bool(self.initialised):
                self._initialise(x)
            self.known_initialised = True
        y = (x + self.shift) * self.log_scale.exp()
        return y, self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.shift


def coupling_mask(dim: int, kind: str) -> torch.Tensor:
    """A boolean mask of the conditioning half: `checkerboard` (alternating) or `halves` (first half)."""
    if kind == "checkerboard":
        return torch.arange(dim) % 2 == 0
    if kind == "halves":
        return torch.arange(dim) < dim // 2
    raise ValueError(f"unknown coupling mask {kind!r}; choose checkerboard or halves")


class Coupling(nn.Module):
    """Coupling layer: the masked half passes unchanged and conditions the other half's shift (and scale)."""

    def __init__(self, dim: int, mask: torch.Tensor, hidden: int = 64, depth: int = 3, kind: str = "affine") -> None:
        super().__init__()
        if kind not in ("affine", "additive"):
            raise ValueError(f"unknown coupling {kind!r}; choose affine or additive")
        self.kind = kind
        self.register_buffer("mask", mask.clone())
        self._index_halves()
        self.register_load_state_dict_post_hook(Coupling._reindex)
        n_in, n_out = len(self.kept), len(self.changed)
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        last = nn.Linear(width, n_out * (2 if kind == "affine" else 1))
        nn.init.zeros_(last.weight)  # starts as the identity
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)

    def _index_halves(self) -> None:
        """`kept` / `changed`: the indices of the mask's conditioning half and of the half it transforms."""
        self.register_buffer("kept", self.mask.nonzero().squeeze(1), persistent=False)
        self.register_buffer("changed", (~self.mask).nonzero().squeeze(1), persistent=False)

    @staticmethod
    def _reindex(module: nn.Module, incompatible_keys: object) -> None:
        """After loading a state dict: the indices of its mask."""
        module._index_halves()

    def _shift_scale(self, condition: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(condition)
        if self.kind == "additive":
            return out, torch.zeros_like(out)
        shift, raw = out.chunk(2, dim=-1)
        return shift, torch.tanh(raw)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift, log_scale = self._shift_scale(x.index_select(1, self.kept))
        y = x.index_copy(1, self.changed, x.index_select(1, self.changed) * log_scale.exp() + shift)
        return y, log_scale.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        shift, log_scale = self._shift_scale(y.index_select(1, self.kept))
        return y.index_copy(1, self.changed, (y.index_select(1, self.changed) - shift) * torch.exp(-log_scale))


class Permutation(nn.Module):
    """A fixed permutation of the dimensions (seeded)."""

    def __init__(self, dim: int, seed: int) -> None:
        super().__init__()
        order = torch.randperm(dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("order", order)
        self.register_buffer("inverse_order", torch.argsort(order))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, self.order], x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, self.inverse_order]


class Householder(nn.Module):
    """A product of `reflections` learned Householder reflections: orthogonal, log-determinant 0."""

    def __init__(self, dim: int, reflections: int = 8) -> None:
        super().__init__()
        self.vectors = nn.Parameter(torch.randn(reflections, dim) / dim**0.5)

    def _reflect(self, x: torch.Tensor, order: range | reversed) -> torch.Tensor:
        for i in order:
            v = self.vectors[i] / self.vectors[i].norm().clamp_min(1e-12)
            x = x - 2.0 * (x @ v)[:, None] * v
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._reflect(x, range(len(self.vectors))), x.new_zeros(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._reflect(y, reversed(range(len(self.vectors))))


class Flow(nn.Module):
    """Stacked invertible blocks on [B, dim] vectors: `forward(x) -> (z, logdet)`, `inverse(z) -> x`."""

    def __init__(self, dim: int, blocks: int = 3, hidden: int = 64, depth: int = 3, coupling: str = "affine",
                 mask: str = "checkerboard", householder: int = 8, seed: int = 0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"a coupling flow needs at least 2 dimensions, got {dim}")
        layers: list[nn.Module] = []
        base = coupling_mask(dim, mask)
        for block in range(blocks):
            layers += [Permutation(dim, seed + block), Coupling(dim, base, hidden, depth, coupling),
                       Coupling(dim, ~base, hidden, depth, coupling), ActNorm(dim)]
            if householder:
                layers.append(Householder(dim, householder))
        self.layers = nn.ModuleList(layers)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, step = layer(x)
            logdet = logdet + step
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z
