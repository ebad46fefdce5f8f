"""Datasets from the `data` config section, shared by the tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig

from audiointerp.datasets import Manifest, ManifestDataset, load_manifest


def cache_dir(data_cfg: DictConfig) -> Optional[str]:
    """The audio cache folder, or None when caching is off."""
    if not data_cfg.cache:
        return None
    if data_cfg.cache_dir:
        return str(data_cfg.cache_dir)
    return os.environ.get("AUDIOINTERP_CACHE") or str(Path.home() / ".cache" / "audiointerp")


def manifest_dataset(
    data_cfg: DictConfig,
    manifest: Manifest,
    *,
    train: bool,
    classes: Sequence[str],
    seed: int,
    progress: bool = True,
    whole_clips: bool = False,
) -> ManifestDataset:
    """A dataset over `manifest` cut and labelled as the data config says.

    `whole_clips=True` ignores `data.seconds` and returns every clip whole (lengths differ: batch it with the
    dataset's `collate_fn`, which pads and gives each clip's `length`); evaluation of the VGGish tasks uses it.
    """
    seconds = None if whole_clips or data_cfg.seconds is None else float(data_cfg.seconds)
    return ManifestDataset(
        manifest,
        sample_rate=int(data_cfg.sample_rate),
        seconds=seconds,
        channels=int(data_cfg.channels),
        train=train,
        label_column=str(data_cfg.label_column),
        classes=list(classes),
        multi_label=bool(data_cfg.multi_label),
        cache_dir=cache_dir(data_cfg),
        on_error=str(data_cfg.on_error),
        seed=seed,
        progress=progress,
    )


def manifest_splits(data_cfg: DictConfig, seed: int, progress: bool = True) -> tuple[ManifestDataset, ManifestDataset, list[str]]:
    """Training and validation datasets from the configured folds, and the class list."""
    manifest = load_manifest(str(data_cfg.source), format=str(data_cfg.format))
    classes = list(data_cfg.classes) if data_cfg.classes else manifest.class_list(str(data_cfg.label_column))
    train = manifest_dataset(
        data_cfg, manifest.select_folds(list(data_cfg.train_folds)), train=True, classes=classes, seed=seed, progress=progress
    )
    valid = manifest_dataset(
        data_cfg, manifest.select_folds(list(data_cfg.valid_folds)), train=False, classes=classes, seed=seed, progress=progress
    )
    return train, valid, classes
