"""`resume=auto` and runs stopped before their first checkpoint: restarted in place, never orphaned."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from audiointerp.train.config import load_config
from audiointerp.train.rundir import plan_run, release_run_lock, run_lock_path


def _config(tmp_path: Path, *overrides: str):
    return load_config("classifier", [f"output_dir={tmp_path / 'runs'}", "tracking.backend=none",
                                      f"data.source={tmp_path / 'manifest.csv'}", *overrides])


def _killed_before_its_first_checkpoint(cfg, run_id: str, pid: int) -> Path:
    """What a run SIGKILLed while setting up or in its first steps leaves: its config and logs, its lock."""
    run = Path(cfg.output_dir) / str(cfg.experiment) / run_id
    run.mkdir(parents=True)
    OmegaConf.save(cfg, run / "config.yaml")
    (run / "events.log").write_text("started\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "train/loss": 2.0}\n')
    lock = run_lock_path(run)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "started": "2026-01-01T00:00:00Z",
                                "command": "audiointerp train classifier"}))
    return run


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_run_killed_before_its_first_checkpoint_is_restarted_in_its_own_folder(tmp_path: Path) -> None:
    """Before: the rerun started a second run folder, leaving the killed one (config, logs) and its stale lock
    behind for good (benchmarks/faults.py: 2 of 50 kills)."""
    cfg = _config(tmp_path)
    run = _killed_before_its_first_checkpoint(cfg, "killed", dead_pid())
    try:
        plan = plan_run(cfg)
        assert plan.run_dir == run and plan.resume_from is None and plan.run_id == "killed"
        assert not run.exists()  # emptied: the trainer starts it as a fresh run
        assert json.loads(run_lock_path(run).read_text())["pid"] == os.getpid()  # the stale lock taken over
    finally:
        release_run_lock()
    assert [p.name for p in (tmp_path / "runs" / "classifier").iterdir()] == []
    assert not (tmp_path / "runs" / ".locks").exists()


def test_a_finished_run_or_another_config_is_not_restarted(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    finished = _killed_before_its_first_checkpoint(cfg, "finished", dead_pid())
    (finished / "summary.json").write_text("{}")
    other = _killed_before_its_first_checkpoint(_config(tmp_path, "optim.lr=0.5"), "other", dead_pid())
    try:
        plan = plan_run(cfg)
        assert plan.run_dir not in (finished, other) and plan.resume_from is None
        assert (finished / "config.yaml").is_file() and (other / "config.yaml").is_file()
    finally:
        release_run_lock()


def test_the_same_command_while_a_run_sets_up_is_refused(tmp_path: Path) -> None:
    """A run that has written its config but no checkpoint yet, held by a live process: a second identical
    command is refused naming it, instead of starting a second run beside it."""
    cfg = _config(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = _killed_before_its_first_checkpoint(cfg, "running", holder.pid)
        code = ("import sys\nfrom audiointerp.train.config import load_config\nfrom audiointerp.locks import LockHeldError\n"
                "from audiointerp.train.rundir import plan_run\n"
                "try:\n    plan_run(load_config('classifier', sys.argv[1:]))\n"
                "except LockHeldError as err:\n    print(err); sys.exit(3)\nprint('planned')\n")
        result = subprocess.run([sys.executable, "-c", code, f"output_dir={tmp_path / 'runs'}", "tracking.backend=none",
                                 f"data.source={tmp_path / 'manifest.csv'}"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 3, result.stdout + result.stderr[-2000:]
        assert f"pid {holder.pid}" in result.stdout and str(run.resolve()) in result.stdout
        assert (run / "config.yaml").is_file()
        assert [p.name for p in run.parent.iterdir()] == ["running"]
    finally:
        holder.kill()
        holder.wait()
