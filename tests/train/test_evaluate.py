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


def test_compare_draws_side_by_side_only_rdms_over_the_same_classes(tmp_path, monkeypatch) -> None:
    """A run whose validation set covers fewer classes (its RDM is 23 x 23, the others' 24 x 24) is left out of
    rdms.png with a warning, instead of stopping the comparison ("24 labels for the 23 items")."""
    from types import SimpleNamespace

    import numpy as np

    import audiointerp.train.evaluate as ev

    labels = {"a": [f"c{i}" for i in range(24)], "b": [f"c{i}" for i in range(23)], "c": [f"c{i}" for i in range(24)]}

    def fake_evaluate(source, **kwargs):
        name = Path(source).name
        n = len(labels[name])
        return SimpleNamespace(metrics={"ranking_score": 0.5}, arrays={"embedding_rdm": np.zeros((n, n)),
                                                                       "macro_labels": np.array(labels[name])})

    drawn = {}
    monkeypatch.setattr(ev, "evaluate", fake_evaluate)
    monkeypatch.setattr(ev, "run_name", lambda source: Path(source).name)
    monkeypatch.setattr(ev, "task_config", lambda source: None)
    monkeypatch.setattr(ev, "describe_set", lambda *a: {"set": "valid"})
    monkeypatch.setattr(ev, "rdm_panels", lambda rdms, labels: drawn.update(rdms=sorted(rdms), labels=len(labels)))
    monkeypatch.setattr(ev, "save_figure", lambda *a, **k: None)
    ev.compare([tmp_path / "a", tmp_path / "b", tmp_path / "c"], [None], tmp_path / "out")
    assert drawn == {"rdms": ["a", "c"], "labels": 24}
