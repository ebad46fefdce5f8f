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
    grid = run_grid("classifier", ["optim.lr=[0.001, 0.003]"], [0, 1], "lr", overrides).folder
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


def test_a_grid_file_holds_the_same_fields_and_the_command_line_adds_to_it(tmp_path: Path) -> None:
    from audiointerp.train.grid import combine, read_grid_file

    path = tmp_path / "grid.yaml"
    path.write_text("vary:\n  optim.lr: [0.001, 0.01]\n  model.params.widths: [[4, 8], [8, 16]]\nseeds: [0, 1, 2]\n"
                    "name: lr\noverrides: {train.epochs: 3, data.source: /data/x}\n")
    spec = read_grid_file(path)
    assert spec.vary == ["optim.lr=[0.001, 0.01]", "model.params.widths=[[4, 8], [8, 16]]"]
    assert parse_vary(spec.vary) == {"optim.lr": [0.001, 0.01], "model.params.widths": [[4, 8], [8, 16]]}
    assert (spec.seeds, spec.name, spec.overrides) == ([0, 1, 2], "lr", ["train.epochs=3", "data.source=/data/x"])
    both = combine(spec, ["optim.name=[\"adam\", \"sgd\"]"], None, None, ["train.epochs=5"])
    assert both.seeds == [0, 1, 2] and both.name == "lr" and both.overrides[-1] == "train.epochs=5"
    assert combine(spec, [], [7], "other").seeds == [7] and combine(spec, [], [7], "other").name == "other"
    with pytest.raises(ConfigError, match="names 'optim.lr' twice"):
        parse_vary(combine(spec, ["optim.lr=[0.1]"]).vary)
    path.write_text("vary: {optim.lr: [0.1]}\nseed: [0]\n")
    with pytest.raises(ConfigError, match="unknown field 'seed'.*did you mean 'seeds'"):
        read_grid_file(path)
    path.write_text("vary: {optim.lr: 0.1}\n")
    with pytest.raises(ConfigError, match="'vary' must map config keys to lists"):
        read_grid_file(path)


def test_parallel_slots_are_one_gpu_each_or_a_share_of_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from audiointerp.train import grid

    monkeypatch.setattr(grid.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert grid.device_slots(4) == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]  # never two per GPU
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert grid.device_slots(2) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    monkeypatch.setattr(grid.torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(grid, "_usable_cores", lambda: 8)
    assert grid.device_slots(3) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 3
    with pytest.raises(ConfigError, match="--parallel 0"):
        grid.device_slots(0)


def test_parallel_children_run_at_once_a_failed_one_is_reported_and_the_rest_go_on(
        tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two CPU children at once: 22050 Hz fails in the child (the model's front end wants 16000 Hz), 16000 Hz
    finishes; the exit status counts the failure, grid.json records both, and a second start retries only the
    failed run."""
    from audiointerp.cli import main

    overrides = [*tiny_overrides, "train.max_steps=2", "train.epochs=1"]
    status = main(["grid", "classifier", *overrides, "--vary", "data.sample_rate=[16000, 22050]", "--name", "par",
                   "--parallel", "2"])
    err = capsys.readouterr().err
    assert status == 1
    assert "1 of 2 runs failed" in err and "data.sample_rate=22050-seed0 (exit status 2)" in err
    grid = tmp_path / "runs" / "grids" / "par"
    record = json.loads((grid / GRID_FILE).read_text())
    states = {r["condition"]: r for r in record["runs"]}
    assert states["data.sample_rate=16000"]["state"] == "finished" and record["parallel"] == 2
    failed = states["data.sample_rate=22050"]
    assert failed["state"] == "failed" and failed["exit_status"] == 2 and failed["log"] in err
    assert "expects 16000" in Path(failed["log"]).read_text()
    done = Path(states["data.sample_rate=16000"]["run_dir"]) / "summary.json"
    stamp = done.stat().st_mtime_ns
    result = run_grid("classifier", ["data.sample_rate=[16000, 22050]"], [0], "par", overrides, parallel=2)
    assert done.stat().st_mtime_ns == stamp  # the finished run is skipped, the failed one tried again
    assert [r.condition for r in result.failed] == ["data.sample_rate=22050"]
