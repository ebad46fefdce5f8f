"""BEATs (Chen et al. 2023, "BEATs: Audio Pre-Training with Acoustic Tokenizers"), written here.

The architecture of the released checkpoints (all of them share it): 16 x 16 patches of a 128-band Kaldi fbank,
a 512-d patch embedding with LayerNorm and a projection to 768, a weight-normed grouped positional convolution,
and 12 post-LN transformer layers with DeepNorm residual scaling (alpha = (2 x 12)^(1/4)), a bucketed relative
position bias shared by all layers (320 buckets, max distance 800, over flattened patch indices) and gated per
layer from the projected queries. Fine-tuned checkpoints add a linear predictor whose logits are averaged over
patches. `state_dict()` keys are the official ones (`patch_embedding`, `layer_norm`, `post_extract_proj`,
`encoder.pos_conv.0.weight_g/weight_v/bias`, `encoder.layer_norm`, `encoder.layers.N.self_attn.*`, `fc1`, `fc2`,
`final_layer_norm`, `predictor`), so an official `.pt` (`{"cfg": ..., "model": ...}`) loads strictly.

Front end (`beats_fbank`): waveform x 2^15 -> torchaudio's Kaldi fbank (128 bins, 25 ms / 10 ms) -> (fbank -
15.41663) / (2 x 6.55582), as [B, 1, T, 128] (time x mel, the orientation BEATs' patches use).
Taps: `patches` (the projected patch features), `layer1`..`layer12`, and `logits` (with a predictor head) or
`features` (the last layer's patches averaged, without one).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.models.registry import register_frontend, register_model
from audiointerp.models.taps import Stage, TappedNetwork

WEIGHTS_HINT = "the BEATs README of github.com/microsoft/unilm (beats/), e.g. BEATs_iter3_plus_AS2M.pt"
FBANK_MEAN, FBANK_STD = 15.41663, 6.55582


@register_frontend("beats_fbank")
class BEATsFbank(nn.Module):
    """BEATs' input: Kaldi fbank of the waveform scaled to 16-bit range, normalised; [B, 1, T, 128]."""

    def __init__(self, sample_rate: int = 16000, num_mel_bins: int = 128, frame_length: float = 25.0,
                 frame_shift: float = 10.0, mean: float = FBANK_MEAN, std: float = FBANK_STD) -> None:
        super().__init__()
        self.sample_rate, self.num_mel_bins = sample_rate, num_mel_bins
        self.frame_length, self.frame_shift, self.mean, self.std = frame_length, frame_shift, mean, std

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        import torchaudio.compliance.kaldi as kaldi

        if waveform.dim() == 3:  # [B, C, N]: average the channels
            waveform = waveform.mean(1)
        fbanks = [kaldi.fbank(w[None] * 2**15, num_mel_bins=self.num_mel_bins, sample_frequency=self.sample_rate,
                              frame_length=self.frame_length, frame_shift=self.frame_shift) for w in waveform]
        return ((torch.stack(fbanks) - self.mean) / (2 * self.std))[:, None]


