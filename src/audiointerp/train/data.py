"""Datasets from the `data` config section, shared by the tasks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from omegaconf import DictConfig

from audiointerp.datasets import Manifest, ManifestDataset, load_manifest
from audiointerp.datasets.manifest import LABEL_SEPARATOR, SplitReport, check_splits
from audiointerp.errors import ConfigError, DatasetError

log = logging.getLogger("audiointerp")


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
    test folds, or under two labels, is a DatasetError; repeated files and unused folds are warnings. A manifest
    without folds (no row has one) is split by :func:`fraction_split` instead (`data.valid_fraction` of each class
    to validation, seeded by `seed`; no test split), which is logged.
    """
    manifest = load_manifest(str(data_cfg.source), format=str(data_cfg.format))
    label_column = str(data_cfg.label_column)
    classes = list(data_cfg.classes) if data_cfg.classes else manifest.class_list(label_column)
    if not classes:
        raise DatasetError(f"{data_cfg.source} has no values in the label column {label_column!r}: training needs "
                           "labels; set data.label_column to a column that has them (e.g. data.label_column=material)")
    if has_no_folds(manifest):
        if data_cfg.get("test_folds"):
            raise ConfigError(f"data.test_folds={list(data_cfg.test_folds)} but {data_cfg.source} has no fold column")
        fraction = float(data_cfg.get("valid_fraction", 0.2))
        train_rows, valid_rows = fraction_split(manifest, label_column, fraction, seed)
        log.info("%s has no fold column: split %d training / %d validation clips, %.0f %% of each %s held out "
                 "(data.valid_fraction=%g, seed %d; no test split)", data_cfg.source, len(train_rows), len(valid_rows),
                 100 * fraction, label_column, fraction, seed)
    else:
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


def has_no_folds(manifest: Manifest) -> bool:
    """True when no row of `manifest` has a fold (no `fold` column, or every value empty)."""
    return all(not row.fold for row in manifest.rows)


def fraction_split(manifest: Manifest, label_column: str, valid_fraction: float, seed: int) -> tuple[Manifest, Manifest]:
    """(train, valid) subsets of `manifest`: from each class of `label_column` (a multi-label row's class is its
    joined label set), round(`valid_fraction` x its files) files go to validation (at least one when the class has
    two or more), chosen by a generator seeded by `seed`: the same manifest and seed give the same split. A file
    listed in several rows goes to one side with all of its rows, so no file is in both.
    Both subsets keep the whole manifest's class list and keep the manifest's row order.

    Raises ConfigError for a fraction outside (0, 1), DatasetError when a side would be empty.
    """
    if not 0.0 < float(valid_fraction) < 1.0:
        raise ConfigError(f"data.valid_fraction={valid_fraction}: it must lie strictly between 0 and 1")
    files: dict[str, list[int]] = {}  # a file listed in several rows goes to one side with all of them
    for k, row in enumerate(manifest.rows):
        files.setdefault(str(row.path), []).append(k)
    groups: dict[str, list[str]] = {}  # a file's class: that of its first row
    for path, ks in files.items():
        groups.setdefault(LABEL_SEPARATOR.join(manifest.column_values(manifest.rows[ks[0]], label_column)), []).append(path)
    rng = np.random.default_rng(int(seed))
    valid: set[int] = set()
    for key in sorted(groups):
        paths = groups[key]
        take = int(round(len(paths) * float(valid_fraction)))
        take = min(len(paths) - 1, max(take, 1)) if len(paths) > 1 else 0
        for j in rng.permutation(len(paths))[:take]:
            valid.update(files[paths[int(j)]])
    train_rows = [row for k, row in enumerate(manifest.rows) if k not in valid]
    valid_rows = [row for k, row in enumerate(manifest.rows) if k in valid]
    if not train_rows or not valid_rows:
        raise DatasetError(f"{manifest.source or manifest.root}: {len(manifest.rows)} clips are too few to hold out "
                           f"data.valid_fraction={valid_fraction} of each class for validation")
    classes = manifest.classes or tuple(manifest.label_values("label"))
    return (Manifest(manifest.root, train_rows, manifest.factor_names, classes, manifest.source),
            Manifest(manifest.root, valid_rows, manifest.factor_names, classes, manifest.source))
