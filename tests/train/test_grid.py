"""`audiointerp grid`: the product of varied values times seeds as ordinary runs, resumable, compared by seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from audiointerp.analysis import compare as C
from audiointerp.errors import ConfigError
from audiointerp.train.grid import GRID_FILE, parse_vary, plan_grid, run_grid


def test_vary_takes_json_lists_so_list_values_stay_unambiguous() -> None:
    assert parse_vary(["model.params.widths=[[16,32],[32,64]]", "optim.lr=[0.001, 0.01]"]) == {
        "model.params.widths": [[16, 32], [32, 64]], "optim.lr": [0.001, 0.01]}
    for bad in ("optim.lr", "optim.lr=0.01", "optim.lr=[]", "optim.lr=[0.1,"):
        with pytest.raises(ConfigError, match="optim.lr"):
            parse_vary([bad])


def test_a_grid_runs_each_condition_and_seed_once_resumes_and_compares(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = [*tiny_overrides, "train.max_steps=2"]
    grid = run_grid("classifier", ["optim.lr=[0.001, 0.003]"], [0, 1], "lr", overrides)
    record = json.loads((grid / GRID_FILE).read_text())
    assert [(r["condition"], r["seed"], r["state"]) for r in record["runs"]] == [
        ("optim.lr=0.001", 0, "finished"), ("optim.lr=0.001", 1, "finished"),
        ("optim.lr=0.003", 0, "finished"), ("optim.lr=0.003", 1, "finished")]
    for r in record["runs"]:
        config = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
        assert config["optim"]["lr"] == float(r["condition"].split("=")[1]) and config["train"]["seed"] == r["seed"]
        assert config["tracking"]["group"] == "lr" and config["tracking"]["condition"] == r["condition"]
        assert "grid:lr" in config["tracking"]["tags"]
    stamps = {r["run_dir"]: (Path(r["run_dir"]) / "summary.json").stat().st_mtime_ns for r in record["runs"]}
    run_grid("classifier", ["optim.lr=[0.001, 0.003]"], [0, 1], "lr", overrides)  # finished runs are skipped
    assert {d: (Path(d) / "summary.json").stat().st_mtime_ns for d in stamps} == stamps
    result = C.run(C.Settings(metrics=["valid/loss"]), [grid], out=tmp_path / "cmp", tracking="none")
    assert {row["condition"] for row in result.rows} == {"optim.lr=0.001", "optim.lr=0.003"}
    assert all(row["n"] == 2 for row in result.rows) and result.tests[0]["pairs"] == 2


def test_a_bad_key_fails_before_any_run(tiny_overrides: list[str], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="optim.lrr"):
        plan_grid("classifier", {"optim.lrr": [0.1]}, [0], "bad", tiny_overrides)
    assert not (tmp_path / "runs" / "grids").exists()
