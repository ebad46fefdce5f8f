"""`analyze compare`: conditions found from config differences, means with t-intervals over seeds, paired t-tests
by seed; checked against values computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from audiointerp.analysis import compare as C
from audiointerp.cli import main
from audiointerp.errors import DatasetError

ACCURACY = {"mn10": [0.80, 0.82, 0.84], "dymn10": [0.70, 0.71, 0.75]}  # per seed 0, 1, 2


def fake_run(root: Path, model: str, seed: int, accuracy: float, finished: bool = True) -> Path:
    run = root / model / f"run-{seed}"
    run.mkdir(parents=True)
    config = {"experiment": "esc50", "run_id": f"run-{seed}", "output_dir": str(root),
              "model": {"name": model, "params": {"widths": [4, 8]}},
              "train": {"seed": seed, "epochs": 3, "progress": False}, "tracking": {"backend": "none"}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    if finished:
        (run / "summary.json").write_text(json.dumps({"final": {"valid/accuracy": accuracy, "valid/loss": 1 - accuracy},
                                                      "test": None}))
    return run


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    for model, values in ACCURACY.items():
        for seed, value in enumerate(values):
            fake_run(tmp_path / "runs", model, seed, value)
    fake_run(tmp_path / "runs", "mn10", 7, 0.1, finished=False)  # unfinished: left out, counted
    return tmp_path / "runs"


def test_means_intervals_and_the_paired_test_are_the_hand_computed_ones(runs: Path, tmp_path: Path) -> None:
    result = C.run(C.Settings(metrics=["valid/accuracy"]), [runs], out=tmp_path / "out", tracking="none")
    rows = {row["condition"]: row for row in result.rows}
    assert set(rows) == {"model.name=mn10", "model.name=dymn10"}  # only the model differs; seeds, run ids, paths aside
    mn = rows["model.name=mn10"]
    assert mn["n"] == 3 and mn["mean"] == pytest.approx(0.82)
    assert mn["ci_half_width"] == pytest.approx(4.302652729911275 * 0.02 / math.sqrt(3))  # t(0.975, 2) sd / sqrt(n)
    (test,) = result.tests
    # differences by seed 0.10, 0.11, 0.09: mean 0.10, sd 0.01, t = 0.10 / (0.01 / sqrt 3)
    sign = 1 if test["condition_a"] == "model.name=mn10" else -1  # mean of condition_a minus condition_b
    assert test["pairs"] == 3 and test["mean_difference"] == pytest.approx(sign * 0.10)
    assert abs(test["t"]) == pytest.approx(0.10 / (0.01 / math.sqrt(3)))
    assert test["p"] < 0.01
    assert [p.name for p in result.unfinished] == ["run-7"]
    assert (tmp_path / "out" / "compare.md").read_text().count("| model.name=") == 2
    assert {p.name for p in result.files} == {"compare.csv", "tests.csv", "compare.md", "compare.png"}


def test_seeds_are_paired_not_pooled(runs: Path, tmp_path: Path) -> None:
    """Shuffling which seed holds which value changes the paired test but not the means: the pairing is by seed."""
    shuffled = tmp_path / "shuffled"
    for seed, value in zip(range(3), [0.84, 0.80, 0.82]):
        fake_run(shuffled, "mn10", seed, value)
    for seed, value in enumerate(ACCURACY["dymn10"]):
        fake_run(shuffled, "dymn10", seed, value)
    paired = C.run(C.Settings(metrics=["valid/accuracy"]), [runs], out=tmp_path / "a", tracking="none").tests[0]
    other = C.run(C.Settings(metrics=["valid/accuracy"]), [shuffled], out=tmp_path / "b", tracking="none").tests[0]
    assert abs(paired["mean_difference"]) == pytest.approx(abs(other["mean_difference"]))
    assert abs(other["t"]) < abs(paired["t"])


def test_a_metric_not_in_every_run_is_named(runs: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="valid/mAP"):
        C.run(C.Settings(metrics=["valid/mAP"]), [runs], out=tmp_path / "out", tracking="none")


def test_the_command(runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "compare", str(runs), "--metric", "valid/accuracy", "--out", str(tmp_path / "c"),
                 "--tracking", "none"]) == 0
    printed = capsys.readouterr().out
    assert "model.name=mn10" in printed and "t(2)" in printed and "left out 1 unfinished" in printed


def test_compare_is_also_a_top_level_command_with_the_same_output(runs: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    common = [str(runs), "--metric", "valid/accuracy", "--tracking", "none"]
    assert main(["analyze", "compare", *common, "--out", str(tmp_path / "a")]) == 0
    nested = capsys.readouterr().out
    assert main(["compare", *common, "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.replace(str(tmp_path / "b"), "OUT") == nested.replace(str(tmp_path / "a"), "OUT")
    assert (tmp_path / "b" / "compare.csv").read_text() == (tmp_path / "a" / "compare.csv").read_text()


def test_the_table_goes_to_wandb_in_the_runs_group(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    inits: list[dict] = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda *a, **k: (inits.append(k), real_init(*a, **k))[1])
    monkeypatch.setenv("WANDB_MODE", "offline")
    C.run(C.Settings(metrics=["valid/accuracy"]), [runs], out=tmp_path / "out")
    (init,) = inits
    assert init["group"] == "esc50" and init["job_type"] == "analysis"  # the runs' group (their experiment here)
    (offline,) = (tmp_path / "out" / "wandb").glob("offline-run-*")
    table = json.loads(next((offline / "files" / "media" / "table" / "compare").glob("compare_*.table.json")).read_text())
    assert table["columns"][:3] == ["condition", "metric", "n"] and len(table["data"]) == 2
    summaries = [C.read_run(folder, "final") for folder in C.find_runs([runs])[0]]
    assert C.shared_tracking(summaries, "group") == "esc50" and C.shared_tracking(summaries, "project") is None
