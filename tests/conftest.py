"""Shared fixtures: a tiny synthetic data set and tiny experiment configs. Nothing is downloaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_OVERRIDES = [
    "model.params.widths=[4,8,8,16]",
    "data.batch_size=16",
    "data.eval_batch_size=10",
    "train.epochs=2",
    "train.log_every_steps=2",
    "train.progress=false",
    "optim.warmup_steps=2",
    "tracking.backend=none",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in impact-sound set, 5 clips per class (120 clips, 1 s at 16 kHz, 24 per fold); returns manifest.csv."""
    from audiointerp.datasets.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("impacts"), clips_per_class=5, seed=0, progress=False)


@pytest.fixture
def tiny_overrides(tiny_data: Path, tmp_path: Path) -> list[str]:
    """Overrides of the shipped classifier config for a run of a few seconds in tmp_path."""
    return [
        *TINY_OVERRIDES,
        f"data.source={tiny_data}",
        f"output_dir={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]


@pytest.fixture
def tiny_config(tiny_overrides: list[str]):
    from audiointerp.configs import load_config

    return load_config("classifier", tiny_overrides)
