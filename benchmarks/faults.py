"""Fault injection (issue 12): SIGKILL of training, `extract` and `export` at random moments, divergence at random
learning rates, and the same command started twice at once; counts invariant violations per fault.

Every trial runs the real `audiointerp` command (`audiointerp.cli.main`) in its own process and kills it with a
real SIGKILL (no clean-up runs). By default the processes are forked from this script once it has imported the
package (`--launcher fork`), which saves the interpreter's start-up (~2 s of imports) per process; `--launcher
spawn` starts a fresh `python -m audiointerp.cli` instead (slower, the plainest form of "the command"). This
script itself never runs torch code (it reads checkpoints with safetensors' numpy loader and stores with h5py),
so that forking it is safe.

Faults (`--faults`, all by default), each repeated `--repeats` times, interleaved so that `--budget-s` cuts all
alike:

- train_kill: a tiny classifier run (a checkpoint every update, keep_last=2, so saves and deletions are frequent)
  is killed at a random moment: after a random delay within a measured run time, or on seeing the checkpoint
  folder `.tmp-step-N` (a save in progress) or `.del-step-N` (a deletion in progress) appear. Then the same
  command runs again (`resume=auto`). Invariants: every complete checkpoint on disk (after the kill and after
  the resume) has all its files and only finite tensors; after the resume no `.tmp-*`/`.del-*` leftovers and no
  run lock remain; the finished run equals an uninterrupted reference run bit for bit: the model weights of
  every kept checkpoint (and of `best`), the summary's final metrics, best step and steps, and metrics.jsonl
  (without its wall-clock `time` field).
- extract_kill: `audiointerp extract` (seeded random small_cnn, 2 layers, chunks of 8 clips) killed at a random
  moment or on seeing a shard change; after the kill, opening the store must either succeed or raise the
  project's StoreError; the same command again must finish, and the store must equal a clean extraction
  (clip table, metadata, every layer's array exactly) with no lock left.
- export_kill: `audiointerp export` of a finished run, into a fresh folder or over an existing export, killed at
  a random moment or on seeing its temporary folder appear; the export folder must then be absent, or complete
  (verify_export passes), or refused by verify_export with the project's CheckpointError; the same command again
  must succeed and give an export whose sha256 manifest verifies and whose weights equal a clean export's.
- divergence: the tiny run at a log-uniform random learning rate in [1e2, 1e8], no clipping, no warm-up, a
  checkpoint every update. It must finish or stop with the project's non-finite error (exit 2, "non-finite");
  no checkpoint on disk may hold a non-finite tensor or lack `"finite": true`; the "last good checkpoint" the
  message names must exist, be finite, and be the newest checkpoint on disk ("none" only when there is none).
- concurrent: two identical `train` commands started at once (a random stagger of up to 0.3 s): on a fresh
  output folder, and on an unfinished run (made by killing a run after its first checkpoint). Each must finish
  or be refused with the lock message naming the other's pid; two finished processes must name different run
  folders; every finished run equals the reference; no metrics.jsonl has a duplicate record; no lock remains.

Prints a table (trials, failures, outcomes per fault) and writes JSON (default benchmarks/results/faults.json).
Failed trials keep their folder (under --workdir) and are listed with the evidence in the JSON.

    python benchmarks/faults.py [--repeats 50] [--faults train_kill extract_kill ...] [--seed 0] [--budget-s 900]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # before numpy / torch are imported
    os.environ.setdefault(_var, "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import atexit  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, write_results  # noqa: E402

RESULTS_PATH = Path(__file__).resolve().parent / "results" / "faults.json"
FAULTS = ("train_kill", "extract_kill", "export_kill", "divergence", "concurrent")
TINY = ["model.params.widths=[4,8,8,16]", "data.batch_size=16", "data.eval_batch_size=10", "train.epochs=2",
        "train.log_every_steps=2", "train.progress=false", "optim.warmup_steps=2", "tracking.backend=none",
        "train.checkpoint_every_steps=1", "train.keep_last=2"]
EXTRACT_LAYERS = "block2,block3"
POLL_S = 0.0005


# --- processes -------------------------------------------------------------------------------------------------
def _preload() -> None:
    """Import what the commands import, once, so that forked children start at once (no torch code is run)."""
    import accelerate  # noqa: F401
    import h5py  # noqa: F401
    import matplotlib
    import torch._dynamo  # noqa: F401  (imported by the first optimizer: 2 s)

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    import audiointerp.analysis.extraction  # noqa: F401
    import audiointerp.cli  # noqa: F401
    import audiointerp.train.export  # noqa: F401
    import audiointerp.train.tasks.classifier_task  # noqa: F401
    import audiointerp.train.trainer  # noqa: F401


class Proc:
    """One `audiointerp ARGS` process, its output in `log` (stdout and stderr together)."""

    def __init__(self, args: Sequence[str], log: Path, launcher: str, cwd: Path) -> None:
        self.args, self.log, self.started = list(args), log, time.monotonic()
        self.returncode: Optional[int] = None
        self.killed = False
        if launcher == "spawn":
            with open(log, "wb") as out:
                self._popen = subprocess.Popen([sys.executable, "-m", "audiointerp.cli", *self.args], stdout=out,
                                               stderr=subprocess.STDOUT, cwd=cwd)
            self.pid = self._popen.pid
            return
        self._popen = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: the command, then the interpreter's normal exit handlers, never the parent's code
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.close(fd)
                os.chdir(cwd)
                sys.argv = ["audiointerp", *self.args]
                from audiointerp.cli import main

                code = main(self.args)
            except SystemExit as err:
                code = err.code if isinstance(err.code, int) else (0 if err.code is None else 1)
            except BaseException:
                traceback.print_exc()
                code = 1
            finally:
                try:
                    atexit._run_exitfuncs()  # lock release and logging shutdown, as at a normal interpreter exit
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.pid = pid

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            if self._popen is not None:
                self.returncode = self._popen.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.wait()
        self.killed = self.returncode == -signal.SIGKILL

    def wait(self, timeout: float = 600) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                self.killed = True
            time.sleep(0.005)
        return int(self.returncode)

    @property
    def output(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


def kill_when(proc: Proc, trigger: Callable[[float], bool], timeout: float = 300) -> bool:
    """Poll `trigger(elapsed)` until it says kill (then SIGKILL, True) or the process ends (False)."""
    while proc.poll() is None:
        if trigger(proc.seconds) or proc.seconds > timeout:
            proc.kill()
            return proc.killed
        time.sleep(POLL_S)
    return False


def names(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def appeared(folder: Path, pattern: "re.Pattern[str]", delay: float = 0.0) -> Callable[[float], bool]:
    """A trigger: an entry of `folder` matching `pattern` has been seen, then `delay` seconds have passed."""
    seen: dict[str, float] = {}

    def trigger(elapsed: float) -> bool:
        if "t" not in seen:
            if any(pattern.fullmatch(n) for n in names(folder)):
                seen["t"] = elapsed
            return False
        return elapsed - seen["t"] >= delay

    return trigger


# --- reading results (numpy, h5py: no torch) -------------------------------------------------------------------
def load_tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def non_finite(tensors: dict[str, np.ndarray]) -> list[str]:
    return [k for k, v in tensors.items() if np.issubdtype(v.dtype, np.inexact) and not np.isfinite(v).all()]


def run_folders(runs: Path) -> list[Path]:
    exp = runs / "classifier"
    return sorted(p for p in exp.iterdir() if p.is_dir()) if exp.is_dir() else []


def metric_records(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        record.pop("time", None)
        records.append(record)
    return records


@dataclass
class Reference:
    """What an uninterrupted run leaves."""

    run: Path
    checkpoint_files: set[str]
    checkpoints: dict[str, dict[str, np.ndarray]]  # step folder name -> model tensors
    best: str
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    seconds: float


def reference_of(run: Path, seconds: float) -> Reference:
    ckpt = run / "checkpoints"
    steps = [p for p in names(ckpt) if p.startswith("step-")]
    files = set(names(ckpt / steps[0]))
    return Reference(run, files, {s: load_tensors(ckpt / s / "model.safetensors") for s in steps},
                     os.readlink(ckpt / "best"), json.loads((run / "summary.json").read_text()), metric_records(run),
                     seconds)


def checkpoint_problems(run: Path, ref: Reference) -> list[str]:
    """Every `step-*` folder must be complete (checkpoint.json, the reference's files), flagged and really finite;
    `best` must point to one."""
    problems = []
    ckpt = run / "checkpoints"
    for name in names(ckpt):
        path = ckpt / name
        if not name.startswith("step-"):
            continue
        if not (path / "checkpoint.json").is_file():
            problems.append(f"{name}: a step folder without checkpoint.json")
            continue
        missing = ref.checkpoint_files - set(names(path))
        if missing:
            problems.append(f"{name}: missing {sorted(missing)}")
            continue
        info = json.loads((path / "checkpoint.json").read_text())
        if info.get("finite") is not True:
            problems.append(f"{name}: checkpoint.json finite={info.get('finite')!r}")
        try:
            bad = non_finite(load_tensors(path / "model.safetensors"))
        except Exception as err:  # noqa: BLE001
            problems.append(f"{name}: model.safetensors unreadable ({type(err).__name__}: {err})")
            continue
        if bad:
            problems.append(f"{name}: non-finite tensors {bad[:5]}")
    best = ckpt / "best"
    if best.is_symlink() and not (best.resolve() / "checkpoint.json").is_file():
        problems.append(f"best -> {os.readlink(best)} is not a complete checkpoint")
    return problems


def compare_run(run: Path, ref: Reference) -> tuple[list[str], Optional[float]]:
    """Differences between a finished run and the reference; and the largest weight difference (0.0: identical)."""
    problems: list[str] = []
    worst = 0.0
    summary = json.loads((run / "summary.json").read_text())
    for key in ("final", "best_step", "best_value", "steps", "epochs"):
        if summary.get(key) != ref.summary.get(key):
            problems.append(f"summary {key}: {summary.get(key)!r} != reference {ref.summary.get(key)!r}")
    ckpt = run / "checkpoints"
    steps = sorted(n for n in names(ckpt) if n.startswith("step-"))
    if steps != sorted(ref.checkpoints):
        problems.append(f"checkpoints {steps} != reference {sorted(ref.checkpoints)}")
    best = os.readlink(ckpt / "best") if (ckpt / "best").is_symlink() else None
    if best != ref.best:
        problems.append(f"best -> {best} != reference {ref.best}")
    for name in set(steps) & set(ref.checkpoints):
        tensors = load_tensors(ckpt / name / "model.safetensors")
        if sorted(tensors) != sorted(ref.checkpoints[name]):
            problems.append(f"{name}: other tensor names")
            continue
        for key, value in tensors.items():
            other = ref.checkpoints[name][key]
            if not np.array_equal(value, other):
                diff = float(np.max(np.abs(value.astype(np.float64) - other.astype(np.float64))))
                worst = max(worst, diff)
                problems.append(f"{name}/{key}: max |diff| {diff:.3g}")
    records = metric_records(run)
    if records != ref.metrics:
        steps_seen = [(r.get("step"), tuple(sorted(k for k in r if "/" in k))) for r in records]
        first = next((i for i, (a, b) in enumerate(zip(records, ref.metrics)) if a != b), min(len(records), len(ref.metrics)))
        problems.append(f"metrics.jsonl differs from the reference ({len(records)} vs {len(ref.metrics)} records; "
                        f"first difference at record {first}; steps {steps_seen[:12]})")
    return problems, worst


def duplicate_records(run: Path) -> list[str]:
    keys = [(r.get("step"), tuple(sorted(k for k in r if "/" in k))) for r in metric_records(run)]
    return [f"metrics.jsonl: duplicate record {k}" for k, n in Counter(keys).items() if n > 1]


def leftovers(run: Path) -> list[str]:
    return [n for n in names(run / "checkpoints") if n.startswith((".tmp-", ".del-"))]


def lock_files(runs: Path) -> tuple[list[str], list[str]]:
    """Run locks left on disk: (those of finished runs or of no run folder, those of unfinished run folders); both
    are violations once every command has ended: a process that ends releases its lock, and a killed holder's lock
    is taken over by the rerun, which restarts or resumes that same run."""
    found = sorted((runs / ".locks").rglob("*.lock")) if (runs / ".locks").is_dir() else []
    stale = [p for p in found if (runs / p.parent.name / p.name[: -len(".lock")]).is_dir()
             and not (runs / p.parent.name / p.name[: -len(".lock")] / "summary.json").exists()]
    return [str(p) for p in found if p not in stale], [str(p) for p in stale]


def lock_problems(runs: Path) -> list[str]:
    """The `lock_files` left under `runs`, as problems of a trial."""
    locks, stale = lock_files(runs)
    return ([f"lock files left: {locks}"] if locks else []) + (
        [f"stale locks of unfinished runs left: {stale}"] if stale else [])


# --- the faults ------------------------------------------------------------------------------------------------
@dataclass
class Trial:
    outcome: str
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


class Faults:
    def __init__(self, workdir: Path, launcher: str, rng: random.Random) -> None:
        self.workdir, self.launcher, self.rng = workdir, launcher, rng
        self.data: Optional[Path] = None
        self.ref: Optional[Reference] = None
        self.store_ref: Optional[Path] = None
        self.store_seconds = 0.0
        self.export_ref: Optional[Path] = None
        self.export_seconds = 0.0
        self.first_checkpoint_s = 0.0

    def start(self, args: Sequence[str], log: Path) -> Proc:
        return Proc(args, log, self.launcher, self.workdir)

    def rerun(self, args: Sequence[str], log: Path, result: Trial) -> Optional[Proc]:
        """Run the same command again after a fault; None (and a problem recorded) when it does not exit 0."""
        again = self.start(args, log)
        if again.wait() != 0:
            result.problems.append(f"the rerun exited {again.returncode}: {again.output[-2000:]}")
            return None
        return again

    def train_args(self, trial: Path, *extra: str) -> list[str]:
        return ["train", "classifier", *TINY, f"data.source={self.data}", f"output_dir={trial / 'runs'}",
                f"data.cache_dir={trial / 'cache'}", *extra]

    def extract_args(self, out: Path) -> list[str]:
        return ["extract", "--model", "small_cnn", "--data", str(self.data), "--layers", EXTRACT_LAYERS, "--out", str(out),
                "--chunk-size", "8", "--batch-size", "8", "--quiet"]

    def prepare(self, faults: Sequence[str]) -> dict[str, float]:
        from audiointerp.datasets.synth import synthesize

        started = time.monotonic()
        self.data = synthesize(self.workdir / "data", clips_per_class=3, seed=0, progress=False)
        timings = {"synth_s": time.monotonic() - started}
        ref_dir = self.workdir / "reference"
        ref_dir.mkdir()
        proc = self.start(self.train_args(ref_dir), ref_dir / "train.log")
        first: dict[str, float] = {}

        def watch(elapsed: float) -> bool:
            if "t" not in first and any(n.startswith("step-") for r in run_folders(ref_dir / "runs")
                                        for n in names(r / "checkpoints")):
                first["t"] = elapsed
            return False

        kill_when(proc, watch)
        if proc.returncode != 0:
            raise RuntimeError(f"the reference run failed:\n{proc.output[-3000:]}")
        (run,) = run_folders(ref_dir / "runs")
        self.ref = reference_of(run, proc.seconds)
        self.first_checkpoint_s = first.get("t", proc.seconds / 3)
        timings.update(train_s=proc.seconds, first_checkpoint_s=self.first_checkpoint_s)
        if "extract_kill" in faults:
            self.store_ref = self.workdir / "reference" / "store"
            proc = self.start(self.extract_args(self.store_ref), ref_dir / "extract.log")
            if proc.wait() != 0:
                raise RuntimeError(f"the reference extraction failed:\n{proc.output[-3000:]}")
            self.store_seconds = timings["extract_s"] = proc.seconds
        if "export_kill" in faults:
            self.export_ref = ref_dir / "export"
            proc = self.start(["export", str(run), "--out", str(self.export_ref)], ref_dir / "export.log")
            if proc.wait() != 0:
                raise RuntimeError(f"the reference export failed:\n{proc.output[-3000:]}")
            self.export_seconds = timings["export_s"] = proc.seconds
        return timings

    # train_kill ----------------------------------------------------------------------------------------------
    def train_kill(self, trial: Path, i: int) -> Trial:
        ref = self.ref
        how = ("random", "save", "delete")[i % 3]
        proc = self.start(self.train_args(trial), trial / "killed.log")
        ckpt_dirs = lambda: [r / "checkpoints" for r in run_folders(trial / "runs")]  # noqa: E731
        if how == "random":
            delay = self.rng.uniform(0, 0.97 * ref.seconds)
            trigger: Callable[[float], bool] = lambda t: t >= delay  # noqa: E731
        else:
            prefix = ".tmp-step-" if how == "save" else ".del-step-"
            # a random occurrence of such a folder (steps 1-6 are saved; steps 1, 2, 4 (or so) are deleted)
            target = self.rng.randint(1, 6 if how == "save" else 3)
            extra = self.rng.choice([0.0, 0.0, self.rng.uniform(0, 0.03)])
            seen: dict[str, Any] = {"names": set()}

            def trigger(t: float) -> bool:
                if "t" in seen:
                    return t - seen["t"] >= extra
                for d in ckpt_dirs():
                    for n in names(d):
                        if n.startswith(prefix):
                            seen["names"].add(n)
                if len(seen["names"]) >= target:
                    seen["t"] = t
                    return extra == 0.0
                return False
        killed = kill_when(proc, trigger)
        result = Trial("", notes={"how": how, "killed_at_s": round(proc.seconds, 3), "killed": killed})
        runs = run_folders(trial / "runs")
        after = {r.name: names(r / "checkpoints") for r in runs}
        result.notes["after_kill"] = after
        if not killed:
            result.outcome = "finished before the kill"
        elif not runs:
            result.outcome = "killed before the run folder"
        elif any((r / "summary.json").exists() for r in runs):
            result.outcome = "killed after summary.json"
        elif any(n.startswith(".tmp-") for ns in after.values() for n in ns):
            result.outcome = "killed during a save (.tmp- left)"
        elif any(n.startswith(".del-") for ns in after.values() for n in ns):
            result.outcome = "killed during a deletion (.del- left)"
        elif not any(n.startswith("step-") for ns in after.values() for n in ns):
            result.outcome = "killed before the first checkpoint"
        else:
            result.outcome = "killed between checkpoints"
        if proc.returncode not in (0, -signal.SIGKILL):
            result.problems.append(f"the killed run exited {proc.returncode}: {proc.output[-1500:]}")
        for run in runs:
            result.problems += [f"after the kill: {run.name}/{p}" for p in checkpoint_problems(run, ref)]
        if not any((r / "summary.json").exists() for r in runs):
            again = self.rerun(self.train_args(trial), trial / "resumed.log", result)
            if again is None:
                return result
            result.notes["resumed_from"] = re.findall(r"resumed from (\S+)", again.output)
        finished = [r for r in run_folders(trial / "runs") if (r / "summary.json").exists()]
        if len(finished) != 1:
            result.problems.append(f"{len(finished)} finished runs: {[r.name for r in finished]}")
        orphans = [r.name for r in run_folders(trial / "runs") if r not in finished]
        if orphans:  # a run killed before its first checkpoint is restarted in its own folder, never abandoned
            result.problems.append(f"unfinished run folders left: {({o: names(trial / 'runs' / 'classifier' / o) for o in orphans})}")
        for run in finished:
            result.problems += [f"{run.name}/{p}" for p in checkpoint_problems(run, ref)]
            result.problems += [f"{run.name}: leftover {n}" for n in leftovers(run)]
            result.problems += duplicate_records(run)
            diff, worst = compare_run(run, ref)
            result.problems += diff
            result.notes["max_weight_diff"] = worst
        result.problems += lock_problems(trial / "runs")
        return result

    # extract_kill --------------------------------------------------------------------------------------------
    def open_store(self, folder: Path) -> tuple[str, Any]:
        from audiointerp.datasets.store import ActivationStore, StoreError

        try:
            return "complete", ActivationStore(folder)
        except StoreError as err:
            text = str(err)
            kind = "incomplete" if "incomplete" in text else "not a store" if "not an activation store" in text else "other"
            return f"refused: {kind}", text
        except Exception as err:  # noqa: BLE001
            return "error", f"{type(err).__name__}: {err}"

    def extract_kill(self, trial: Path, i: int) -> Trial:
        out = trial / "store"
        how = ("random", "shard write")[i % 2]
        proc = self.start(self.extract_args(out), trial / "killed.log")
        if how == "random":
            delay = self.rng.uniform(0, self.store_seconds)
            trigger: Callable[[float], bool] = lambda t: t >= delay  # noqa: E731
        else:  # the k-th change of a shard's size or mtime, then maybe a little later
            target, extra = self.rng.randint(1, 6), self.rng.choice([0.0, self.rng.uniform(0, 0.01)])
            state: dict[str, Any] = {"last": None, "changes": 0}

            def trigger(t: float) -> bool:
                if "t" in state:
                    return t - state["t"] >= extra
                shards = sorted(out.glob("shard-*.h5"))
                try:
                    sig = tuple((s.name, s.stat().st_size, s.stat().st_mtime_ns) for s in shards)
                except OSError:
                    return False
                if shards and sig != state["last"]:
                    state["last"] = sig
                    state["changes"] += 1
                    if state["changes"] >= target:
                        state["t"] = t
                        return extra == 0.0
                return False
        killed = kill_when(proc, trigger)
        result = Trial("", notes={"how": how, "killed_at_s": round(proc.seconds, 3), "killed": killed})
        if proc.returncode not in (0, -signal.SIGKILL):
            result.problems.append(f"the killed extraction exited {proc.returncode}: {proc.output[-1500:]}")
        state_after, detail = self.open_store(out) if out.exists() else ("no folder", None)
        result.outcome = state_after if killed else "finished before the kill"
        result.notes["after_kill"] = {"files": names(out), "open": state_after,
                                      "message": detail if isinstance(detail, str) else None}
        if state_after == "error" or state_after == "refused: other":
            result.problems.append(f"after the kill the store fails to open without the project's error: {detail}")
        if self.rerun(self.extract_args(out), trial / "resumed.log", result) is None:
            return result
        state_after, store = self.open_store(out)
        if state_after != "complete":
            result.problems.append(f"after the rerun the store does not open: {store}")
            return result
        result.problems += store_differences(store, self.store_ref)
        left = [n for n in names(out) if n.endswith((".lock", ".unreadable", ".tmp"))]
        if left:
            result.notes["left_files"] = left
            if any(n.endswith(".lock") for n in left):
                result.problems.append(f"files left after the rerun: {left}")
        return result

    # export_kill ---------------------------------------------------------------------------------------------
    def verify(self, folder: Path) -> tuple[str, str]:
        from audiointerp.errors import CheckpointError
        from audiointerp.train.export import verify_export

        try:
            verify_export(folder)
            return "complete", ""
        except CheckpointError as err:
            return "refused", str(err)
        except Exception as err:  # noqa: BLE001
            return "error", f"{type(err).__name__}: {err}"

    def export_kill(self, trial: Path, i: int) -> Trial:
        out = trial / "export"
        over = i % 2 == 1  # half the trials re-export over an existing, complete export
        how = ("random", "temp folder", "temp manifest")[(i // 2) % 3]
        if over:
            shutil.copytree(self.export_ref, out)
        args = ["export", str(self.ref.run), "--out", str(out)]
        proc = self.start(args, trial / "killed.log")
        if how == "random":
            delay = self.rng.uniform(0, self.export_seconds)
            trigger: Callable[[float], bool] = lambda t: t >= delay  # noqa: E731
        elif how == "temp folder":  # the temporary export folder appeared (being written), maybe a little later
            trigger = appeared(trial, re.compile(r"\.export-.*"), self.rng.choice([0.0, self.rng.uniform(0, 0.05)]))
        else:  # the temporary folder's manifest.json appeared: the old export is about to be replaced

            def trigger(t: float) -> bool:
                return any((trial / n / "manifest.json").exists() for n in names(trial) if n.startswith(".export-"))
        killed = kill_when(proc, trigger)
        result = Trial("", notes={"how": how, "over_existing": over, "killed_at_s": round(proc.seconds, 3),
                                  "killed": killed})
        if proc.returncode not in (0, -signal.SIGKILL):
            result.problems.append(f"the killed export exited {proc.returncode}: {proc.output[-1500:]}")
        if out.exists():
            state, message = self.verify(out)
            result.notes["after_kill"] = {"files": names(out), "message": message}
        else:
            state, message = "absent", ""
        result.outcome = (f"{'over an export' if over else 'fresh'}: " + state) if killed else "finished before the kill"
        if state == "error":
            result.problems.append(f"after the kill the export fails without the project's error: {message}")
        temps = [n for n in names(trial) if n.startswith(".export-")]
        if temps:
            result.notes["temp_folders_left"] = temps
        if self.rerun(args, trial / "rerun.log", result) is None:
            return result
        state, message = self.verify(out)
        if state != "complete":
            result.problems.append(f"after the rerun the export does not verify: {message}")
            return result
        if not np_equal(load_tensors(out / "model.safetensors"), load_tensors(self.export_ref / "model.safetensors")):
            result.problems.append("the rerun's export weights differ from a clean export's")
        # model.safetensors is compared by its tensors above: its header's metadata dict is written in hash order
        mine = json.loads((out / "manifest.json").read_text())["files"]
        theirs = json.loads((self.export_ref / "manifest.json").read_text())["files"]
        if sorted(mine) != sorted(theirs) or {k: v for k, v in mine.items() if k != "model.safetensors"} != {
                k: v for k, v in theirs.items() if k != "model.safetensors"}:
            result.problems.append(f"the rerun's manifest lists other files or sums: "
                                   f"{sorted(set(mine.items()) ^ set(theirs.items()))[:6]}")
        temps = [n for n in names(trial) if n.startswith(".export-")]
        if temps:  # the rerun removes what a killed export left beside its folder
            result.problems.append(f"temporary export folders left after the rerun: {temps}")
        return result

    # divergence ----------------------------------------------------------------------------------------------
    def divergence(self, trial: Path, i: int) -> Trial:
        lr = 10 ** self.rng.uniform(2, 8)
        proc = self.start(self.train_args(trial, f"optim.lr={lr:.6g}", "optim.grad_clip=null", "optim.warmup_steps=0"),
                          trial / "train.log")
        code = proc.wait()
        text = proc.output
        result = Trial("", notes={"lr": lr, "exit": code})
        runs = run_folders(trial / "runs")
        for run in runs:
            result.problems += [f"{run.name}/{p}" for p in checkpoint_problems(run, self.ref)]
        steps = sorted((n for r in runs for n in names(r / "checkpoints") if n.startswith("step-")))
        error = next((line for line in text.splitlines() if line.startswith("audiointerp train: error:")), "")
        if code == 0:
            result.outcome = "finished"
            return result
        if code != 2 or "non-finite" not in error:
            result.outcome = "other failure"
            result.problems.append(f"exit {code} without the non-finite error: {text[-2000:]}")
            return result
        kind = ("non-finite training loss" if "non-finite training loss" in error else
                "non-finite parameter/buffer" if "non-finite parameter" in error else
                "non-finite evaluation output" if "evaluation output" in error else "other non-finite")
        result.outcome = kind
        found = re.search(r"last good checkpoint is (\S+?)(?: \(|[.;,]? )", error)
        if kind == "non-finite evaluation output":
            result.notes["message"] = error[:400]
            return result
        if not found:
            result.problems.append(f"no last good checkpoint named: {error[:500]}")
            return result
        named = found.group(1)
        result.notes["last_good"] = Path(named).name if named != "none" else "none"
        if named == "none":
            if steps:
                result.problems.append(f"last good 'none' but checkpoints exist: {steps}")
        else:
            path = Path(named)
            if not (path / "checkpoint.json").is_file():
                result.problems.append(f"the named last good {named} is not a complete checkpoint")
            elif non_finite(load_tensors(path / "model.safetensors")):
                result.problems.append(f"the named last good {named} holds non-finite tensors")
            elif path.name != steps[-1]:
                result.problems.append(f"the named last good {path.name} is not the newest checkpoint {steps[-1]}")
        return result

    # concurrent ----------------------------------------------------------------------------------------------
    def concurrent(self, trial: Path, i: int) -> Trial:
        case = ("fresh", "unfinished")[i % 2]
        result = Trial("", notes={"case": case})
        if case == "unfinished":
            proc = self.start(self.train_args(trial), trial / "killed.log")
            pattern = re.compile(r"step-\d+")
            target = self.rng.randint(1, 5)  # killed once the target-th checkpoint is seen (6 are saved)
            seen: set[str] = set()

            def trigger(t: float) -> bool:
                seen.update(n for r in run_folders(trial / "runs") for n in names(r / "checkpoints") if pattern.fullmatch(n))
                return len(seen) >= target

            if not kill_when(proc, trigger):
                result.outcome = "setup: the run finished before the kill"
                return result
            result.notes["unfinished"] = {r.name: names(r / "checkpoints") for r in run_folders(trial / "runs")}
        stagger = self.rng.uniform(0, 0.3)
        first = self.start(self.train_args(trial), trial / "a.log")
        time.sleep(stagger)
        second = self.start(self.train_args(trial), trial / "b.log")
        procs = {"a": first, "b": second}
        for p in procs.values():
            p.wait()
        result.notes["stagger_s"] = round(stagger, 3)
        done: dict[str, str] = {}
        refused = []
        for key, p in procs.items():
            other = procs["b" if key == "a" else "a"]
            if p.returncode == 0:
                found = re.findall(r"run directory: (\S+)", p.output)
                done[key] = found[-1] if found else "?"
            elif p.returncode == 2 and f"locked by pid {other.pid} " in p.output:
                refused.append(key)
            else:
                result.problems.append(f"process {key} exited {p.returncode} without the lock message naming pid "
                                       f"{other.pid}: {p.output[-2000:]}")
        if len(done) == 2 and len(set(done.values())) == 1:
            result.problems.append(f"both processes trained {done['a']}")
        result.outcome = (f"{case}: one trained, one refused by the lock" if len(done) == 1 and refused else
                          f"{case}: both trained, different folders" if len(done) == 2 and len(set(done.values())) == 2 else
                          f"{case}: other")
        if case == "unfinished":
            resumed = [k for k, p in procs.items() if "resumed from" in p.output]
            result.notes["resumed_by"] = resumed
            if len(resumed) != 1:
                result.problems.append(f"{len(resumed)} processes resumed the unfinished run")
        for run in run_folders(trial / "runs"):
            result.problems += duplicate_records(run)
            if (run / "summary.json").exists():
                result.problems += [f"{run.name}/{p}" for p in checkpoint_problems(run, self.ref)]
                result.problems += [f"{run.name}: {p}" for p in compare_run(run, self.ref)[0]]
                setups = (run / "events.log").read_text().count(": task classifier, model")
                result.notes.setdefault("setups_per_run", {})[run.name] = setups
        result.problems += lock_problems(trial / "runs")
        return result


def np_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)


def store_differences(store: Any, reference: Path) -> list[str]:
    from audiointerp.datasets.store import ActivationStore

    clean = ActivationStore(reference)
    problems = []
    if store.clips != clean.clips:
        problems.append("clip table differs from a clean extraction")
    mine = {k: v for k, v in store.meta.items() if k not in ("out",)}
    theirs = {k: v for k, v in clean.meta.items() if k not in ("out",)}
    if mine != theirs:
        problems.append(f"store.json differs: {sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))}")
    for layer in clean.layers:
        if not np.array_equal(store.load(layer), clean.load(layer)):
            problems.append(f"layer {layer} differs from a clean extraction")
    return problems


# --- driver ----------------------------------------------------------------------------------------------------
def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50, help="trials per fault (default 50)")
    parser.add_argument("--faults", nargs="+", choices=FAULTS, default=list(FAULTS), help="which faults (default all)")
    parser.add_argument("--seed", type=int, default=0, help="the random moments and learning rates")
    parser.add_argument("--workdir", type=Path, help="where trials run (default: a new temporary folder, removed at the "
                        "end unless a trial failed)")
    parser.add_argument("--json", type=Path, default=RESULTS_PATH, help=f"results (default {RESULTS_PATH})")
    parser.add_argument("--budget-s", type=float, help="soft limit on the whole run: no trial starts after it")
    parser.add_argument("--launcher", choices=("fork", "spawn"), default="fork",
                        help="fork: children of this pre-imported script (default); spawn: fresh interpreters")
    parser.add_argument("--keep", action="store_true", help="keep every trial's folder, not only failed ones")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = parse(argv)
    load = os.getloadavg()
    started = time.monotonic()
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="audiointerp-faults-")) if own_workdir else args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.launcher == "fork":
        _preload()
    faults = Faults(workdir, args.launcher, random.Random(args.seed))
    print(f"workdir {workdir}; launcher {args.launcher}; preparing the data and the references ...", flush=True)
    timings = faults.prepare(args.faults)
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()), flush=True)
    stats: dict[str, dict[str, Any]] = {name: {"trials": 0, "failures": 0, "outcomes": Counter(), "seconds": [],
                                               "failed": [], "notes": Counter()} for name in args.faults}
    stopped_early = False
    for i in range(args.repeats):
        for name in args.faults:
            if args.budget_s is not None and time.monotonic() - started > args.budget_s:
                stopped_early = True
                break
            trial_dir = workdir / name / f"{i:03d}"
            trial_dir.mkdir(parents=True)
            t0 = time.monotonic()
            try:
                trial = getattr(faults, name)(trial_dir, i)
            except Exception:  # noqa: BLE001  (a bug of this script or an unexpected error: a failure, with evidence)
                trial = Trial("harness error", [traceback.format_exc()[-3000:]])
            seconds = time.monotonic() - t0
            s = stats[name]
            s["trials"] += 1
            s["seconds"].append(seconds)
            s["outcomes"][trial.outcome] += 1
            for key in ("unfinished_folders_left", "stale_locks_of_unfinished_runs_left", "temp_folders_left",
                        "temp_folders_left_after_rerun", "left_files"):
                if trial.notes.get(key):
                    s["notes"][key] += 1
            if trial.notes.get("max_weight_diff"):
                s["notes"]["weights not bit-identical"] += 1
            if trial.problems:
                s["failures"] += 1
                s["failed"].append({"trial": str(trial_dir), "outcome": trial.outcome, "problems": trial.problems,
                                    "notes": trial.notes})
                print(f"  FAIL {name} {i}: {trial.outcome}: {trial.problems[0][:300]}", flush=True)
            elif not args.keep:
                shutil.rmtree(trial_dir, ignore_errors=True)
        if stopped_early:
            break
        if (i + 1) % 5 == 0 or i == 0:
            print(f"  round {i + 1}/{args.repeats} done, {time.monotonic() - started:.0f} s", flush=True)
    total = time.monotonic() - started
    print(f"\n{'fault':<14}{'trials':>7}{'failures':>9}{'s/trial':>9}  outcomes")
    for name, s in stats.items():
        mean = sum(s["seconds"]) / max(1, len(s["seconds"]))
        outcomes = "; ".join(f"{k}: {v}" for k, v in sorted(s["outcomes"].items()))
        print(f"{name:<14}{s['trials']:>7}{s['failures']:>9}{mean:>9.2f}  {outcomes}")
        if s["notes"]:
            print(f"{'':<39}notes: " + "; ".join(f"{k}: {v}" for k, v in sorted(s["notes"].items())))
    print(f"total {total:.0f} s{' (stopped by --budget-s)' if stopped_early else ''}")
    results = {
        "benchmark": "faults", "launcher": args.launcher, "seed": args.seed, "repeats": args.repeats,
        "stopped_by_budget": stopped_early, "total_seconds": round(total, 1), "prepare": timings,
        "weights_compared": "bit-identical (numpy array_equal of every tensor of every kept checkpoint)",
        "faults": {name: {"trials": s["trials"], "failures": s["failures"], "outcomes": dict(s["outcomes"]),
                          "notes": dict(s["notes"]), "seconds_mean": round(sum(s["seconds"]) / max(1, len(s["seconds"])), 3),
                          "seconds_total": round(sum(s["seconds"]), 1), "failed": s["failed"][:10]}
                   for name, s in stats.items()},
        "environment": environment(load, cpus=os.cpu_count()),
    }
    if args.json:
        write_results(args.json, results)
        print(f"wrote {args.json}")
    if own_workdir and not args.keep and not any(s["failures"] for s in stats.values()):
        shutil.rmtree(workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    outcome = main()
    raise SystemExit(1 if any(f["failures"] for f in outcome["faults"].values()) else 0)
