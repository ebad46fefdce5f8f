"""`audiointerp compare RUNS...` (also `analyze compare`): one table of runs' final metrics, per condition over seeds.

The runs are run folders (with `config.yaml` and `summary.json`) or folders holding runs (e.g. `runs/semdnn`,
a grid's folder). A condition is what differs between the runs' configs, apart from the seed and the keys that do
not change the experiment (paths, run id, resume, progress, tracking): runs whose configs differ only in
`train.seed` are seeds of one condition. Per condition and metric: the number of seeds, the mean and a t-based 95 %
interval (mean ± t(0.975, n − 1) · sd / √n). Between every two conditions and per metric: a paired t-test over the
seeds both have (a seed enters each test once). Unfinished runs (no `summary.json`) are left out and counted.

Writes `compare.csv` (condition × metric), `tests.csv`, `compare.md` and `compare.png` (means with their
intervals), and logs the table to W&B (job type analysis) in the runs' W&B group and project when they share one
(a grid's: its name), else in the group `compare`.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.errors import DatasetError
from audiointerp.evaluation.plots import comparison_bars, save_figure
from audiointerp.evaluation.results import Table
from audiointerp.train.rundir import SUMMARY_FILE
from audiointerp.train.tracking import analysis_tracking

SEED_KEY = "train.seed"
# keys that never make another experiment: where a run writes, how it is resumed, shown or tracked
IGNORED = ("run_id", "output_dir", "data.cache_dir", "data.num_workers", "train.resume", "train.progress",
           "train.force_unlock", "tracking")


@dataclass
class Settings:
    metrics: Sequence[str] = field(default_factory=list, metadata={
        "help": "metrics to compare (e.g. valid/accuracy); default: every scalar the runs share", "many": "append",
        "flag": "--metric"})
    set: str = field(default="final", metadata={
        "help": "which figures: final (validation, the last evaluation) or test (the best checkpoint on "
                "data.test_folds)", "choices": ("final", "test")})
    confidence: float = field(default=0.95, metadata={"help": "level of the t-based interval of each mean"})


INPUTS = (Input("runs", "run folders, or folders holding runs (an experiment's or a grid's)", many=True),)
DEFAULT_OUT = "./comparison"


@dataclass
class RunSummary:
    """One finished run: its folder, its flattened config and the metrics of the chosen set."""

    folder: Path
    config: dict[str, Any]
    metrics: dict[str, float]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: value}; lists become tuples (hashable)."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tuple(node) if isinstance(node, list) else node}


def find_runs(folders: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(finished runs, unfinished runs) under `folders`: a folder with `config.yaml` is a run, any other folder
    is searched one and two levels down (an experiment's folder, an output folder)."""
    found: list[Path] = []
    for folder in map(Path, folders):
        if (folder / "config.yaml").is_file():
            found.append(folder)
            continue
        if not folder.is_dir():
            raise DatasetError(f"{folder} is neither a run folder (config.yaml) nor a folder holding runs")
        found += sorted(p.parent for p in folder.glob("*/config.yaml")) + sorted(p.parent for p in folder.glob("*/*/config.yaml"))
    runs = list(dict.fromkeys(found))
    return [r for r in runs if (r / SUMMARY_FILE).is_file()], [r for r in runs if not (r / SUMMARY_FILE).is_file()]


def read_run(folder: Path, which: str) -> RunSummary:
    """A finished run's flattened config and the scalar metrics of `which` (final | test)."""
    summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    config = flatten(OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=True))
    metrics = summary.get(which) or {}
    return RunSummary(folder, config, {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})


def conditions(runs: Sequence[RunSummary]) -> dict[str, list[RunSummary]]:
    """Runs grouped by condition: the values of the config keys that differ between runs (seed and `IGNORED` keys
    aside), as 'key=value, ...' ('all' when only seeds differ), in first-seen order."""
    def kept(key: str) -> bool:
        return key != SEED_KEY and not any(key == k or key.startswith(k + ".") for k in IGNORED)

    keys = sorted({k for run in runs for k in run.config if kept(k)})
    varying = [k for k in keys if len({repr(run.config.get(k)) for run in runs}) > 1]
    groups: dict[str, list[RunSummary]] = {}
    for run in runs:
        label = ", ".join(f"{k}={run.config.get(k)}" for k in varying) or "all"
        groups.setdefault(label, []).append(run)
    return groups


