"""ArchiSound `autoencoder1d-AT-v1` (audio-encoders-pytorch `AutoEncoder1d`) and a waveform-to-waveform wrapper.

`build("autoencoder1d-at-v1", checkpoint=PATH)` returns the bare autoencoder (stereo waveforms at 48 kHz in and
out, keys `encoder.*` / `decoder.*`); hub checkpoints, whose keys start `autoencoder.`, load through
`remap_state_dict`. `AutoencoderWrapper` puts it between a classifier's waveforms and the classifier: mono to
stereo, resampling to the autoencoder's rate and back, padding to its downsampling factor, mono out.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
import torchaudio
from audio_encoders_pytorch import AutoEncoder1d, TanhBottleneck
from torch import nn

from audiointerp.errors import ConfigError
from audiointerp.models.precision import full_precision
from audiointerp.models.registry import load_weights, register_frontend, register_model
from audiointerp.models.taps import Stage, TappedNetwork

HUB_PREFIX = "autoencoder."  # the hub model keeps the AutoEncoder1d as `.autoencoder`
WEIGHTS_HINT = (
    "the Hugging Face repository archinetai/autoencoder1d-AT-v1 (pytorch_model.bin); download it yourself"
)
STARTS = ("random", "pretrained")
PARTS = ("encoder", "decoder", "both")


@register_frontend("waveform")
class WaveformFrontend(nn.Module):
    """Identity front end for networks that take waveforms: returns its input unchanged."""

    def __init__(self, sample_rate: int = 48000) -> None:
        super().__init__()
        self.sample_rate = sample_rate

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return waveform


class ArchiSoundAutoencoder(AutoEncoder1d):
    """`AutoEncoder1d` with a Tanh bottleneck that knows its downsampling factor and reads hub checkpoints."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        multipliers: Sequence[int],
        factors: Sequence[int],
        num_blocks: Sequence[int],
        patch_size: int,
        resnet_groups: int,
        sample_rate: int = 48000,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            channels=channels,
            multipliers=list(multipliers),
            factors=list(factors),
            num_blocks=list(num_blocks),
            patch_size=patch_size,
            resnet_groups=resnet_groups,
            bottleneck=TanhBottleneck(),
        )
        self.in_channels = in_channels
        self.latent_channels = channels * multipliers[-1]
        self.downsample_factor = patch_size * math.prod(factors)
        self.sample_rate = sample_rate

    def remap_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Strip the hub model's `autoencoder.` prefix; keys without it pass unchanged."""
        if state and all(k.startswith(HUB_PREFIX) for k in state):
            return {k[len(HUB_PREFIX) :]: v for k, v in state.items()}
        return dict(state)