class WeightNormConv1d(nn.Module):
    """Conv1d with weight = g * v / ||v||, the norm over (out, in) for each kernel tap (weight norm, dim 2)."""

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding, self.groups = kernel // 2, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.randn(channels, channels // groups, kernel) * (4.0 / (kernel * channels)) ** 0.5)
        self.bias = nn.Parameter(torch.zeros(channels))
        with torch.no_grad():
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight_g * self.weight_v / self.weight_v.norm(dim=(0, 1), keepdim=True)
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class DropLast(nn.Module):
    """Drop the last time step (an even kernel's 'same' padding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-1]


def relative_buckets(length: int, buckets: int, max_distance: int, device: torch.device) -> torch.Tensor:
    """T5-style bidirectional buckets of key index minus query index [length, length]."""
    position = torch.arange(length, dtype=torch.long, device=device)
    relative = position[None, :] - position[:, None]
    half = buckets // 2
    bucket = (relative > 0).to(torch.long) * half
    relative = relative.abs()
    exact = half // 2
    large = exact + (torch.log(relative.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.minimum(large, torch.full_like(large, half - 1))
    return bucket + torch.where(relative < exact, relative, large)


class BEATsAttention(nn.Module):
    """Self-attention with the shared relative position bias, gated per layer from the projected queries."""

    def __init__(self, dim: int, heads: int, bias: nn.Embedding, buckets: int, max_distance: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.relative_attention_bias = bias  # one module shared by every layer (its key appears in each)
        self.buckets, self.max_distance = buckets, max_distance
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.grep_linear = nn.Linear(self.head_dim, 8)
        self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        buckets = relative_buckets(length, self.buckets, self.max_distance, device)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # [H, T, T]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q = self.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, d]
        k = self.k_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        gates = torch.sigmoid(self.grep_linear(q).view(batch, self.heads, length, 2, 4).sum(-1))
        gate_a, gate_b = gates.chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.grep_a - 1.0) + 2.0  # [B, H, T, 1]
        bias = gate * self.position_bias(length, x.device)[None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))


class BEATsLayer(nn.Module):
    """Post-LN transformer layer with DeepNorm residual scaling."""

    def __init__(self, dim: int, ffn: int, heads: int, bias: nn.Embedding, buckets: int, max_distance: int,
                 alpha: float) -> None:
        super().__init__()
        self.self_attn = BEATsAttention(dim, heads, bias, buckets, max_distance)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.alpha + self.self_attn(x))
        return self.final_layer_norm(x * self.alpha + self.fc2(F.gelu(self.fc1(x))))


class BEATsEncoder(nn.Module):
    def __init__(self, dim: int, ffn: int, heads: int, layers: int, conv_pos: int, conv_groups: int, buckets: int,
                 max_distance: int) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(WeightNormConv1d(dim, conv_pos, conv_groups), DropLast() if conv_pos % 2 == 0
                                      else nn.Identity(), nn.GELU())
        shared = nn.Embedding(buckets, heads)
        alpha = (2.0 * layers) ** 0.25
        self.layers = nn.ModuleList(BEATsLayer(dim, ffn, heads, shared, buckets, max_distance, alpha) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(dim)

    def embed_positions(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2))


class BEATs(TappedNetwork):
    """BEATs: fbank [B, 1, T, 128] -> logits [B, num_classes] (a predictor head) or features [B, 768]."""

    head_prefix = "predictor."

    def __init__(self, num_classes: Optional[int] = None, patch: int = 16, embed_dim: int = 512, dim: int = 768,
                 ffn: int = 3072, heads: int = 12, layers: int = 12, conv_pos: int = 128, conv_groups: int = 16,
                 buckets: int = 320, max_distance: int = 800) -> None:
        super().__init__()
        self.post_extract_proj = nn.Linear(embed_dim, dim) if embed_dim != dim else None
        self.patch_embedding = nn.Conv2d(1, embed_dim, kernel_size=patch, stride=patch, bias=False)
        self.encoder = BEATsEncoder(dim, ffn, heads, layers, conv_pos, conv_groups, buckets, max_distance)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.predictor = nn.Linear(dim, num_classes) if num_classes else None

    def patches(self, fbank: torch.Tensor) -> torch.Tensor:
        """Patch features [B, P, dim], patch p = t * (128 / patch) + f, with the positional convolution."""
        x = self.patch_embedding(fbank)
        x = self.layer_norm(x.reshape(x.shape[0], x.shape[1], -1).transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder.embed_positions(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x).mean(1) if self.predictor is not None else x.mean(1)

    def stages(self) -> list[Stage]:
        layers: list[Stage] = [("patches", self.patches)]
        layers += [(f"layer{i + 1}", layer) for i, layer in enumerate(self.encoder.layers)]
        layers.append(("logits" if self.predictor is not None else "features", self.head))
        return layers


@register_model("beats", frontend="beats_fbank", weights_hint=WEIGHTS_HINT)
def build_beats(num_classes: Optional[int] = None, patch: int = 16, embed_dim: int = 512, dim: int = 768, ffn: int = 3072,
                heads: int = 12, layers: int = 12, conv_pos: int = 128, conv_groups: int = 16, buckets: int = 320,
                max_distance: int = 800) -> BEATs:
    """BEATs with the released architecture (smaller sizes for tests); `num_classes` adds the predictor head (527 for
    the AS2M fine-tunes; None: the pre-trained encoder, whose output is its mean patch feature)."""
    return BEATs(num_classes, patch, embed_dim, dim, ffn, heads, layers, conv_pos, conv_groups, buckets, max_distance)
