"""A small log-mel CNN classifier: the foundation's baseline network."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from audiointerp.models.registry import register_model
from audiointerp.models.taps import Stage, TappedNetwork


class ConvBlock(nn.Sequential):
    """conv3x3 - BN - ReLU, twice, then 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2, ceil_mode=True),
        )


class SmallCNN(TappedNetwork):
    """Conv blocks over [B, 1, bands, frames], global mean+max pooling, dropout, a linear head.

    Layers for taps: `block1 ... blockN`, `embedding` (pooled, [B, widths[-1]]) and `logits`.
    """

    head_prefix = "head."

    def __init__(self, num_classes: int, widths: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        channels = [1, *widths]
        self.blocks = nn.Sequential(*(ConvBlock(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:])))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels[-1], num_classes)

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """Global mean + max over bands and frames."""
        return x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))

    def stages(self) -> list[Stage]:
        blocks: list[Stage] = [(f"block{i + 1}", block) for i, block in enumerate(self.blocks)]
        return [*blocks, ("embedding", self.pool), ("logits", lambda x: self.head(self.dropout(x)))]


@register_model("small_cnn", frontend="logmel")
def small_cnn(num_classes: int, widths: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.2) -> SmallCNN:
    """Small log-mel CNN (baseline classifier of the foundation)."""
    return SmallCNN(num_classes, widths=tuple(widths), dropout=dropout)
