"""`audiointerp sweep` / `agent`: a sweep file over config keys translated and checked offline, trial configs from a
sweep's parameters, and trials run through the trainer with `wandb.sweep` / `wandb.agent` mocked (no server)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

from audiointerp.cli import main
from audiointerp.errors import ConfigError
from audiointerp.train import sweep as S
from audiointerp.train.config import load_config

SWEEP = {
    "method": "bayes",
    "metric": {"name": "valid/accuracy", "goal": "maximize"},
    "parameters": {
        "optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2},
        "model.params.widths": {"values": [[4, 8, 8, 16], [8, 8, 16, 16]]},
        "optim.weight_decay": {"distribution": "log_uniform", "min": -9.2, "max": -4.6},
        "data.batch_size": {"distribution": "int_uniform", "min": 8, "max": 16},
        "train.seed": {"value": 0},
    },
    "run_cap": 10,
}


@pytest.fixture
def base(tiny_overrides: list[str]) -> list[str]:
    """The tiny overrides, tracking to W&B offline (a sweep's trials report to W&B)."""
    return [*tiny_overrides, "tracking.backend=wandb", "tracking.mode=offline", "train.max_steps=2", "train.epochs=1"]


def write_sweep(tmp_path: Path, sweep: dict[str, Any]) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_a_sweep_file_becomes_a_wandb_sweep_carrying_the_base_config(base: list[str], tmp_path: Path) -> None:
    plan = S.sweep_config("classifier", S.read_sweep_file(write_sweep(tmp_path, SWEEP)), base)
    sweep = plan.sweep
    assert sweep["method"] == "bayes" and sweep["metric"] == SWEEP["metric"] and sweep["run_cap"] == 10
    assert sweep["name"] == "classifier-sweep"
    assert {k: v for k, v in sweep["parameters"].items() if k != S.BASE_PARAMETER} == SWEEP["parameters"]
    carried = load_config(yaml.safe_load(sweep["parameters"][S.BASE_PARAMETER]["value"]))
    assert carried == load_config("classifier", base)  # every key a trial needs, on any machine


@pytest.mark.parametrize("change, message", [
    ({"parameters": {"optim.lrr": {"values": [0.1]}}}, "'optim.lrr'.*did you mean 'optim.lr'"),
    ({"parameters": {"data.batch_size": {"values": [8, "big"]}}}, "data.batch_size"),
    ({"parameters": {"optim.lr": {"distribution": "log_uniform_value", "min": 1e-4, "max": 1e-2}}},
     "did you mean 'log_uniform_values'"),
    ({"parameters": {"optim": {"parameters": {"lr": {"values": [0.1]}}}}}, "dotted config key"),
    ({"parameters": {"optim.lr": {"valus": [0.1, 0.2]}}}, "did you mean 'values'"),
    ({"method": "bayesian"}, "did you mean 'bayes'"),
    ({"metrics": {"name": "valid/loss"}}, "unknown field 'metrics'.*did you mean 'metric'"),
    ({"metric": {"name": "valid/loss", "goal": "lower"}}, "goal"),
])
def test_a_bad_sweep_file_is_refused_naming_the_cause(base: list[str], tmp_path: Path, change: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        S.sweep_config("classifier", {**SWEEP, **change}, base)


def test_a_sweep_needs_wandb_tracking(tiny_overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match="tracking.backend"):
        S.sweep_config("classifier", SWEEP, tiny_overrides)  # the tiny overrides switch W&B off


def test_a_trials_config_is_the_base_with_the_parameters_applied(base: list[str]) -> None:
    carried = S.sweep_config("classifier", SWEEP, base).sweep["parameters"][S.BASE_PARAMETER]["value"]
    cfg = S.trial_config({S.BASE_PARAMETER: carried, "optim.lr": 0.0031, "model.params.widths": [8, 8, 16, 16],
                          "data.batch_size": 12}, ["run_id=abc"])
    assert cfg.optim.lr == 0.0031 and list(cfg.model.params.widths) == [8, 8, 16, 16] and cfg.data.batch_size == 12
    assert cfg.run_id == "abc" and cfg.train.epochs == 1
    with pytest.raises(ConfigError, match=S.BASE_PARAMETER):
        S.trial_config({"optim.lr": 0.1})


def test_the_sweep_command_creates_the_sweep_in_the_configs_project(base: list[str], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    created: list[dict[str, Any]] = []

    def fake_sweep(sweep: dict[str, Any], project: Optional[str] = None, entity: Optional[str] = None) -> str:
        created.append({"sweep": sweep, "project": project, "entity": entity})
        return "abc123"

    monkeypatch.setattr(S.wandb, "sweep", fake_sweep)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert main(["sweep", "classifier", str(write_sweep(tmp_path, SWEEP)), *base]) == 0
    assert "audiointerp agent audiointerp/abc123" in capsys.readouterr().out
    (call,) = created
    assert call["project"] == "audiointerp" and call["entity"] is None and S.BASE_PARAMETER in call["sweep"]["parameters"]
    assert main(["sweep", "classifier", str(write_sweep(tmp_path, {**SWEEP, "method": "grd"})), *base]) == 2
    assert "did you mean 'grid'" in capsys.readouterr().err and len(created) == 1


def fake_agent(parameters: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """`wandb.agent` as W&B's Python agent runs it, without a server: per trial, the parameters in the file named
    by WANDB_SWEEP_PARAM_PATH, WANDB_SWEEP_ID and WANDB_RUN_ID set, the function called, its error recorded."""
    import itertools

    import wandb
    from wandb.sdk.lib import config_util

    numbers = itertools.count()  # trial ids go on across calls, as a sweep's run ids do

    def agent(sweep_id: str, function: Callable[[], None], count: Optional[int] = None,
              project: Optional[str] = None, entity: Optional[str] = None) -> None:
        for _ in range(count or len(parameters)):
            index = next(numbers)
            values = parameters[index % len(parameters)]
            path = tmp_path / "wandb" / f"config-trial{index}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            config_util.save_config_file_from_dict(str(path), {k: {"value": v} for k, v in values.items()})
            monkeypatch.setenv("WANDB_SWEEP_ID", sweep_id.split("/")[-1])
            monkeypatch.setenv("WANDB_RUN_ID", f"trial{index}")
            monkeypatch.setenv(S.PARAM_PATH_ENV, str(path))
            try:
                function()
            except Exception:  # noqa: BLE001 - W&B's agent marks the trial failed and goes on
                pass
            finally:
                wandb.teardown()  # as W&B's agent does after each job: the next one starts a fresh W&B session
                for name in ("WANDB_SWEEP_ID", "WANDB_RUN_ID", S.PARAM_PATH_ENV):
                    monkeypatch.delenv(name)

    return agent


def test_the_agent_runs_trials_through_the_trainer_in_process_and_under_a_launcher(
        base: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    carried = S.sweep_config("classifier", SWEEP, base).sweep["parameters"][S.BASE_PARAMETER]["value"]
    trials = [{S.BASE_PARAMETER: carried, "optim.lr": 0.002}, {S.BASE_PARAMETER: carried, "optim.lr": 0.004}]
    monkeypatch.setattr(S, "_require_wandb_account", lambda what: None)
    monkeypatch.setattr(S.wandb, "agent", fake_agent(trials, tmp_path, monkeypatch))
    inits: list[dict[str, Any]] = []
    real_init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda *a, **k: (inits.append(k), real_init(*a, **k))[1])

    assert S.run_agent("me/audiointerp/sw1", count=1) == []
    run = tmp_path / "runs" / "sweeps" / "sw1" / "classifier" / "trial0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (run / "summary.json").is_file() and config["optim"]["lr"] == 0.002
    assert "sweep:sw1" in config["tracking"]["tags"] and config["tracking"]["group"] == "sweep-sw1"
    assert "id" not in inits[0]  # the sweep names the W&B run

    launched = S.run_agent("sw1", count=1, launch=f"{sys.executable}")  # `python -m audiointerp train TRIAL.yaml`
    assert launched == []
    second = tmp_path / "runs" / "sweeps" / "sw1" / "classifier" / "trial1"
    assert yaml.safe_load((second / "config.yaml").read_text())["optim"]["lr"] == 0.004
    assert (second / "summary.json").is_file()

    failed = S.run_agent("sw1", count=1, launch="false")  # a launcher that fails: reported, the agent goes on
    assert len(failed) == 1 and failed[0].startswith("trial2: ") and "false" in failed[0]
