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


def test_an_empty_run_folder_left_by_a_kill_is_removed_unless_its_run_is_starting(tmp_path: Path) -> None:
    """A run killed between creating its folder and writing its config left an empty folder and a stale lock
    (benchmarks/faults.py: 1 of 50 kills); the next plan removes both, but never a folder a live process holds."""
    cfg = _config(tmp_path)
    empty = Path(cfg.output_dir) / "classifier" / "empty"
    empty.mkdir(parents=True)
    lock = run_lock_path(empty)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "started": "2026-01-01T00:00:00Z",
                                "command": "audiointerp train classifier"}))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    starting = Path(cfg.output_dir) / "classifier" / "starting"
    starting.mkdir()
    run_lock_path(starting).write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                   "started": "2026-01-01T00:00:00Z", "command": "audiointerp train"}))
    try:
        plan = plan_run(cfg)
        assert plan.run_dir.name not in ("empty", "starting")
        assert not empty.exists() and not lock.exists()
        assert starting.is_dir()  # held by a live process: left alone
    finally:
        release_run_lock()
        holder.kill()
        holder.wait()


def test_a_kill_while_the_best_link_is_swapped_is_repaired_on_resume(tiny_overrides: list[str]) -> None:
    """Killed after writing `.tmp-best` but before renaming it to `best`: before the fix the resumed run never
    re-created `best` (later evaluations were not better than the restored best value) and pruning deleted the
    best checkpoint (benchmarks/faults.py, concurrent trial 23: best -> None)."""
    from audiointerp.train.checkpoint import CheckpointStore
    from audiointerp.train.trainer import Trainer

    cfg = load_config("classifier", [*tiny_overrides, "train.checkpoint_every_steps=1", "train.keep_last=2"])
    run = Trainer(cfg).fit().run_dir
    store = CheckpointStore(run)
    best = store.best()
    assert best is not None
    (run / "summary.json").unlink()
    (store.dir / "best").rename(store.dir / ".tmp-best")  # the link written, not yet swapped in
    Trainer(cfg).fit()
    assert store.best() == best


def test_a_run_saved_before_a_key_was_added_to_the_schema_still_resumes(tiny_overrides: list[str]) -> None:
    """An older version's config.yaml lacks keys added since (here train.swa*): they count at their defaults, so
    the run resumes (with resume=auto too); asking for another value of such a key is another experiment."""
    import pytest

    from audiointerp.errors import ConfigError
    from audiointerp.train.rundir import config_differences
    from audiointerp.train.trainer import Trainer

    first = Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=1", "run_id=old"])).fit()
    saved = first.run_dir / "config.yaml"
    older = OmegaConf.load(saved)
    for key in ("swa", "swa_start_epoch", "swa_end_epoch"):
        del older.train[key]
    saved.write_text(OmegaConf.to_yaml(older))
    (first.run_dir / "summary.json").unlink()  # unfinished, as if killed: resume=auto must find it
    later = load_config("classifier", [*tiny_overrides, "train.epochs=2"])
    assert config_differences(saved, later) == []
    assert plan_run(later).run_dir == first.run_dir
    release_run_lock()
    with pytest.raises(ConfigError, match=r"train.swa: False -> True"):
        Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=2", "train.swa=true", "run_id=old"])).fit()
