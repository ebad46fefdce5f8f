"""Front ends: waveform [B, T] or [B, C, T] to the features a network takes ([B, 1, bands, frames], or patches
[B, P, 1, F, T] that `AudioPipeline` averages over)."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


def as_mono_batch(waveform: torch.Tensor) -> torch.Tensor:
    """[T], [B, T] or [B, C, T] to [B, T], averaging channels."""
    if waveform.dim() == 1:
        return waveform.unsqueeze(0)
    if waveform.dim() == 3:
        return waveform.mean(dim=1)
    if waveform.dim() != 2:
        raise ValueError(f"expected a waveform of shape [T], [B, T] or [B, C, T], got {tuple(waveform.shape)}")
    return waveform


def compact_buffers(module: nn.Module) -> nn.Module:
    """Give every buffer its own storage (torch's periodic windows are views of a longer tensor, which
    safetensors refuses to save)."""
    for sub in module.modules():
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if buffer is not None and buffer.untyped_storage().nbytes() != buffer.numel() * buffer.element_size():
                setattr(sub, name, buffer.clone())
    return module


class LogMel(nn.Module):
    """Log-mel spectrogram: STFT power, mel filter bank, log(mel + offset), as [B, 1, n_mels, frames]."""

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
        power: float = 2.0,
    ) -> None:
        super().__init__()
        if not 0 <= f_min < f_max <= sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.log_offset = log_offset
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=n_fft,
            win_length=win_length,
            hop_length=hop_length,
            f_min=f_min,
            f_max=f_max,
            n_mels=n_mels,
            power=power,
            center=True,
            mel_scale="htk",
        )
        compact_buffers(self)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.mel(as_mono_batch(waveform).float())
        return torch.log(mel + self.log_offset).unsqueeze(1)


class AudioPipeline(nn.Module):
    """A front end followed by a network: takes waveforms at `sample_rate`, returns the network's output.

    Features [B, 1, F, T] go to the network as they are. A front end that cuts a clip into patches returns
    [B, P, 1, F, T]: the network then runs on the B·P patches [B·P, 1, F, T], and the clip's output is the mean
    of its P patches' outputs.
    """

    def __init__(self, frontend: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.network = network

    @property
    def sample_rate(self) -> int:
        return int(self.frontend.sample_rate)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.forward_features(self.frontend(waveform))

    def forward_features(self, features: torch.Tensor) -> torch.Tensor:
        """The network on front-end features (e.g. after mixing them), patch outputs averaged per clip."""
        if features.dim() != 5:
            return self.network(features)
        batch, patches = features.shape[:2]
        outputs = self.network(features.flatten(0, 1))
        return outputs.reshape(batch, patches, *outputs.shape[1:]).mean(dim=1)