def _ints(values: Sequence[int], name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a list of integers, got {values!r}") from err


@register_model("autoencoder1d-at-v1", frontend="waveform", frontend_params={"sample_rate": 48000}, weights_hint=WEIGHTS_HINT)
def autoencoder1d_at_v1(
    channels: int = 32,
    multipliers: Sequence[int] = (1, 2, 4, 8, 8, 8, 1),
    factors: Sequence[int] = (2, 2, 2, 1, 1, 1),
    num_blocks: Sequence[int] = (2, 2, 8, 8, 8, 8),
    in_channels: int = 2,
    patch_size: int = 4,
    resnet_groups: int = 8,
) -> ArchiSoundAutoencoder:
    """ArchiSound autoencoder1d-AT-v1 (defaults: 20,770,642 parameters, stereo 48 kHz, 32x downsampling)."""
    multipliers, factors, num_blocks = _ints(multipliers, "multipliers"), _ints(factors, "factors"), _ints(num_blocks, "num_blocks")
    if len(multipliers) != len(factors) + 1 or len(num_blocks) != len(factors):
        raise ConfigError(
            f"need len(multipliers) == len(factors) + 1 == len(num_blocks) + 1, got {len(multipliers)}, "
            f"{len(factors)}, {len(num_blocks)}"
        )
    if (channels * multipliers[0]) % patch_size or (channels * multipliers[-1]) % patch_size:
        raise ConfigError(f"channels * multipliers[0] and [-1] must be divisible by patch_size={patch_size}")
    edge_groups = min(patch_size, in_channels)  # the patcher's and unpatcher's GroupNorms
    if in_channels % edge_groups or any((channels * m // patch_size) % edge_groups for m in (multipliers[0], multipliers[-1])):
        raise ConfigError(
            f"in_channels and channels * multipliers[0] / patch_size (and [-1]) must be divisible by "
            f"min(patch_size, in_channels)={edge_groups}"
        )
    if any((channels * m) % resnet_groups for m in multipliers):
        raise ConfigError(f"every channels * multiplier must be divisible by resnet_groups={resnet_groups}")
    return ArchiSoundAutoencoder(in_channels, channels, multipliers, factors, num_blocks, patch_size, resnet_groups)


def initialise(module: nn.Module, start: str, checkpoint: str | Path | None = None) -> nn.Module:
    """Set the autoencoder's starting weights, in place; returns `module`.

    `"random"`: xavier-uniform weights of Conv1d, ConvTranspose1d and Linear, zero biases, GroupNorm weight 1 and
    bias 0. `"pretrained"`: load the local `checkpoint` (the hub file or one pretrained here) with `load_weights`.
    """
    if start == "random":
        for sub in module.modules():
            if isinstance(sub, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
                nn.init.xavier_uniform_(sub.weight)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.GroupNorm) and sub.affine:
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)
    elif start == "pretrained":
        if checkpoint is None:
            raise ConfigError("start 'pretrained' needs a local checkpoint file")
        load_weights(module, checkpoint, hint=WEIGHTS_HINT)
    else:
        raise ConfigError(f"unknown autoencoder start {start!r}; choose one of {', '.join(STARTS)}")
    return module


@full_precision
def resample(waveform: torch.Tensor, from_rate: int, to_rate: int) -> torch.Tensor:
    """torchaudio's windowed-sinc resampling, in float32 whatever the training precision: a bf16 convolution
    would add a noise floor near -48 dB to every clip the autoencoder and the classifier see."""
    return torchaudio.functional.resample(waveform, from_rate, to_rate)


class AutoencoderWrapper(nn.Module):
    """Waveforms at `input_rate` through the autoencoder and back: [B, T] or [B, C, T] in, mono out.

    Mono is duplicated to the autoencoder's channels, resampled to `ae_rate` (skipped when equal to
    `input_rate`), right-padded with zeros to a multiple of the downsampling factor, encoded, decoded, averaged to
    mono, resampled back and cropped to the input length. The output is [B, T] for 2-D input, [B, 1, T] for 3-D.
    Every step is differentiable.
    """

    def __init__(self, autoencoder: AutoEncoder1d, input_rate: int = 32000, ae_rate: int = 48000) -> None:
        super().__init__()
        if input_rate <= 0 or ae_rate <= 0:
            raise ConfigError(f"sample rates must be positive, got input_rate={input_rate}, ae_rate={ae_rate}")
        self.autoencoder = autoencoder
        self.input_rate = int(input_rate)
        self.ae_rate = int(ae_rate)
        first_conv = next(m for m in autoencoder.encoder.modules() if isinstance(m, nn.Conv1d))
        self.in_channels = int(getattr(autoencoder, "in_channels", first_conv.in_channels))
        self.downsample_factor = int(autoencoder.encoder.downsample_factor)

    @property
    def sample_rate(self) -> int:
        return self.input_rate

    def remap_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Accept the bare autoencoder's keys (`encoder.*`) as well as the hub's (`autoencoder.encoder.*`)."""
        if state and not any(k.startswith(HUB_PREFIX) for k in state):
            return {HUB_PREFIX + k: v for k, v in state.items()}
        return dict(state)

    def trainable(self, part: str) -> AutoencoderWrapper:
        """Make only the `"encoder"`, the `"decoder"` or `"both"` trainable; the rest gets requires_grad False."""
        if part not in PARTS:
            raise ConfigError(f"unknown trainable part {part!r}; choose one of {', '.join(PARTS)}")
        self.autoencoder.encoder.requires_grad_(part in ("encoder", "both"))
        self.autoencoder.decoder.requires_grad_(part in ("decoder", "both"))
        return self

    def _to_ae_input(self, waveform: torch.Tensor) -> tuple[torch.Tensor, int]:
        """[B, T] or [B, C, T] at input_rate to padded [B, in_channels, T'] at ae_rate, and the unpadded length."""
        if waveform.dim() == 2:
            waveform = waveform.unsqueeze(1)
        if waveform.dim() != 3:
            raise ValueError(f"expected a waveform [B, T] or [B, C, T], got {tuple(waveform.shape)}")
        channels = waveform.shape[1]
        if channels not in (1, self.in_channels):
            raise ValueError(f"expected 1 or {self.in_channels} channels, got {channels}")
        if self.ae_rate != self.input_rate:
            waveform = resample(waveform, self.input_rate, self.ae_rate)
        if channels == 1:
            waveform = waveform.expand(-1, self.in_channels, -1)  # mono to stereo (after resampling: half the work)
        length = waveform.shape[-1]
        pad = (-length) % self.downsample_factor
        return (F.pad(waveform, (0, pad)) if pad else waveform), length

    def encode(self, waveform: torch.Tensor) -> torch.Tensor:
        """The latent [B, latent_channels, ceil(T' / downsample_factor)] of waveforms at `input_rate`."""
        x, _ = self._to_ae_input(waveform)
        return self.autoencoder.encode(x)

    def _from_ae_output(self, y: torch.Tensor, ae_length: int, length: int) -> torch.Tensor:
        """[B, C, T'] at ae_rate to mono [B, length] at input_rate."""
        y = y[..., :ae_length].mean(dim=1)
        if self.ae_rate != self.input_rate:
            y = resample(y, self.ae_rate, self.input_rate)
        return y[..., :length] if y.shape[-1] >= length else F.pad(y, (0, length - y.shape[-1]))

    def decode(self, latent: torch.Tensor, length: int) -> torch.Tensor:
        """Mono [B, length] at `input_rate` from a latent."""
        ae_length = math.ceil(length * self.ae_rate / self.input_rate)
        return self._from_ae_output(self.autoencoder.decode(latent), ae_length, length)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x, ae_length = self._to_ae_input(waveform)
        y = self._from_ae_output(self.autoencoder.decode(self.autoencoder.encode(x)), ae_length, waveform.shape[-1])
        return y.unsqueeze(1) if waveform.dim() == 3 else y


class AutoencoderEncoder(TappedNetwork, AutoencoderWrapper):
    """The encoder half of an autoencoder with layer taps, for activation stores: waveforms at `input_rate` ->
    latent [B, latent_channels, frames]. Taps: `patches` (after the patcher), `down1`..`downN` (each downsampling
    block), `latent` (the output projection and the Tanh bottleneck: what the decoder receives). Keys are the
    wrapper's (`autoencoder.encoder.*`, and the decoder's, unused), so hub files and exports load as they are."""

    def stages(self) -> list[Stage]:
        encoder = self.autoencoder.encoder
        layers: list[Stage] = [("patches", lambda x: encoder.to_in(self._to_ae_input(x)[0]))]
        layers += [(f"down{i + 1}", block) for i, block in enumerate(encoder.downsamples)]
        layers.append(("latent", self._latent))
        return layers

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        x = self.autoencoder.encoder.to_out(x)
        for bottleneck in self.autoencoder.encoder.bottlenecks:
            x = bottleneck(x)
        return x


@register_model("autoencoder1d-at-v1-encoder", frontend="waveform", frontend_params={"sample_rate": 48000},
                weights_hint=WEIGHTS_HINT)
def autoencoder1d_at_v1_encoder(**params) -> AutoencoderEncoder:
    """The encoder of `autoencoder1d-at-v1` (same parameters, same checkpoints) with taps, at 48 kHz."""
    return AutoencoderEncoder(autoencoder1d_at_v1(**params), input_rate=48000, ae_rate=48000)
