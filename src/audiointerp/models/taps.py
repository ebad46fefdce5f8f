"""Layer taps: run a network up to a named layer, and continue from that layer's activation.

A tapped network is an ordered list of named stages; each stage maps the previous stage's output to its own.
`forward_until(x, name)` returns the output of stage `name`; `forward_from(activation, name)` applies the stages
after it, so `forward_from(forward_until(x, name), name) == forward(x)` for every layer name.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

Stage = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


class TappedNetwork(nn.Module):
    """Base of every zoo network with layer taps; subclasses define `stages()`."""

    def stages(self) -> Sequence[Stage]:
        """(layer name, function) pairs in order; the last one produces the network's output."""
        raise TypeError(f"{type(self).__name__} must define stages()")

    def layer_names(self) -> list[str]:
        return [name for name, _ in self.stages()]

    def _index(self, layer: str) -> int:
        names = self.layer_names()
        if layer not in names:
            raise KeyError(f"{type(self).__name__} has no layer {layer!r}; layers: {', '.join(names)}")
        return names.index(layer)

    def forward_until(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The activation of `layer` for input features `x`."""
        stop = self._index(layer)
        for _, stage in self.stages()[: stop + 1]:
            x = stage(x)
        return x

    def forward_from(self, activation: torch.Tensor, layer: str) -> torch.Tensor:
        """Continue from `layer`'s activation to the network's output."""
        start = self._index(layer)
        for _, stage in self.stages()[start + 1 :]:
            activation = stage(activation)
        return activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self.stages():
            x = stage(x)
        return x
