"""`audiointerp grid CONFIG --vary KEY=JSON_LIST ... --seeds 0,1,2`: the product of the values as ordinary runs.

Each condition (one value per varied key) runs once per seed, one after another, through the same trainer, in
`<output_dir>/grids/NAME/<experiment>/<condition>-seed<S>/`. Every run carries the grid's W&B group (NAME), the
tags `grid:NAME` and `condition:LABEL`, and `tracking.condition=LABEL` (a config key, so runs filter and group by
it). `grid.json` lists the runs and their state; a grid started again skips its finished runs and resumes an
unfinished one from its checkpoint (each run has a fixed run id). `audiointerp analyze compare GRID_FOLDER` then
gives the table over seeds. Values are JSON lists, so list values stay unambiguous
(`--vary 'model.params.widths=[[16,32],[32,64]]'`).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from audiointerp.errors import ConfigError
from audiointerp.train.checkpoint import write_json_atomic
from audiointerp.train.config import config_path, load_config
from audiointerp.train.rundir import SUMMARY_FILE
from audiointerp.train.trainer import Trainer

log = logging.getLogger("audiointerp")

GRID_FILE = "grid.json"


@dataclass
class GridRun:
    """One run of a grid: its condition, seed, overrides and folder."""

    condition: str
    seed: int
    overrides: list[str]
    run_dir: str
    state: str = "pending"  # pending | finished


def parse_vary(items: Sequence[str]) -> dict[str, list[Any]]:
    """{key: values} from `KEY=JSON_LIST` items; a ConfigError naming the item when it is not of that form."""
    varied: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--vary {item!r} is not KEY=JSON_LIST (e.g. --vary 'optim.lr=[0.001, 0.01]')")
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--vary {item!r}: {text!r} is not a JSON list ({err.msg})") from err
        if not isinstance(values, list) or not values:
            raise ConfigError(f"--vary {item!r}: give a non-empty JSON list of values")
        if key.strip() in varied:
            raise ConfigError(f"--vary names {key.strip()!r} twice")
        varied[key.strip()] = values
    return varied


def _override(key: str, value: Any) -> str:
    """`key=value` with the value written as the config language reads it back (lists, strings, null)."""
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")[:120] or "all"


def plan_grid(config: str | Path, varied: dict[str, list[Any]], seeds: Sequence[int], name: str,
              overrides: Sequence[str] = ()) -> tuple[Path, list[GridRun]]:
    """(the grid's folder, its runs): the product of the varied values times the seeds, each checked as a config
    (a bad key or value is a ConfigError before anything runs)."""
    base = load_config(config, list(overrides))
    grid_dir = Path(str(base.output_dir)) / "grids" / name
    runs: list[GridRun] = []
    for values in itertools.product(*varied.values()) if varied else [()]:
        pairs = list(zip(varied, values))
        label = ", ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in pairs) or "all"
        for seed in seeds:
            run_id = f"{_slug(label)}-seed{seed}"
            extra = [*(_override(k, v) for k, v in pairs), f"train.seed={seed}", f"output_dir={grid_dir}",
                     f"run_id={run_id}", f"tracking.group={name}", f"tracking.condition={label}",
                     f"tracking.tags=[grid:{name},condition:{_slug(label)}]"]
            cfg = load_config(config, [*overrides, *extra])
            runs.append(GridRun(label, int(seed), [*overrides, *extra],
                                str(grid_dir / str(cfg.experiment) / run_id)))
    return grid_dir, runs


def run_grid(config: str | Path, vary: Sequence[str], seeds: Sequence[int], name: Optional[str] = None,
             overrides: Sequence[str] = ()) -> Path:
    """Run (or finish) the grid and return its folder; `grid.json` is rewritten after every run."""
    if not seeds:
        raise ConfigError("--seeds is empty: give at least one seed (e.g. --seeds 0,1,2)")
    name = name or f"{Path(str(config_path(str(config)))).stem}-grid"
    grid_dir, runs = plan_grid(config, parse_vary(vary), seeds, _slug(name), overrides)
    grid_dir.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "config": str(config), "vary": list(vary), "seeds": list(seeds),
              "overrides": list(overrides)}
    for index, run in enumerate(runs):
        if (Path(run.run_dir) / SUMMARY_FILE).is_file():
            run.state = "finished"
            continue
        write_json_atomic(grid_dir / GRID_FILE, {**record, "runs": [asdict(r) for r in runs]})
        log.info("grid %s: run %d of %d: %s, seed %d", name, index + 1, len(runs), run.condition, run.seed)
        Trainer(load_config(config, run.overrides)).fit()
        run.state = "finished"
    write_json_atomic(grid_dir / GRID_FILE, {**record, "runs": [asdict(r) for r in runs]})
    return grid_dir
