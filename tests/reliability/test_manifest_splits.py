"""Issue 12, point 6: bad manifests are no longer accepted quietly by `train.data.manifest_splits`.

A file in two of the train/valid/test splits (a leak) and a file under two labels stop the run with a
DatasetError naming the file; repeated files and rows in no selected fold are warnings with counts;
`data.allow_duplicates=true` lets a file be listed more than once on purpose (never across splits).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from audiointerp.configs.schema import DataConfig
from audiointerp.errors import DatasetError
from audiointerp.train.data import manifest_splits


def _tree(root: Path, rows: list[tuple[str, str, str]]) -> Path:
    """Write 0.1 s WAVs for every distinct path and a manifest.csv of (path, label, fold) rows."""
    for k, rel in enumerate(dict.fromkeys(p for p, _, _ in rows)):
        target = root / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(target), np.random.default_rng(k).uniform(-0.5, 0.5, 800).astype(np.float32), 8000)
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "fold"])
        writer.writerows(rows)
    return root / "manifest.csv"


def _cfg(source: Path, **kw):
    return OmegaConf.structured(DataConfig(source=str(source), sample_rate=8000, cache=False, train_folds=["2"],
                                           valid_folds=["1"], **kw))


def test_a_validation_file_also_in_training_stops_the_run(tmp_path: Path) -> None:
    source = _tree(tmp_path, [("x.wav", "dog", "1"), ("y.wav", "cat", "2"), ("x.wav", "dog", "2")])
    with pytest.raises(DatasetError, match=r"1 file is in more than one of the train, valid and test splits.*'x.wav'"):
        manifest_splits(_cfg(source), seed=0, progress=False)


def test_a_file_under_two_labels_stops_the_run(tmp_path: Path) -> None:
    source = _tree(tmp_path, [("x.wav", "dog", "2"), ("x.wav", "cat", "2"), ("y.wav", "cat", "1")])
    with pytest.raises(DatasetError, match=r"listed under different labels.*'x.wav'.*data.allow_duplicates"):
        manifest_splits(_cfg(source), seed=0, progress=False)


def test_repeats_and_dropped_folds_warn_and_the_option_allows_repeats(tmp_path: Path) -> None:
    source = _tree(tmp_path, [("x.wav", "dog", "2"), ("x.wav", "dog", "2"), ("y.wav", "cat", "1"), ("z.wav", "cat", "5")])
    with pytest.warns(UserWarning) as record:
        train, valid, _ = manifest_splits(_cfg(source), seed=0, progress=False)
    text = " | ".join(str(w.message) for w in record)
    assert "1 row repeats a file listed earlier" in text and "'x.wav'" in text
    assert "1 of 4 rows is in no selected fold" in text and "fold '5' (1 row)" in text
    assert len(train) == 2 and len(valid) == 1  # a warning, not a change of the data
    with pytest.warns(UserWarning) as record:
        manifest_splits(_cfg(source, allow_duplicates=True), seed=0, progress=False)
    assert [w for w in record if "a file listed earlier" in str(w.message)] == []
    assert any("no selected fold" in str(w.message) for w in record)
