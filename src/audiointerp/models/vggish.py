"""VGGish log-mel front end and the VGGish-like semDNN / catDNN / CAE networks (Esposito et al., ICASSP 2023).

The front end follows VGGish's `vggish_input.waveform_to_examples`: 25 ms frames (400 samples at 16 kHz) taken
every 10 ms without centre padding (only complete frames), a periodic Hann window, |rfft| over 512 points, 64 HTK
mel bands from 125 to 7500 Hz whose triangles are linear in mel (not in Hz as in torchaudio's `melscale_fbanks`),
log(mel + 0.01), then examples of 96 frames x 64 bands taken every 96 frames, again without padding.

The three networks share a VGGish-like encoder (conv blocks, global average pooling, one fully connected layer,
the "last shared layer" `embedding`); only the output differs: a linear layer onto a word-embedding space (semDNN),
one logit per dictionary word (catDNN), or a mirrored decoder back to the input patch (CAE).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.models.frontends import as_mono_batch, compact_buffers
from audiointerp.models.registry import register_model
from audiointerp.models.taps import Stage, TappedNetwork

Variant = Literal["sem", "cat", "cae"]


def hz_to_mel_htk(hz: torch.Tensor) -> torch.Tensor:
    """HTK mel scale: 1127 ln(1 + f / 700)."""
    return 1127.0 * torch.log1p(hz / 700.0)


def vggish_mel_matrix(n_freqs: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """[n_freqs, n_mels] triangular filters, linear in HTK mel between equally spaced mel edges; DC bin gets 0."""
    bins_mel = hz_to_mel_htk(torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64))
    mel_min, mel_max = hz_to_mel_htk(torch.tensor([f_min, f_max], dtype=torch.float64)).tolist()
    edges = torch.linspace(mel_min, mel_max, n_mels + 2, dtype=torch.float64)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights[0] = 0.0
    return weights


class VGGishFrontend(nn.Module):
    """Waveform [B, T] or [B, C, T] at 16 kHz to VGGish log-mel examples [B, P, 1, frames=96, bands=64].

    STFT frames hold `win_length` samples every `hop_length` samples, with no centre padding (frames that run past
    the end are dropped); each is multiplied by a periodic Hann window and zero-padded to `n_fft` for the
    magnitude |rfft|. Examples of `patch_seconds` are taken every `patch_hop_seconds` (0.96 s; YAMNet uses 0.48 s)
    and incomplete ones dropped. A clip too short for one example (under `min_samples` = win_length +
    (patch frames - 1) hop_length, 15,600 samples = 0.975 s by default; VGGish itself would return no example)
    is zero-padded at the end to exactly one example. The buffers are float64: a float64 waveform is processed in
    float64 (the numpy reference's precision), anything else in float32.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 512,
        win_length: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        f_min: float = 125.0,
        f_max: float = 7500.0,
        log_offset: float = 0.01,
        patch_seconds: float = 0.96,
        patch_hop_seconds: float = 0.96,
    ) -> None:
        super().__init__()
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
        if not 0 < win_length <= n_fft:
            raise ValueError(f"need 0 < win_length <= n_fft, got win_length={win_length}, n_fft={n_fft}")
        frames_per_second = sample_rate / hop_length
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.log_offset = log_offset
        self.patch_frames = int(round(patch_seconds * frames_per_second))
        self.patch_hop_frames = int(round(patch_hop_seconds * frames_per_second))
        if self.patch_frames < 1 or self.patch_hop_frames < 1:
            raise ValueError(f"patch_seconds={patch_seconds} and patch_hop_seconds={patch_hop_seconds} must be at least one frame")
        self.min_samples = win_length + (self.patch_frames - 1) * hop_length
        # The Hann window sits at the start of each n_fft-sample STFT frame, followed by zeros: the frame is then
        # exactly VGGish's `win_length` samples, zero-padded at the end to n_fft.
        window = torch.zeros(n_fft, dtype=torch.float64)
        window[:win_length] = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        self.register_buffer("window", window)
        self.register_buffer("mel_matrix", vggish_mel_matrix(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max))
        compact_buffers(self)

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Log-mel frames [B, frames, bands] of a waveform (no example framing, no padding to one example).

        Computed in float32, or in float64 for a float64 waveform (VGGish's numpy reference precision: in float32,
        bands of a tonal clip that sit near the log floor differ from it by up to ~1e-3).
        """
        audio = as_mono_batch(waveform)
        audio = audio if audio.dtype == torch.float64 else audio.float()
        if audio.shape[-1] < self.win_length:
            raise ValueError(f"a clip needs at least {self.win_length} samples for one STFT frame, got {audio.shape[-1]}")
        audio = F.pad(audio, (0, self.n_fft - self.win_length))
        spectrum = torch.stft(audio, self.n_fft, self.hop_length, self.n_fft, window=self.window.to(audio.dtype),
                              center=False, return_complex=True).abs()
        return torch.log(spectrum.transpose(1, 2) @ self.mel_matrix.to(audio.dtype) + self.log_offset)

    def num_patches(self, num_samples: int) -> int:
        """How many examples a clip of `num_samples` samples gives."""
        frames = 1 + (max(num_samples, self.min_samples) - self.win_length) // self.hop_length
        return 1 + (frames - self.patch_frames) // self.patch_hop_frames

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        audio = as_mono_batch(waveform)
        if audio.shape[-1] < self.min_samples:
            audio = F.pad(audio, (0, self.min_samples - audio.shape[-1]))
        frames = self.log_mel(audio)  # [B, frames, bands]
        patches = frames.unfold(1, self.patch_frames, self.patch_hop_frames)  # [B, P, bands, patch_frames]
        return patches.transpose(2, 3).unsqueeze(2).contiguous()


class ConvBlock(nn.Module):
    """conv 3x3 - ReLU - max-pool 2x2 - BatchNorm - Dropout (VGGish-like downsampling block)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.bn = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.bn(self.pool(torch.relu(self.conv(x)))))


