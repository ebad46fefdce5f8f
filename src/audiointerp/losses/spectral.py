"""Multi-resolution STFT distance between waveforms (spectral convergence + log-magnitude L1)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from audiointerp.models.precision import full_precision_forward


@full_precision_forward
class MultiResolutionSTFTDistance(nn.Module):
    """Mean over resolutions of ||S_y - S_x||_F / ||S_y||_F + mean |log S_y - log S_x| (magnitudes, Hann windows)."""

    def __init__(self, fft_sizes: Sequence[int] = (512, 1024, 2048), hop_fraction: float = 0.25, eps: float = 1e-7) -> None:
        super().__init__()
        self.fft_sizes = tuple(int(n) for n in fft_sizes)
        self.hop_fraction = hop_fraction
        self.eps = eps

    def _magnitude(self, waveform: torch.Tensor, n_fft: int) -> torch.Tensor:
        window = torch.hann_window(n_fft, device=waveform.device, dtype=waveform.dtype)
        spec = torch.stft(waveform, n_fft, max(1, int(n_fft * self.hop_fraction)), window=window, return_complex=True)
        return spec.abs().clamp_min(self.eps)

    def forward(self, estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-example distance [B] between waveforms [B, T] or [B, C, T] (channels averaged)."""
        x = estimate.float().reshape(estimate.shape[0], -1, estimate.shape[-1]).mean(1)
        y = reference.float().reshape(reference.shape[0], -1, reference.shape[-1]).mean(1)
        total = torch.zeros(x.shape[0], device=x.device)
        for n_fft in self.fft_sizes:
            sx, sy = self._magnitude(x, n_fft), self._magnitude(y, n_fft)
            convergence = (sy - sx).flatten(1).norm(dim=1) / sy.flatten(1).norm(dim=1).clamp_min(self.eps)
            log_l1 = (sy.log() - sx.log()).abs().flatten(1).mean(dim=1)
            total = total + convergence + log_l1
        return total / len(self.fft_sizes)


def snr_db(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Signal-to-noise ratio of a reconstruction, per example [B], in dB."""
    x = estimate.float().reshape(estimate.shape[0], -1)
    y = reference.float().reshape(reference.shape[0], -1)
    return 10.0 * torch.log10(y.pow(2).sum(1).clamp_min(eps) / (y - x).pow(2).sum(1).clamp_min(eps))
