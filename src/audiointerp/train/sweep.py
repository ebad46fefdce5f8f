"""`audiointerp sweep CONFIG SWEEP.yaml` and `audiointerp agent SWEEP_ID`: W&B sweeps whose parameters are config keys.

A sweep file is W&B's sweep format (`method`: grid | random | bayes; `metric`: {name, goal}; `parameters`; and
optionally `name`, `description`, `early_terminate`, `run_cap`) whose parameter names are dotted config keys
(`optim.lr`, `model.params.widths`), each with `value`, `values` (with `probabilities`), or a `distribution` with
`min`/`max` (`mu`/`sigma`, `q`). `sweep_config` checks every parameter against the config schema with the values
it can take (a bad key is a `ConfigError` naming the closest valid one), and adds the resolved base config
(CONFIG with its overrides, as YAML) as one constant parameter, `audiointerp_base`, so that the sweep carries
everything a trial needs to every machine its agents run on.

`run_agent` calls `wandb.agent` with a function that runs one trial: the sweep's parameters (W&B writes them to
the file named by WANDB_SWEEP_PARAM_PATH for each trial) applied as `key=value` overrides onto the base config
(`trial_config`), in `<output_dir>/sweeps/<sweep id>/<experiment>/<W&B run id>/`, through the same `Trainer`, or,
with `launch` (e.g. "accelerate launch --num_processes 2"), as `LAUNCH -m audiointerp train TRIAL.yaml`: the
launched processes inherit the agent's environment and report to the sweep's run.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import wandb
import yaml
from omegaconf import DictConfig, OmegaConf

from audiointerp.errors import AudioInterpError, ConfigError, closest
from audiointerp.train.config import load_config, read_yaml_mapping, to_yaml
from audiointerp.train.grid import override
from audiointerp.train.tracking import wandb_logged_in, wandb_mode
from audiointerp.train.trainer import Trainer

log = logging.getLogger("audiointerp")

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
SWEEP_FIELDS = ("method", "metric", "parameters", "name", "description", "early_terminate", "run_cap")
PARAMETER_FIELDS = ("value", "values", "probabilities", "distribution", "min", "max", "mu", "sigma", "q", "a", "b")
# W&B's distributions; for the LOG_SPACE ones, min and max are natural logarithms of the values
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
                 "q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal",
                 "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")
LOG_SPACE = ("log_uniform", "q_log_uniform", "inv_log_uniform")
BASE_PARAMETER = "audiointerp_base"  # the constant parameter holding the resolved base config (YAML)
PARAM_PATH_ENV = "WANDB_SWEEP_PARAM_PATH"  # set by wandb's agent for each trial: the trial's parameters


@dataclass
class SweepPlan:
    """The W&B sweep config to create, and the resolved base config it carries."""

    sweep: dict[str, Any]
    base: DictConfig


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep YAML file's mapping; a ConfigError naming the file when it cannot be read or is not a mapping."""
    return read_yaml_mapping(path, "sweep file", "method, metric and parameters")


def parameter_values(name: str, spec: Any) -> list[Any]:
    """Values a sweep parameter can take that stand for all of them in a check of the config: every listed value,
    or a distribution's bounds (min and max; `exp` of them in log space; mu for a normal; 0.5 for a beta).
    A spec that is not a W&B parameter is a ConfigError naming the parameter."""
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep parameter {name!r}: give a mapping with value, values or a distribution "
                          f"(e.g. {name}: {{values: [0.001, 0.01]}})")
    if "parameters" in spec:
        raise ConfigError(f"sweep parameter {name!r}: nested parameters are not used here; write each as a dotted "
                          f"config key (e.g. {name}.KEY: {{values: [...]}})")
    for key in spec:
        if key not in PARAMETER_FIELDS:
            raise ConfigError(f"sweep parameter {name!r}: unknown field {key!r}{closest(str(key), PARAMETER_FIELDS)}")
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise ConfigError(f"sweep parameter {name!r}: values must be a non-empty list")
        return list(spec["values"])
    distribution = spec.get("distribution")
    if distribution is not None and distribution not in DISTRIBUTIONS:
        raise ConfigError(f"sweep parameter {name!r}: unknown distribution {distribution!r}"
                          f"{closest(str(distribution), DISTRIBUTIONS)}")
    if distribution in ("normal", "q_normal"):
        return [spec.get("mu", 0.0)]
    if distribution in ("log_normal", "q_log_normal"):
        return [math.exp(spec.get("mu", 0.0))]
    if distribution in ("beta", "q_beta"):
        return [0.5]
    if "min" not in spec or "max" not in spec:
        raise ConfigError(f"sweep parameter {name!r}: give value, values, or min and max (with a distribution)")
    if distribution in LOG_SPACE:
        return [math.exp(spec["min"]), math.exp(spec["max"])]
    return [spec["min"], spec["max"]]


