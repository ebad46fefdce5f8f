"""Issue 12.3: the same command started twice (or three times) at once on one unfinished run.

Real processes race for the run: each waits at a common start signal, then plans (`plan_run`, what the trainer's
main process calls) and keeps what it got until the test ends. Exactly one may get the run; every other one must
be refused at once, naming the winner's pid, without starting another run. A holder killed with SIGKILL leaves
its lock behind, and the next process on this host takes it over.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from audiointerp.train.config import load_config
from audiointerp.train.rundir import plan_run, release_run_lock, run_lock_path

RACER = textwrap.dedent("""
    import json, os, sys, time
    from audiointerp.train.config import load_config
    from audiointerp.train.rundir import plan_run
    go = sys.argv[1]
    cfg = load_config("classifier", sys.argv[2:])
    print("ready", flush=True)
    while not os.path.exists(go):
        time.sleep(0.001)
    try:
        plan = plan_run(cfg)
        print(json.dumps({"run_dir": str(plan.run_dir), "resume_from": str(plan.resume_from)}), flush=True)
    except Exception as err:
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
    sys.stdin.readline()  # hold what was planned until the test has seen every racer's answer
""")


def _overrides(tmp_path: Path) -> list[str]:
    return [f"output_dir={tmp_path / 'runs'}", "tracking.backend=none", f"data.source={tmp_path / 'manifest.csv'}"]


def _unfinished_run(tmp_path: Path) -> Path:
    """A run folder as a killed run leaves it: its config and one complete checkpoint, no summary.json."""
    cfg = load_config("classifier", _overrides(tmp_path))
    run = tmp_path / "runs" / "classifier" / "20260101-000000-abcd"
    (run / "checkpoints" / "step-00000020").mkdir(parents=True)
    (run / "checkpoints" / "step-00000020" / "checkpoint.json").write_text("{}")
    OmegaConf.save(cfg, run / "config.yaml")
    return run


@pytest.mark.parametrize("racers", [2, 3])
def test_processes_racing_for_one_unfinished_run_get_it_exactly_once(tmp_path: Path, racers: int) -> None:
    run = _unfinished_run(tmp_path)
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(go), *_overrides(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(racers)]
    answers: dict[int, dict] = {}
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
        go.touch()
        for proc in procs:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-2000:]
            answers[proc.pid] = json.loads(line)
    finally:
        for proc in procs:
            proc.communicate("\n", timeout=120)
    winners = [pid for pid, answer in answers.items() if "run_dir" in answer]
    assert len(winners) == 1, answers
    assert answers[winners[0]]["run_dir"] == str(run) and "step-00000020" in answers[winners[0]]["resume_from"]
    for pid, answer in answers.items():
        if pid != winners[0]:
            assert answer["error"].startswith("LockHeldError: run "), answer
            assert f"pid {winners[0]} " in answer["error"] and str(run_lock_path(run)) in answer["error"], answer
    assert [p.name for p in (tmp_path / "runs" / "classifier").iterdir()] == [run.name]  # no other run started
    assert not run_lock_path(run).exists()  # the winner released it at its exit


def test_the_lock_of_a_killed_run_is_taken_over_by_the_next_process(tmp_path: Path) -> None:
    run = _unfinished_run(tmp_path)
    code = textwrap.dedent("""
        import os, signal, sys
        from audiointerp.train.config import load_config
        from audiointerp.train.rundir import plan_run
        plan_run(load_config("classifier", sys.argv[1:]))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", code, *_overrides(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert json.loads(run_lock_path(run).read_text())["pid"] != os.getpid()  # left behind by the kill
    try:
        plan = plan_run(load_config("classifier", _overrides(tmp_path)))
        assert plan.run_dir == run and plan.resume_from is not None
        assert json.loads(run_lock_path(run).read_text())["pid"] == os.getpid()
    finally:
        release_run_lock()


PAUSING_RUNNER = textwrap.dedent("""
    import os, sys, time
    from audiointerp.train.config import load_config
    from audiointerp.train import trainer

    pause_at, paused, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    original = trainer._Loop.after_update
    def after_update(self):
        original(self)
        if self.state.step == pause_at:
            open(paused, "w").close()
            while not os.path.exists(go):
                time.sleep(0.01)
    trainer._Loop.after_update = after_update
    trainer.Trainer(load_config("classifier", sys.argv[4:])).fit()
""")


def test_the_same_training_command_started_twice_trains_the_run_once(tiny_overrides: list[str], tmp_path: Path) -> None:
    """The issue's report, end to end: the second `train` of an unfinished run is refused while the first runs."""
    from audiointerp.train.checkpoint import CheckpointStore

    paused, go = tmp_path / "paused", tmp_path / "go"
    common = [*tiny_overrides, "train.epochs=1", "train.checkpoint_every_steps=2", "train.log_every_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-c", PAUSING_RUNNER, "3", str(paused), str(go), *common],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():  # the first run has a checkpoint (step 2): an unfinished run to resume
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-c", PAUSING_RUNNER, "0", str(tmp_path / "p2"), str(go), *common],
                                capture_output=True, text=True, env=env, timeout=300)
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode != 0 and "LockHeldError" in second.stderr, second.stderr[-3000:]
    assert f"is in use: locked by pid {first.pid} " in second.stderr, second.stderr[-3000:]
    runs = list((tmp_path / "runs" / "classifier").iterdir())
    assert len(runs) == 1 and (runs[0] / "summary.json").is_file()  # no other run was started
    steps = [r["step"] for r in map(json.loads, (runs[0] / "metrics.jsonl").read_text().splitlines())
             if any(key.startswith("train/") for key in r)]
    assert steps
    assert steps == sorted(set(steps)), steps  # every step logged once
    assert CheckpointStore(runs[0]).latest() is not None and not run_lock_path(runs[0]).exists()
