"""`audiointerp grid CONFIG --vary KEY=JSON_LIST ... --seeds 0,1,2`: the product of the values as ordinary runs.

Each condition (one value per varied key) runs once per seed through the same trainer, in
`<output_dir>/grids/NAME/<experiment>/<condition>-seed<S>/`: one after another in this process, or, with
`parallel=N`, up to N at once as child processes (`python -m audiointerp train ...`), one per GPU
(`CUDA_VISIBLE_DEVICES` set to one GPU each) or, on a machine without GPUs, N CPU processes with
`cores // N` threads each. A failed child is reported with its log (`<grid>/logs/<run>.log`) and the others go
on; `GridResult.failed` lists them. Every run carries the grid's W&B group (NAME), the tags `grid:NAME` and
`condition:LABEL`, and `tracking.condition=LABEL` (a config key, so runs filter and group by it). `grid.json`
lists the runs and their state; a grid started again skips its finished runs and resumes an unfinished one from
its checkpoint (each run has a fixed run id). `audiointerp compare GRID_FOLDER` then gives the table over seeds.
Values are JSON lists, so list values stay unambiguous (`--vary 'model.params.widths=[[16,32],[32,64]]'`).

A grid file (`--grid-file GRID.yaml`) holds the same fields: `vary` (a mapping of config keys to lists of
values), `seeds` (a list), `name` and `overrides` (a list of `key=value`, or a mapping); the command line adds
`--vary` keys and overrides to the file's and its `--seeds` and `--name` replace the file's.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional, Sequence

import torch

from audiointerp.errors import ConfigError, closest
from audiointerp.train.checkpoint import write_json_atomic
from audiointerp.train.config import config_path, load_config, read_yaml_mapping
from audiointerp.train.rundir import SUMMARY_FILE
from audiointerp.train.trainer import Trainer

log = logging.getLogger("audiointerp")

GRID_FILE = "grid.json"
LOGS_DIR = "logs"  # <grid>/logs/<run id>.log: a parallel child's output
GRID_FIELDS = ("vary", "seeds", "name", "overrides")
POLL_SECONDS = 0.5


@dataclass
class GridRun:
    """One run of a grid: its condition, seed, overrides, folder, state and (for a child process) its log."""

    condition: str
    seed: int
    overrides: list[str]
    run_dir: str
    state: str = "pending"  # pending | running | finished | failed
    log: Optional[str] = None
    exit_status: Optional[int] = None


@dataclass
class GridResult:
    """A grid after `run_grid`: its folder and its runs; `failed` are the runs whose child process failed."""

    folder: Path
    runs: list[GridRun]

    @property
    def failed(self) -> list[GridRun]:
        return [run for run in self.runs if run.state == "failed"]


@dataclass
class GridSpec:
    """What a grid file states: varied values (`KEY=JSON_LIST` items), seeds, name and shared overrides."""

    vary: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    name: Optional[str] = None
    overrides: list[str] = field(default_factory=list)


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


def parse_seeds(text: str) -> list[int]:
    """Seeds from '0,1,2'; a ConfigError naming the part that is not an integer."""
    seeds = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            seeds.append(int(part))
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not an integer (write e.g. --seeds 0,1,2)") from None
    return seeds


def read_grid_file(path: str | Path) -> GridSpec:
    """A grid YAML file: `vary` (mapping of config keys to non-empty lists), `seeds` (list of integers), `name`,
    `overrides` (list of `key=value` or a mapping of keys to values). Any other field, or a field of the wrong
    shape, is a ConfigError naming it and the file."""
    path = Path(path)
    data = read_yaml_mapping(path, "grid file", ", ".join(GRID_FIELDS))
    for key in data:
        if key not in GRID_FIELDS:
            raise ConfigError(f"grid file {str(path)!r}: unknown field {key!r}{closest(str(key), GRID_FIELDS)}; "
                              f"a grid file has {', '.join(GRID_FIELDS)}")
    vary, seeds, overrides = data.get("vary") or {}, data.get("seeds") or [], data.get("overrides") or []
    if not isinstance(vary, dict) or not all(isinstance(v, list) for v in vary.values()):
        raise ConfigError(f"grid file {str(path)!r}: 'vary' must map config keys to lists of values "
                          "(e.g. vary: {optim.lr: [0.001, 0.01]})")
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"grid file {str(path)!r}: 'seeds' must be a list of integers (e.g. seeds: [0, 1, 2])")
    if isinstance(overrides, dict):
        overrides = [override(str(k), v) for k, v in overrides.items()]
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"grid file {str(path)!r}: 'overrides' must be a list of key=value items or a mapping")
    name = data.get("name")
    return GridSpec([f"{k}={json.dumps(v)}" for k, v in vary.items()], list(seeds),
                    None if name is None else str(name), list(overrides))


def combine(spec: GridSpec, vary: Sequence[str] = (), seeds: Optional[Sequence[int]] = None,
            name: Optional[str] = None, overrides: Sequence[str] = ()) -> GridSpec:
    """A grid file's spec with the command line's: `vary` and `overrides` added (a key varied in both is an
    error, an override given later wins), `seeds` and `name` replacing the file's when given."""
    return GridSpec([*spec.vary, *vary], list(seeds) if seeds else list(spec.seeds), name or spec.name,
                    [*spec.overrides, *overrides])