def sweep_config(config: str | Path, sweep: dict[str, Any], overrides: Sequence[str] = ()) -> SweepPlan:
    """The W&B sweep config of `sweep` (a sweep file's mapping) over `config` with `overrides`: fields and method
    checked, every parameter's values checked against the config schema (`load_config`), and the resolved base
    config added as the constant parameter `BASE_PARAMETER`. The base config must track to W&B."""
    base = load_config(config, list(overrides))
    if str(base.tracking.backend) != "wandb":
        raise ConfigError("a sweep's trials report to W&B: tracking.backend is 'none' (set tracking.backend=wandb)")
    for key in sweep:
        if key not in SWEEP_FIELDS:
            raise ConfigError(f"sweep file: unknown field {key!r}{closest(str(key), SWEEP_FIELDS)}; "
                              f"a sweep file has {', '.join(SWEEP_FIELDS)}")
    method = sweep.get("method")
    if method not in METHODS:
        raise ConfigError(f"sweep file: method is {method!r}{closest(str(method), METHODS)}; choose one of "
                          f"{', '.join(METHODS)}")
    metric = sweep.get("metric")
    if metric is not None:
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
            raise ConfigError("sweep file: metric must be a mapping with a name (e.g. {name: valid/accuracy, "
                              "goal: maximize})")
        if metric.get("goal", "minimize") not in GOALS:
            raise ConfigError(f"sweep file: metric goal is {metric.get('goal')!r}; choose one of {', '.join(GOALS)}")
    elif method == "bayes":
        raise ConfigError("sweep file: a bayes sweep needs a metric (e.g. metric: {name: valid/accuracy, goal: maximize})")
    parameters = sweep.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise ConfigError("sweep file: parameters must be a non-empty mapping of config keys "
                          "(e.g. parameters: {optim.lr: {values: [0.001, 0.01]}})")
    plain = OmegaConf.to_container(base, resolve=True)
    for name, spec in parameters.items():
        if name == BASE_PARAMETER:
            raise ConfigError(f"sweep parameter {BASE_PARAMETER!r} is reserved: audiointerp puts the base config there")
        for value in parameter_values(str(name), spec):
            load_config(plain, [override(str(name), value)])  # a bad key or value: ConfigError naming it
    translated = {key: value for key, value in sweep.items() if key != "parameters"}
    translated.setdefault("name", f"{base.experiment}-sweep")
    translated["parameters"] = {**parameters, BASE_PARAMETER: {"value": to_yaml(base)}}
    return SweepPlan(translated, base)


def _require_wandb_account(what: str) -> None:
    if wandb_mode("auto") != "online" or not wandb_logged_in():
        raise AudioInterpError(f"{what} needs W&B online: run `wandb login` (or set WANDB_API_KEY), and unset "
                               "WANDB_MODE=offline/disabled")


def create_sweep(config: str | Path, sweep_file: str | Path, overrides: Sequence[str] = (),
                 project: Optional[str] = None, entity: Optional[str] = None) -> str:
    """Create the W&B sweep of `sweep_file` over `config` (`wandb.sweep`) and return its path for `audiointerp
    agent`: ENTITY/PROJECT/ID (PROJECT/ID without an entity). Project and entity default to the config's
    `tracking.project` and `tracking.entity`."""
    plan = sweep_config(config, read_sweep_file(sweep_file), overrides)
    project = project or str(plan.base.tracking.project)
    entity = entity or (str(plan.base.tracking.entity) if plan.base.tracking.entity else None)
    _require_wandb_account("audiointerp sweep")
    try:
        sweep_id = wandb.sweep(sweep=plan.sweep, project=project, entity=entity)
    except wandb.errors.Error as err:
        raise AudioInterpError(f"W&B did not create the sweep: {err}") from err
    if not sweep_id:
        raise AudioInterpError("W&B did not create the sweep (see its messages above)")
    return "/".join(part for part in (entity, project, str(sweep_id)) if part)


