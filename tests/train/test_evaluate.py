"""`audiointerp evaluate` says which set its numbers are on."""

from __future__ import annotations

import json
from pathlib import Path

from audiointerp.train.config import load_config
from audiointerp.train.evaluate import describe_set


def test_the_evaluated_set_is_named(tiny_overrides: list[str], tiny_data: Path) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "data.train_folds=[2,3,4]", "data.valid_folds=[1]", "data.test_folds=[5]"])
    assert describe_set(cfg, None, None) == {"set": "valid", "source": str(tiny_data), "folds": ["1"]}
    assert describe_set(cfg, str(tiny_data), ["5"])["set"] == "test"
    assert describe_set(cfg, None, ["5"])["set"] == "test"
    assert describe_set(cfg, None, ["2"])["set"] == "train"  # a training fold: named, so nobody reads it as held out
    assert describe_set(cfg, "/elsewhere/ESC-50-master", None) == {"set": "external", "source": "/elsewhere/ESC-50-master",
                                                                  "folds": None}


def test_evaluate_writes_the_set_beside_its_metrics(tiny_overrides: list[str], tmp_path: Path) -> None:
    from audiointerp.cli import main
    from audiointerp.train.trainer import Trainer

    run = Trainer(load_config("classifier", [*tiny_overrides, "train.max_steps=1", "data.test_folds=[5]",
                                             "data.train_folds=[2,3,4]"])).fit().run_dir
    assert main(["evaluate", str(run), "--folds", "5", "--out", str(tmp_path / "out")]) == 0
    info = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert info["set"] == "test" and info["folds"] == ["5"] and info["checkpoint"] == "best"
    assert "| test |" in (tmp_path / "out" / "metrics.md").read_text()
