"""Datasets from the `data` config section, shared by the tasks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import DictConfig

from audiointerp.datasets import Manifest, ManifestDataset, load_manifest
from audiointerp.datasets.manifest import SplitReport, check_splits


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
    """Training and validation datasets from the configured folds, and the class list.

    The manifest's split is checked first (:func:`check_manifest_splits`): a file in two of the train, valid and
    test folds, or under two labels, is a DatasetError; repeated files and unused folds are warnings.
    """
    manifest = load_manifest(str(data_cfg.source), format=str(data_cfg.format))
    classes = list(data_cfg.classes) if data_cfg.classes else manifest.class_list(str(data_cfg.label_column))
    train_rows = manifest.select_folds(list(data_cfg.train_folds))
    valid_rows = manifest.select_folds(list(data_cfg.valid_folds))
    check_manifest_splits(data_cfg, manifest)
    train = manifest_dataset(data_cfg, train_rows, train=True, classes=classes, seed=seed, progress=progress)
    valid = manifest_dataset(data_cfg, valid_rows, train=False, classes=classes, seed=seed, progress=progress)
    return train, valid, classes


def check_manifest_splits(data_cfg: DictConfig, manifest: Manifest) -> SplitReport:
    """:func:`~audiointerp.datasets.manifest.check_splits` of `manifest` with the config's folds, label column and
    `data.allow_duplicates`: raises DatasetError for a leak or conflicting labels (ConfigError for a fold in two
    fold lists), warns (ManifestWarning) about repeated files and rows in no selected fold.

    Call it once per run on the whole manifest, before building the datasets (tasks that select folds themselves).
    """
    return check_splits(
        manifest,
        [str(f) for f in data_cfg.train_folds],
        [str(f) for f in data_cfg.valid_folds],
        [str(f) for f in (data_cfg.get("test_folds") or [])],
        allow_duplicates=bool(data_cfg.get("allow_duplicates", False)),
        label_column=str(data_cfg.label_column),
    )