def sweep_parameters(path: Optional[str | Path] = None) -> dict[str, Any]:
    """A trial's parameters {name: value}, from the file W&B's agent writes for it (`path`, default the file named
    by WANDB_SWEEP_PARAM_PATH: {name: {value: V}}; W&B's own keys left out)."""
    path = path or os.environ.get(PARAM_PATH_ENV)
    if not path:
        raise AudioInterpError(f"no sweep trial here: {PARAM_PATH_ENV} is not set (trials run under `audiointerp agent`)")
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return {str(k): v["value"] for k, v in data.items()
            if isinstance(v, dict) and "value" in v and k != "wandb_version" and not str(k).startswith("_")}


def trial_config(parameters: dict[str, Any], extra: Sequence[str] = ()) -> DictConfig:
    """The config of a trial: the base config the sweep carries (`BASE_PARAMETER`), the other parameters as
    `key=value` overrides onto it, then `extra` overrides."""
    if BASE_PARAMETER not in parameters:
        raise ConfigError(f"the sweep's parameters have no {BASE_PARAMETER!r}: create the sweep with `audiointerp "
                          "sweep CONFIG SWEEP.yaml`")
    base = yaml.safe_load(str(parameters[BASE_PARAMETER]))
    swept = [override(k, v) for k, v in parameters.items() if k != BASE_PARAMETER]
    return load_config(base, [*swept, *extra])


def run_trial(launch: Optional[str] = None, parameters: Optional[dict[str, Any]] = None) -> Path:
    """Run one trial of the sweep this process's agent serves (WANDB_SWEEP_ID, WANDB_RUN_ID) and return its run
    folder. `launch`: run it as `LAUNCH -m audiointerp train TRIAL.yaml` (the trial's config written beside its
    run folder); a launched trial that fails raises `subprocess.CalledProcessError`."""
    sweep_id, run_id = os.environ.get("WANDB_SWEEP_ID"), os.environ.get("WANDB_RUN_ID")
    if not sweep_id or not run_id:
        raise AudioInterpError("no sweep trial here: WANDB_SWEEP_ID and WANDB_RUN_ID are set by `audiointerp agent`")
    parameters = sweep_parameters() if parameters is None else parameters
    base = trial_config(parameters)
    folder = Path(str(base.output_dir)) / "sweeps" / sweep_id
    tags = [*base.tracking.tags, f"sweep:{sweep_id}"]
    cfg = trial_config(parameters, [f"output_dir={folder}", f"run_id={run_id}", f"tracking.group=sweep-{sweep_id}",
                                    override("tracking.tags", tags)])
    run_dir = folder / str(cfg.experiment) / run_id
    log.info("sweep %s: trial %s: %s", sweep_id, run_id,
             ", ".join(f"{k}={v}" for k, v in parameters.items() if k != BASE_PARAMETER))
    if not launch:
        return Trainer(cfg).fit().run_dir
    trial_file = folder / f"{run_id}.yaml"
    trial_file.parent.mkdir(parents=True, exist_ok=True)
    trial_file.write_text(to_yaml(cfg), encoding="utf-8")
    command = [*shlex.split(launch), "-m", "audiointerp", "train", str(trial_file)]
    log.info("sweep %s: trial %s: %s", sweep_id, run_id, shlex.join(command))
    subprocess.run(command, check=True)
    return run_dir


def run_agent(sweep_id: str, count: Optional[int] = None, launch: Optional[str] = None,
              project: Optional[str] = None, entity: Optional[str] = None) -> list[str]:
    """Serve the sweep `sweep_id` (ID, PROJECT/ID or ENTITY/PROJECT/ID) with `wandb.agent`: up to `count` trials
    (default: until the sweep ends), each through `run_trial(launch)`. Returns the failed trials' W&B run ids
    with their errors (W&B marks them failed; the agent goes on)."""
    if count is not None and count < 1:
        raise ConfigError(f"--count {count}: give at least 1")
    if launch is not None and not shlex.split(launch):
        raise ConfigError("--launch is empty: give a launcher, e.g. --launch 'accelerate launch --num_processes 2'")
    _require_wandb_account("audiointerp agent")
    failed: list[str] = []

    def trial() -> None:
        try:
            run_trial(launch)
        except Exception as err:
            failed.append(f"{os.environ.get('WANDB_RUN_ID', '?')}: {err}")
            raise

    wandb.agent(sweep_id, function=trial, count=count, project=project, entity=entity)
    return failed
