"""`train.data`: datasets from the data config, and the split of a manifest without folds (issue 14)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest

from audiointerp.datasets import read_manifest
from audiointerp.errors import ConfigError, DatasetError
from audiointerp.train.config import load_config
from audiointerp.train.data import fraction_split, has_no_folds, manifest_splits
from audiointerp.train.trainer import Trainer


def without_folds(tiny_data: Path, out: Path, columns: tuple[str, ...] = ("path", "material", "action")) -> Path:
    """The built-in set's manifest with only `columns` (paths made absolute): no label, no fold."""
    root = tiny_data.parent
    with open(tiny_data, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([str(root / row["path"]) if c == "path" else row[c] for c in columns])
    return out


def test_a_manifest_without_folds_splits_deterministically_and_stratified(tiny_data: Path, tmp_path: Path) -> None:
    manifest = read_manifest(without_folds(tiny_data, tmp_path / "m.csv"))
    assert has_no_folds(manifest) and not has_no_folds(read_manifest(tiny_data))
    train, valid = fraction_split(manifest, "material", 0.2, seed=0)
    again_train, again_valid = fraction_split(manifest, "material", 0.2, seed=0)
    assert [r.path for r in valid.rows] == [r.path for r in again_valid.rows]  # deterministic
    assert len(train) + len(valid) == len(manifest) and not {r.path for r in train} & {r.path for r in valid}
    per_class = {m: sum(r.factors["material"] == m for r in manifest.rows) for m in manifest.label_values("material")}
    for material, count in per_class.items():  # stratified: a fifth of each class
        assert sum(r.factors["material"] == material for r in valid.rows) == round(count * 0.2)
    other, _ = fraction_split(manifest, "material", 0.2, seed=1)
    assert [r.path for r in other.rows] != [r.path for r in train.rows]
    with pytest.raises(ConfigError, match="valid_fraction"):
        fraction_split(manifest, "material", 1.0, seed=0)
    with pytest.raises(DatasetError, match="too few"):
        fraction_split(read_manifest(without_folds(tiny_data, tmp_path / "one.csv")).__class__(
            manifest.root, manifest.rows[:1], manifest.factor_names), "material", 0.2, seed=0)


def test_training_on_a_manifest_of_paths_and_a_factor_says_how_it_split(tiny_data: Path, tmp_path: Path,
                                                                      tiny_overrides: list[str], caplog) -> None:
    source = without_folds(tiny_data, tmp_path / "m.csv")
    overrides = [o for o in tiny_overrides if not o.startswith("data.source=")]
    cfg = load_config("classifier", [*overrides, f"data.source={source}", "data.label_column=material",
                                     "data.valid_fraction=0.25"])
    with caplog.at_level(logging.INFO, logger="audiointerp"):
        train, valid, classes = manifest_splits(cfg.data, seed=0, progress=False)
    assert len(valid) == 30 and len(train) == 90 and classes == sorted(classes) and len(classes) == 6
    assert "has no fold column" in caplog.text and "25 % of each material held out" in caplog.text
    with pytest.raises(DatasetError, match=r"no values in the label column 'label'.*data.label_column=material"):
        manifest_splits(load_config("classifier", [*overrides, f"data.source={source}"]).data, seed=0, progress=False)
    with pytest.raises(ConfigError, match="no fold column"):
        manifest_splits(load_config("classifier", [*overrides, f"data.source={source}", "data.label_column=material",
                                                   "data.test_folds=[1]"]).data, seed=0, progress=False)
    run = Trainer(load_config("classifier", [*overrides, f"data.source={source}", "data.label_column=material",
                                             "train.max_steps=1"])).fit()
    assert run.run_dir.is_dir()


def test_a_file_listed_twice_never_lands_on_both_sides(tmp_path) -> None:
    """Rows were split one by one: a path in two rows (or under two labels) could go to training and validation."""
    from audiointerp.datasets.manifest import Manifest, ManifestRow
    from audiointerp.train.data import fraction_split

    rows = [ManifestRow(path=tmp_path / f"c{i % 10}.wav", labels=(f"l{i % 2}",)) for i in range(40)]
    manifest = Manifest(tmp_path, rows, (), ("l0", "l1"), None)
    for seed in range(5):
        train, valid = fraction_split(manifest, "label", 0.3, seed)
        assert not {r.path for r in train.rows} & {r.path for r in valid.rows}
        assert len(train.rows) + len(valid.rows) == 40 and valid.rows