class DenseBlock(nn.Module):
    """linear - ReLU - BatchNorm1d - Dropout (the fully connected embedding layer)."""

    def __init__(self, in_features: int, out_features: int, dropout: float) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.bn = nn.BatchNorm1d(out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.bn(torch.relu(self.linear(x))))


class UpBlock(nn.Module):
    """Nearest upsampling to a fixed size - conv 3x3 - ReLU - BatchNorm - Dropout (mirror of `ConvBlock`)."""

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int], dropout: float) -> None:
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.bn(torch.relu(self.conv(F.interpolate(x, size=self.size, mode="nearest")))))


class Decoder(nn.Module):
    """Embedding [N, E] back to a patch [N, 1, H, W], mirroring the encoder's blocks.

    `fc`: linear onto the last block's map (ReLU, BatchNorm, Dropout on the map); `blocks`: one `UpBlock` per
    encoder block but the first, each going back to the previous block's width and size; `output`: upsampling to
    the input size and a linear conv 3x3 to one channel.
    """

    def __init__(
        self, embedding_dim: int, widths: Sequence[int], block_sizes: Sequence[tuple[int, int]], input_size: tuple[int, int],
        dropout: float,
    ) -> None:
        super().__init__()
        # block_sizes[i]: the spatial size after encoder block i + 1
        self.map_shape = (widths[-1], *block_sizes[-1])
        self.output_size = input_size
        self.fc = nn.Linear(embedding_dim, math.prod(self.map_shape))
        self.fc_bn = nn.BatchNorm2d(widths[-1])
        self.fc_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            UpBlock(widths[i], widths[i - 1], block_sizes[i - 1], dropout) for i in range(len(widths) - 1, 0, -1)
        )
        self.output = nn.Conv2d(widths[0], 1, 3, padding=1)

    def from_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_dropout(self.fc_bn(torch.relu(self.fc(x)).view(-1, *self.map_shape)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(F.interpolate(x, size=self.output_size, mode="nearest"))


class VGGishNet(TappedNetwork):
    """VGGish-like network on log-mel examples [N, 1, 96, 64] (frames x bands).

    Encoder: `len(widths)` conv blocks (conv 3x3 - ReLU - max-pool 2 - BatchNorm - Dropout), global average pooling,
    a fully connected layer of `embedding_dim` (ReLU - BatchNorm - Dropout), the last shared layer. Output by variant:
    `sem` a linear layer of `num_classes` units (the word-embedding dimension; raw, the loss normalises),
    `cat` `num_classes` logits (one a dictionary word; the sigmoid is in the loss), `cae` a mirrored decoder
    back to [N, 1, 96, 64].

    Layers for taps: `block1 ... blockN`, `pooled`, `embedding`, then `output` (sem, cat) or
    `decoder1 ... decoderN` and `reconstruction` (cae).
    """

    def __init__(
        self,
        variant: Variant,
        num_classes: int | None = None,
        widths: Sequence[int] = (64, 128, 256, 512),
        embedding_dim: int = 512,
        dropout: float = 0.2,
        input_size: tuple[int, int] = (96, 64),
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if variant not in ("sem", "cat", "cae"):
            raise ValueError(f"variant must be 'sem', 'cat' or 'cae', got {variant!r}")
        if not widths or min(widths) < 1:
            raise ValueError(f"widths must be one or more positive channel counts, got {widths}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.variant = variant
        self.input_size = (int(input_size[0]), int(input_size[1]))
        channels = [1, *widths]
        self.blocks = nn.ModuleList(ConvBlock(c_in, c_out, dropout) for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.fc = DenseBlock(widths[-1], embedding_dim, dropout)
        if variant == "cae":
            block_sizes = [self.input_size]
            for _ in widths:  # max-pooling with ceil_mode halves each side, rounding up
                block_sizes.append((math.ceil(block_sizes[-1][0] / 2), math.ceil(block_sizes[-1][1] / 2)))
            self.decoder = Decoder(embedding_dim, widths, block_sizes[1:], self.input_size, dropout)
            self.head_prefix: tuple[str, ...] | str = ()
        else:
            if num_classes is None or num_classes < 1:
                raise ValueError(f"the {variant} variant needs num_classes >= 1, got {num_classes}")
            self.head = nn.Linear(embedding_dim, num_classes)
            self.head_prefix = "head."

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """Global average over frames and bands."""
        return x.mean(dim=(2, 3))

    def stages(self) -> list[Stage]:
        encoder: list[Stage] = [(f"block{i + 1}", block) for i, block in enumerate(self.blocks)]
        encoder += [("pooled", self.pool), ("embedding", self.fc)]
        if self.variant != "cae":
            return [*encoder, ("output", self.head)]
        decoder: list[Stage] = [("decoder1", self.decoder.from_embedding)]
        decoder += [(f"decoder{i + 2}", block) for i, block in enumerate(self.decoder.blocks)]
        return [*encoder, *decoder, ("reconstruction", self.decoder.reconstruct)]


@register_model("semdnn", frontend="vggish")
def semdnn(num_classes: int = 300, widths: Sequence[int] = (64, 128, 256, 512), embedding_dim: int = 512,
           dropout: float = 0.2) -> VGGishNet:
    """semDNN: VGGish-like encoder, linear output onto a word-embedding space (num_classes = its dimension)."""
    return VGGishNet("sem", num_classes, widths=widths, embedding_dim=embedding_dim, dropout=dropout)


@register_model("catdnn", frontend="vggish")
def catdnn(num_classes: int, widths: Sequence[int] = (64, 128, 256, 512), embedding_dim: int = 512,
           dropout: float = 0.2) -> VGGishNet:
    """catDNN: VGGish-like encoder, one logit per dictionary word (num_classes = dictionary size)."""
    return VGGishNet("cat", num_classes, widths=widths, embedding_dim=embedding_dim, dropout=dropout)


@register_model("cae", frontend="vggish")
def cae(widths: Sequence[int] = (64, 128, 256, 512), embedding_dim: int = 512, dropout: float = 0.2) -> VGGishNet:
    """CAE: VGGish-like encoder and a mirrored decoder reconstructing the log-mel example."""
    return VGGishNet("cae", widths=widths, embedding_dim=embedding_dim, dropout=dropout)
