"""Shared fixtures: a tiny synthetic data set and tiny experiment configs. Nothing is downloaded."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_CODE", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_module(script: str) -> ModuleType:
    """benchmarks/<script>.py as a module (the benchmarks are no package; their `common` is imported from their
    folder), registered in sys.modules first, as dataclasses need; loaded once."""
    name = f"audiointerp_benchmark_{script}"
    if name not in sys.modules:
        if str(BENCHMARKS) not in sys.path:
            sys.path.insert(0, str(BENCHMARKS))
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


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
def tiny_settings() -> list[str]:
    """TINY_OVERRIDES, for fixtures that cannot use the function-scoped `tiny_overrides`."""
    return list(TINY_OVERRIDES)


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
    from audiointerp.train.config import load_config

    return load_config("classifier", tiny_overrides)


# --- tiny official data set layouts, with the built-in set's impact sounds -------------------------------------
# Categories chosen so that some of their words ("glass", "wood", "metal", "knock"...) occur in the built-in
# descriptions, as ESC-50's and UrbanSound8K's labels overlap a real dictionary.
ESC50_CATEGORIES = {"glass_breaking": ("glass", "destructing"), "door_wood_knock": ("wood", "tapping"),
                    "can_opening": ("metal", "rubbing")}
US8K_CLASSES = {"metal_knocking": ("metal", "tapping"), "stone_scraping": ("stone", "rubbing")}  # layout, not real classes


def _impact(material: str, action: str, seed: int, sample_rate: int = 44100, seconds: float = 1.2):
    import numpy as np

    from audiointerp.datasets.synth import render_clip

    return render_clip(material, action, np.random.default_rng(seed), sample_rate=sample_rate, seconds=seconds)


@pytest.fixture(scope="session")
def esc50_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ESC-50-master tree (audio/*.wav, meta/esc50.csv) with 3 categories x 4 clips over folds 1-2."""
    import csv

    import soundfile as sf

    root = tmp_path_factory.mktemp("esc50") / "ESC-50-master"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for target, (category, (material, action)) in enumerate(ESC50_CATEGORIES.items()):
            for k in range(4):
                name = f"{k % 2 + 1}-{1000 + 10 * target + k}-A-{target}.wav"
                sf.write(root / "audio" / name, _impact(material, action, 100 * target + k), 44100)
                writer.writerow([name, k % 2 + 1, target, category, "False", str(1000 + k), "A"])
    return root


@pytest.fixture(scope="session")
def us8k_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An UrbanSound8K tree (audio/foldN/*.wav, metadata/UrbanSound8K.csv) with 2 classes x 3 clips."""
    import csv

    import soundfile as sf

    root = tmp_path_factory.mktemp("us8k") / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        for class_id, (name, (material, action)) in enumerate(US8K_CLASSES.items()):
            for k in range(3):
                fold = k + 1
                file = f"{5000 + k}-{class_id}-0-{k}.wav"
                (root / "audio" / f"fold{fold}").mkdir(parents=True, exist_ok=True)
                sf.write(root / "audio" / f"fold{fold}" / file, _impact(material, action, 50 * class_id + k, 22050), 22050)
                writer.writerow([file, 5000 + k, 0.0, 1.2, 1, fold, class_id, name])
    return root


@pytest.fixture(scope="session")
def small_cnn_store(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Layers block2 and block3 of a seeded random small CNN over the tiny built-in set (120 clips)."""
    from audiointerp.analysis import ExtractSettings, extract

    settings = ExtractSettings(model="small_cnn", data=str(tiny_data), layers=["block2", "block3"], chunk_size=64, seed=3)
    return extract(settings, tmp_path_factory.mktemp("cnn") / "store", progress=False)
