"""The classifier task's noise augmentation (`task.noise_prob`, `noise_snr_db`, `noise_exponent`)."""

from __future__ import annotations

import pytest
import torch

from audiointerp.errors import ConfigError
from audiointerp.train.tasks.classifier_task import add_noise


def clips(count: int = 64, length: int = 16000) -> torch.Tensor:
    return torch.randn(count, 1, length, generator=torch.Generator().manual_seed(0)) * 0.3


def snr(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(clean.pow(2).flatten(1).mean(1) / (noisy - clean).pow(2).flatten(1).mean(1))


def test_noise_lands_at_the_drawn_snr_of_each_clip() -> None:
    x = clips() * torch.linspace(0.01, 1.0, 64).reshape(-1, 1, 1)  # levels differ: the SNR is per clip
    y = add_noise(x, 1.0, (12.0, 12.0), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(snr(x, y), torch.full((64,), 12.0), atol=1e-3, rtol=0)
    spread = snr(x, add_noise(x, 1.0, (5.0, 35.0), generator=torch.Generator().manual_seed(1)))
    assert 5.0 <= float(spread.min()) < 10.0 and 30.0 < float(spread.max()) <= 35.0


def test_prob_picks_that_share_of_clips_and_silence_stays_silent() -> None:
    x = clips(4000, 64)
    changed = (add_noise(x, 0.25, (10.0, 10.0), generator=torch.Generator().manual_seed(2)) != x).flatten(1).any(1)
    assert float(changed.float().mean()) == pytest.approx(0.25, abs=0.03)
    assert torch.equal(add_noise(x, 0.0, (10.0, 10.0)), x)
    silent = torch.zeros(3, 1, 64)
    assert torch.equal(add_noise(silent, 1.0, (10.0, 10.0)), silent)


@pytest.mark.parametrize("exponent", [0.0, -1.0, -2.0])
def test_the_noise_power_spectrum_goes_as_f_to_the_exponent(exponent: float) -> None:
    x = clips(64, 32000)
    noise = (add_noise(x, 1.0, (20.0, 20.0), (exponent, exponent), torch.Generator().manual_seed(3)) - x)[:, 0]
    power = torch.fft.rfft(noise, dim=-1).abs().pow(2).mean(0)
    frequency = torch.fft.rfftfreq(32000)
    decade = power[(frequency > 0.1) & (frequency < 0.2)].mean() / power[(frequency > 0.01) & (frequency < 0.02)].mean()
    assert float(torch.log10(decade)) == pytest.approx(exponent, abs=0.05)
    assert float(power[0]) < 1e-6  # no DC
    torch.testing.assert_close(snr(x, x + noise[:, None]), torch.full((64,), 20.0), atol=1e-3, rtol=0)


def test_bad_settings_name_the_option() -> None:
    with pytest.raises(ConfigError, match="task.noise_prob"):
        add_noise(clips(2), 1.5, (10.0, 20.0))
    with pytest.raises(ConfigError, match="task.noise_snr_db"):
        add_noise(clips(2), 0.5, (20.0, 10.0))
    with pytest.raises(ConfigError, match="task.noise_exponent"):
        add_noise(clips(2), 0.5, (10.0, 20.0), (0.0,))
