"""Run the quickstart's jobs as a dependency graph: each job starts as soon as the jobs it needs have ended, up to
`workers` at a time, each in its own process (a spawned `ProcessPoolExecutor`), or one after the other in this
process when `workers` is 1. A job is a stage of the quickstart or a part of one (`StageSpec.stage` names it).

Before any job starts, the run is planned on the jobs' estimated seconds (`cost`): of the orders in which a
`workers`-wide schedule that never leaves a worker idle can start them, the one that ends soonest
(`planned_order`, an exhaustive search with a bound, over a dozen jobs at most in practice). Then, whenever a
worker is free, the ready job earliest in that order starts: the plan holds when the estimates do, and the order
still serves when they do not.

In parallel, a job's output (progress bars, log lines, a traceback) goes to its own log file, and the console
gets one line when a job starts, one when it ends (with its seconds), and a line every `heartbeat` seconds naming
the jobs still running. A job that raises stops the run: the console names it, its stage and its log, the other
running jobs are stopped, and the job's exception is raised again here.

Each job runs with `cores // n` torch and BLAS threads, n being the number of jobs running beside it when it
starts (one after the other: the threads as they are).
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import combinations
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from threadpoolctl import threadpool_limits

HEARTBEAT_SECONDS = 60.0  # between the console's "running: ..." lines in parallel


@dataclass(frozen=True)
class StageSpec:
    """One job: its key, the console's line for it, the keys of the jobs it needs, the module-level function that
    computes it (run in a worker, so it must be importable there), how its arguments are made from the results so
    far (called here, in the main process), its estimated seconds (`cost`, for the order in which ready jobs
    start) and the stage it belongs to (None: the stage of its own key), which numbers it on the console."""

    key: str
    message: str
    after: tuple[str, ...]
    call: Callable[..., Any]
    arguments: Callable[[dict[str, Any]], tuple[Any, ...]]
    cost: float = 1.0
    stage: Optional[str] = None

    @property
    def group(self) -> str:
        """The stage this job belongs to."""
        return self.stage or self.key


@dataclass(frozen=True)
class StageRun:
    """What one job gave: its result, when it started (seconds after the run started), its wall seconds, the CPU
    seconds of its process meanwhile (every thread, and the child processes it ended, such as the synthesizer's)
    and the torch threads it ran with (None: the default)."""

    result: Any
    started: float
    seconds: float
    cpu_seconds: float
    threads: Optional[int]


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its children that have ended."""
    spent = os.times()
    return spent.user + spent.system + spent.children_user + spent.children_system


def _execute(call: Callable[..., Any], arguments: tuple[Any, ...], threads: Optional[int], log: Optional[Path],
             origin: float) -> StageRun:
    """Run `call(*arguments)` with `threads` torch and BLAS threads (None: as they are); with `log`, this process's
    stdout and stderr (file descriptors 1 and 2: Python's and C's output alike) go to that file from now on, and a
    traceback is written there before the exception propagates. `origin` is the run's start (time.time())."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(descriptor, 1)
        os.dup2(descriptor, 2)
        os.close(descriptor)
    if threads is not None:
        torch.set_num_threads(threads)
    started, cpu = time.time(), _cpu_seconds()
    try:
        with threadpool_limits(limits=threads) if threads is not None else nullcontext():
            result = call(*arguments)
    except BaseException:
        if log is not None:
            traceback.print_exc()
            sys.stderr.flush()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return StageRun(result, started - origin, time.time() - started, _cpu_seconds() - cpu, threads)


def _announce(stage: StageSpec, numbering: Sequence[str], text: str) -> None:
    """One console line about job `stage`: its stage's number among `numbering` and the report (the last step),
    then `text`."""
    number = list(numbering).index(stage.group) + 1 if stage.group in numbering else "-"
    print(f"[{number}/{len(numbering) + 1}] {text}", flush=True)


def _failed(stage: StageSpec, log: Optional[Path], error: BaseException) -> None:
    """Tell the console which job failed, with what, and where its output is."""
    where = f"; its output: {log}" if log is not None else ""
    part = f" (part {stage.key!r})" if stage.group != stage.key else ""
    print(f"quickstart: stage {stage.group!r}{part} failed: {stage.message}: {type(error).__name__}: {error}{where}",
          file=sys.stderr, flush=True)


def critical_order(stages: Sequence[StageSpec]) -> list[StageSpec]:
    """The jobs by decreasing length of the chain of estimated seconds from their start to the end of the last job
    that waits on them (their own `cost` included); ties in the given order. Raises ValueError for needs that are
    unknown or form a cycle."""
    keys = [stage.key for stage in stages]
    unknown = {need for stage in stages for need in stage.after} - set(keys)
    if unknown:
        raise ValueError(f"jobs need unknown jobs: {', '.join(sorted(unknown))}")
    order = _serial_order(stages)  # needs before the jobs that wait on them
    chain: dict[str, float] = {}
    for stage in reversed(order):
        after = [chain[s.key] for s in stages if stage.key in s.after]
        chain[stage.key] = stage.cost + max(after, default=0.0)
    return sorted(stages, key=lambda stage: (-chain[stage.key], keys.index(stage.key)))


def planned_order(stages: Sequence[StageSpec], workers: int) -> list[StageSpec]:
    """The jobs in the order they start in the shortest schedule on `workers` workers, given each job's `cost` in
    seconds: every schedule that starts a ready job whenever a worker is free is searched (depth first, the longest
    chains first, pruned by a lower bound on the end: the latest end of the running jobs, or the work left spread
    over the workers); ties keep `critical_order`. Raises ValueError for needs that are unknown or form a cycle."""
    ranked = critical_order(stages)
    if workers <= 1:
        return _serial_order(ranked)
    cost = {stage.key: float(stage.cost) for stage in ranked}
    needs = {stage.key: set(stage.after) for stage in ranked}
    keys = [stage.key for stage in ranked]
    best: list[Any] = [math.inf, keys]

    def search(now: float, done: frozenset[str], running: tuple[tuple[float, str], ...], started: tuple[str, ...],
               left: float) -> None:
        bound = max([now + left / workers, *(end for end, _ in running)])
        if bound >= best[0]:
            return
        ready = [key for key in keys if key not in started and needs[key] <= done]
        free = workers - len(running)
        if free and ready:
            for chosen in combinations(ready, min(free, len(ready))):
                search(now, done, tuple(sorted(running + tuple((now + cost[k], k) for k in chosen))),
                       started + chosen, left - sum(cost[k] for k in chosen))
            return
        if not running:
            if len(started) == len(keys):
                best[0], best[1] = now, list(started)
            return
        end, key = running[0]
        search(end, done | {key}, running[1:], started, left)

    search(0.0, frozenset(), (), (), sum(cost.values()))
    return [ranked[keys.index(key)] for key in best[1]]


def run_stages(stages: Sequence[StageSpec], workers: int, logs: Path, numbering: Sequence[str],
               heartbeat: float = HEARTBEAT_SECONDS) -> dict[str, StageRun]:
    """Run every job once its `after` jobs have ended, at most `workers` at a time, the ready job earliest in
    `planned_order` first; returns each job's StageRun by key. `numbering` is the stages in the console's numbering
    (the report comes after them). With `workers` > 1 each job runs in a worker process, its output in
    `logs/<key>.log`; with 1 they run here, one after the other, their output on the console."""
    ranked = planned_order(stages, max(1, workers))
    origin = time.time()
    if workers <= 1:
        runs: dict[str, StageRun] = {}
        for stage in _serial_order(ranked):
            _announce(stage, numbering, stage.message)
            try:
                runs[stage.key] = _execute(stage.call, stage.arguments({k: r.result for k, r in runs.items()}), None,
                                           None, origin)
            except Exception as error:
                _failed(stage, None, error)
                raise
        return runs
    return _run_parallel(ranked, workers, logs, numbering, heartbeat, origin)


def _serial_order(stages: Sequence[StageSpec]) -> list[StageSpec]:
    """The jobs one after the other: each time, the first one (in the given order) whose needs have ended."""
    done: set[str] = set()
    left, order = list(stages), []
    while left:
        stage = next((s for s in left if set(s.after) <= done), None)
        if stage is None:
            raise ValueError(f"the jobs' needs form a cycle: {', '.join(s.key for s in left)}")
        left.remove(stage)
        order.append(stage)
        done.add(stage.key)
    return order


def _run_parallel(ranked: Sequence[StageSpec], workers: int, logs: Path, numbering: Sequence[str],
                  heartbeat: float, origin: float) -> dict[str, StageRun]:
    """run_stages with worker processes (see there); `ranked` is the jobs in the order ready ones start."""
    available = cores()
    runs: dict[str, StageRun] = {}
    waiting = list(ranked)
    running: dict[Future, StageSpec] = {}
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
    try:
        while waiting or running:
            ready = [s for s in waiting if set(s.after) <= set(runs)][:workers - len(running)]
            threads = max(1, available // max(1, len(running) + len(ready)))
            for stage in ready:
                waiting.remove(stage)
                log = logs / f"{stage.key}.log"
                log.unlink(missing_ok=True)
                arguments = stage.arguments({k: r.result for k, r in runs.items()})
                running[executor.submit(_execute, stage.call, arguments, threads, log, origin)] = stage
                _announce(stage, numbering, f"{stage.message}: started ({threads} thread{'s' * (threads > 1)}; "
                          f"output in {log})")
            if not running:
                raise ValueError(f"jobs wait for each other: {', '.join(s.key for s in waiting)}")
            finished, _ = wait(running, timeout=heartbeat, return_when=FIRST_COMPLETED)
            if not finished:
                now = time.time() - origin
                print(f"      running: {', '.join(f'{s.key}' for s in running.values())} ({now:.0f} s so far)",
                      flush=True)
            for future in finished:
                stage = running.pop(future)
                try:
                    runs[stage.key] = future.result()
                except Exception as error:
                    _failed(stage, logs / f"{stage.key}.log", error)
                    _stop(executor)
                    raise
                run = runs[stage.key]
                _announce(stage, numbering, f"{stage.message}: done in {run.seconds:.0f} s ({run.cpu_seconds:.0f} CPU s)")
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return runs


def _stop(executor: ProcessPoolExecutor) -> None:
    """Stop the stages still running: their results are not wanted once one stage has failed."""
    executor.shutdown(wait=False, cancel_futures=True)
    terminate = getattr(executor, "terminate_workers", None)  # Python 3.14
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.terminate()