def interval(values: np.ndarray, confidence: float) -> float:
    """Half-width of the t-based interval of the mean (NaN for fewer than two values)."""
    if len(values) < 2:
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def compare(runs: Sequence[RunSummary], settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows: condition x metric with n, mean, sd and interval; tests: paired t-tests between conditions by seed)."""
    groups = conditions(runs)
    shared = set.intersection(*(set(run.metrics) for run in runs)) if runs else set()
    metrics = list(settings.metrics) or sorted(shared)
    missing = [m for m in metrics if m not in shared]
    if missing:
        raise DatasetError(f"metric(s) {missing} are not in every run's {settings.set} figures; they share: "
                           f"{', '.join(sorted(shared))}")
    rows, tests = [], []
    for label, members in groups.items():
        for metric in metrics:
            values = np.array([run.metrics[metric] for run in members], dtype=float)
            rows.append({"condition": label, "metric": metric, "n": len(values), "mean": float(values.mean()),
                         "sd": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                         "ci_half_width": interval(values, settings.confidence), "confidence": settings.confidence,
                         "seeds": " ".join(str(run.config.get(SEED_KEY)) for run in members)})
    for (a, runs_a), (b, runs_b) in itertools.combinations(groups.items(), 2):
        by_seed_a = {run.config.get(SEED_KEY): run for run in runs_a}
        by_seed_b = {run.config.get(SEED_KEY): run for run in runs_b}
        seeds = sorted(set(by_seed_a) & set(by_seed_b), key=str)
        for metric in metrics:
            x = np.array([by_seed_a[s].metrics[metric] for s in seeds], dtype=float)
            y = np.array([by_seed_b[s].metrics[metric] for s in seeds], dtype=float)
            t, p = (stats.ttest_rel(x, y) if len(seeds) > 1 and np.any(x != y) else (math.nan, math.nan))
            tests.append({"condition_a": a, "condition_b": b, "metric": metric, "pairs": len(seeds),
                          "mean_difference": float((x - y).mean()) if len(seeds) else math.nan,
                          "t": float(t), "df": len(seeds) - 1, "p": float(p)})
    return rows, tests


def shared_tracking(runs: Sequence[RunSummary], key: str) -> Optional[str]:
    """The runs' common W&B `tracking.<key>` (a group falls back to the run's experiment, as the trainer's does),
    or None when they differ."""
    values = {run.config.get(f"tracking.{key}") or (run.config.get("experiment") if key == "group" else None)
              for run in runs}
    return str(values.pop()) if len(values) == 1 and None not in values else None


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The comparison as a Markdown table: a line per condition, a column per metric (mean ± interval, n)."""
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    labels = list(dict.fromkeys(row["condition"] for row in rows))
    cell = {(row["condition"], row["metric"]): row for row in rows}
    lines = ["| condition | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for label in labels:
        parts = []
        for metric in metrics:
            row = cell[(label, metric)]
            half = "" if math.isnan(row["ci_half_width"]) else f" ± {row['ci_half_width']:.4f}"
            parts.append(f"{row['mean']:.4f}{half} (n={row['n']})")
        lines.append(f"| {label} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class Result(AnalysisResult):
    settings: Settings
    tests: list[dict[str, Any]]
    unfinished: list[Path]


def run(settings: Settings, runs: Sequence[str | Path], out: Optional[Path] = None, tracking: str = "wandb",
        progress: bool = True, name: Optional[str] = None) -> Result:
    """Compare the finished runs under `runs`, write the tables and the figure to `out` (default ./comparison),
    and track them in a W&B run `name` (default compare) of job type analysis."""
    finished, unfinished = find_runs(runs)
    if not finished:
        raise DatasetError(f"no finished run (with {SUMMARY_FILE}) under {', '.join(map(str, runs))}")
    summaries = [read_run(folder, settings.set) for folder in finished]
    rows, tests = compare(summaries, settings)
    out = Path(out or "comparison")
    files = [write_csv(out / "compare.csv", rows), write_csv(out / "tests.csv", tests)]
    (out / "compare.md").write_text(markdown(rows), encoding="utf-8")
    files.append(out / "compare.md")
    chart = comparison_bars(rows)
    logger = analysis_tracking(out, name or "compare", asdict(settings), tracking,
                               project=shared_tracking(summaries, "project") or "audiointerp",
                               group=shared_tracking(summaries, "group"))
    logger.log_figures({"compare": chart}, 0, "compare")
    logger.log_tables({"compare": Table(list(rows[0]), [list(row.values()) for row in rows])}, 0, "compare")
    logger.finish()
    files.append(save_figure(chart, out / "compare.png"))
    return Result(rows, out, files, settings, tests, unfinished)


def summary(result: Result) -> str:
    """The Markdown table, the paired tests, the unfinished runs left out, and the folder."""
    lines = [markdown(result.rows).rstrip()]
    for test in result.tests:
        lines.append(f"{test['metric']}: {test['condition_a']} vs {test['condition_b']}: mean difference "
                     f"{test['mean_difference']:.4f}, t({test['df']}) = {test['t']:.2f}, p = {test['p']:.3g} "
                     f"({test['pairs']} seeds paired)")
    if result.unfinished:
        lines.append(f"left out {len(result.unfinished)} unfinished run(s): {', '.join(p.name for p in result.unfinished)}")
    lines.append(f"wrote {result.out}")
    return "\n".join(lines)