def override(key: str, value: Any) -> str:
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
            extra = [*(override(k, v) for k, v in pairs), f"train.seed={seed}", f"output_dir={grid_dir}",
                     f"run_id={run_id}", f"tracking.group={name}", f"tracking.condition={label}",
                     f"tracking.tags=[grid:{name},condition:{_slug(label)}]"]
            cfg = load_config(config, [*overrides, *extra])
            runs.append(GridRun(label, int(seed), [*overrides, *extra],
                                str(grid_dir / str(cfg.experiment) / run_id)))
    return grid_dir, runs


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return os.cpu_count() or 1


def device_slots(parallel: int) -> list[dict[str, str]]:
    """The environment of each of the (at most `parallel`) child processes run at once: with GPUs, one visible GPU
    each (`CUDA_VISIBLE_DEVICES`, taken from the GPUs this process sees; never more children than GPUs); without,
    `parallel` CPU processes with `cores // parallel` threads each (`OMP_NUM_THREADS`, `MKL_NUM_THREADS`)."""
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel}: give at least 1")
    gpus = torch.cuda.device_count()
    if gpus:
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        ids = visible[:gpus] if visible else [str(i) for i in range(gpus)]
        if parallel > len(ids):
            log.warning("--parallel %d: this machine shows %d GPU(s); running %d at once, one per GPU",
                        parallel, len(ids), len(ids))
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in ids[:parallel]]
    threads = str(max(1, _usable_cores() // parallel))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(parallel)]


def _record(grid_dir: Path, record: dict[str, Any], runs: Sequence[GridRun]) -> None:
    write_json_atomic(grid_dir / GRID_FILE, {**record, "runs": [asdict(r) for r in runs]})


def _run_children(config: str | Path, runs: list[GridRun], slots: list[dict[str, str]], grid_dir: Path,
                  write: Callable[[], None]) -> None:
    """Run `runs` as child processes, at most one per slot at a time; a child's state becomes finished (exit
    status 0 and a summary written) or failed (reported with its log); `write()` records the grid after each
    change. Interrupted (Ctrl-C), the children are stopped and the grid stays resumable."""
    pending = deque(runs)
    running: dict[int, tuple[GridRun, subprocess.Popen[bytes], IO[bytes]]] = {}
    free = list(range(len(slots)))
    (grid_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    try:
        while pending or running:
            while pending and free:
                slot, run = free.pop(0), pending.popleft()
                run.log = str(grid_dir / LOGS_DIR / f"{Path(run.run_dir).name}.log")
                handle = open(run.log, "ab")
                command = [sys.executable, "-m", "audiointerp", "train", str(config), *run.overrides,
                           "train.progress=false"]
                env = {**os.environ, **slots[slot], "PYTHONUNBUFFERED": "1"}
                running[slot] = (run, subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env),
                                 handle)
                run.state = "running"
                log.info("grid: started %s, seed %d (%s); log %s", run.condition, run.seed,
                         " ".join(f"{k}={v}" for k, v in slots[slot].items()), run.log)
                write()
            time.sleep(POLL_SECONDS)
            for slot, (run, process, handle) in list(running.items()):
                status = process.poll()
                if status is None:
                    continue
                handle.close()
                del running[slot]
                free.append(slot)
                run.exit_status = status
                if status == 0 and (Path(run.run_dir) / SUMMARY_FILE).is_file():
                    run.state = "finished"
                    log.info("grid: finished %s, seed %d", run.condition, run.seed)
                else:
                    run.state = "failed"
                    log.error("grid: run %s (%s, seed %d) failed with exit status %d; its log: %s",
                              Path(run.run_dir).name, run.condition, run.seed, status, run.log)
                write()
    finally:
        for run, process, handle in running.values():  # interrupted: stop the children, keep them resumable
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            handle.close()
            run.state = "pending"
        if running:
            write()


def run_grid(config: str | Path, vary: Sequence[str], seeds: Sequence[int], name: Optional[str] = None,
             overrides: Sequence[str] = (), parallel: int = 1) -> GridResult:
    """Run (or finish) the grid; `grid.json` is rewritten after every change of a run's state.

    `parallel` 1: one run after another in this process (a run's error stops the grid; started again, it goes on
    from there). `parallel` N > 1: up to N child processes at once (see `device_slots`); a failed child is
    reported by name with its log and the others go on (`GridResult.failed`)."""
    if not seeds:
        raise ConfigError("--seeds is empty: give at least one seed (e.g. --seeds 0,1,2)")
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel}: give at least 1")
    slots = device_slots(parallel) if parallel > 1 else []
    name = name or f"{Path(str(config_path(str(config)))).stem}-grid"
    grid_dir, runs = plan_grid(config, parse_vary(vary), seeds, _slug(name), overrides)
    grid_dir.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "config": str(config), "vary": list(vary), "seeds": list(seeds),
              "overrides": list(overrides), "parallel": parallel}
    todo = []
    for run in runs:
        if (Path(run.run_dir) / SUMMARY_FILE).is_file():
            run.state = "finished"
        else:
            todo.append(run)
    if slots:
        _run_children(config, todo, slots, grid_dir, lambda: _record(grid_dir, record, runs))
    for index, run in enumerate(todo if not slots else []):
        _record(grid_dir, record, runs)
        log.info("grid %s: run %d of %d: %s, seed %d", name, index + 1, len(todo), run.condition, run.seed)
        Trainer(load_config(config, run.overrides)).fit()
        run.state = "finished"
    _record(grid_dir, record, runs)
    return GridResult(grid_dir, runs)
