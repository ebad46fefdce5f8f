from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from audiointerp.train.optim import lr_factor, total_updates


def cfg(**kw):
    base = {"scheduler": "cosine", "warmup_steps": 0, "min_lr_ratio": 0.0, "warmup_epochs": 10, "rampdown_start_epoch": 10,
            "rampdown_epochs": 65, "last_lr_ratio": 0.01}
    return OmegaConf.create({**base, **kw})


def test_exp_warmup_linear_down_follows_efficientat_in_epochs() -> None:
    c = cfg(scheduler="exp_warmup_linear_down")
    per_epoch = 4
    at = lambda epoch: lr_factor(int(epoch * per_epoch), 0, c, per_epoch)  # noqa: E731
    assert at(0) == pytest.approx(math.exp(-5 * (1 - 0.5 / 10) ** 2))  # epoch clipped below at 0.5
    assert at(5) == pytest.approx(math.exp(-5 * 0.5**2))
    assert at(10) == pytest.approx(1.0)
    assert at(42.5) == pytest.approx(0.01 + 0.99 * 32.5 / 65)
    assert at(75) == pytest.approx(0.01) and at(80) == pytest.approx(0.01)


def test_warmup_then_cosine_and_linear() -> None:
    assert lr_factor(0, 100, cfg(warmup_steps=10)) == pytest.approx(0.1)
    assert lr_factor(10, 100, cfg(warmup_steps=10)) == pytest.approx(1.0)
    assert lr_factor(100, 100, cfg(warmup_steps=10)) == pytest.approx(0.0, abs=1e-9)
    assert lr_factor(55, 100, cfg(scheduler="linear", warmup_steps=10, min_lr_ratio=0.2)) == pytest.approx(0.2 + 0.8 * 0.5)
    assert total_updates(10, 3, 5, None) == 20 and total_updates(10, 3, 5, 7) == 7
