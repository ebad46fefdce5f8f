"""Issue 12.3: the lock of a run folder (taken by `plan_run`) and its building block `FileLock`.

A holder is a real process (a child interpreter) wherever the test is about another process, since a lock is
re-entrant for the process that holds it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest.mock import patch

import pytest
from omegaconf import OmegaConf

from audiointerp.locks import FileLock, LockHeldError, held_lock
from audiointerp.train.config import load_config
from audiointerp.train.rundir import plan_run, release_run_lock, run_lock_path

OVERRIDE = "set train.force_unlock=true"


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _record(path: Path, host: str, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00Z", "command": "train x"}))


def _try_lock_in_child(path: Path) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import sys
        from audiointerp.locks import FileLock, LockHeldError
        try:
            FileLock({str(path)!r}, "the thing", "force it").acquire()
        except LockHeldError as err:
            print(err); sys.exit(3)
        print("acquired")
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_lock_records_its_holder_and_is_removed_on_release(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "x.lock", "the thing", OVERRIDE).acquire()
    try:
        record = json.loads((tmp_path / "x.lock").read_text())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
        assert record["started"].endswith("Z") and sys.executable in record["command"]
        assert held_lock(tmp_path / "x.lock") is lock
    finally:
        lock.release()
    assert not (tmp_path / "x.lock").exists() and held_lock(tmp_path / "x.lock") is None


def test_another_process_is_refused_with_the_holders_pid_host_and_lock_path(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with FileLock(path, "the thing", OVERRIDE):
        result = _try_lock_in_child(path)
    assert result.returncode == 3, result.stderr[-2000:]
    assert f"pid {os.getpid()}" in result.stdout and socket.gethostname() in result.stdout
    assert str(path) in result.stdout and "the thing is in use" in result.stdout
    assert _try_lock_in_child(path).returncode == 0  # released: free again


def test_a_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path, caplog) -> None:
    path = tmp_path / "x.lock"
    dead = _dead_pid()
    _record(path, socket.gethostname(), dead)
    with caplog.at_level(logging.WARNING, logger="audiointerp"):
        lock = FileLock(path, "the thing", OVERRIDE).acquire()
    try:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert f"pid {dead}" in caplog.text and "no longer running" in caplog.text
    finally:
        lock.release()


def test_a_lock_recorded_on_another_host_is_refused_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    _record(path, "node-elsewhere-7", 4242)
    with pytest.raises(LockHeldError, match=r"pid 4242 on host 'node-elsewhere-7'.*set train.force_unlock=true") as err:
        FileLock(path, "the thing", OVERRIDE).acquire()
    assert err.value.holder.host == "node-elsewhere-7"
    assert json.loads(path.read_text())["host"] == "node-elsewhere-7"  # refused: left as it was
    lock = FileLock(path, "the thing", OVERRIDE).acquire(force=True)
    try:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_lock_of_another_host_is_taken_over_once_its_holder_stopped_refreshing_it(tmp_path: Path, caplog) -> None:
    """`stale_after_s` (the downloads' locks): another host's lock whose file was not refreshed for that long is
    taken over (its node died); a fresh one is refused as before; `refresh` is the holder's heartbeat."""
    path = tmp_path / "x.lock"
    _record(path, "node-that-died", 4242)
    with pytest.raises(LockHeldError, match="node-that-died"):
        FileLock(path, "the thing", OVERRIDE, stale_after_s=600).acquire()  # written just now: may be alive
    old = path.stat().st_mtime - 601
    os.utime(path, (old, old))
    with pytest.raises(LockHeldError, match="node-that-died"):
        FileLock(path, "the thing", OVERRIDE).acquire()  # without stale_after_s: never taken over by age
    with caplog.at_level(logging.WARNING, logger="audiointerp"):
        lock = FileLock(path, "the thing", OVERRIDE, stale_after_s=600).acquire()
    try:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        assert "last refreshed 601 s ago" in caplog.text and "node-that-died" in caplog.text
        os.utime(path, (old, old))
        lock.refresh()
        assert abs(path.stat().st_mtime - time.time()) < 60
    finally:
        lock.release()


def test_a_running_pid_that_does_not_hold_the_lock_is_refused_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _record(path, socket.gethostname(), sleeper.pid)
        with pytest.raises(LockHeldError, match=rf"pid {sleeper.pid} .*still runs.*set train.force_unlock=true"):
            FileLock(path, "the thing", OVERRIDE).acquire()
        FileLock(path, "the thing", OVERRIDE).acquire(force=True).release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_force_never_takes_a_lock_a_live_process_holds(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    code = textwrap.dedent(f"""
        import sys, time
        from audiointerp.locks import FileLock
        FileLock({str(path)!r}, "the thing", "force it").acquire()
        print("held", flush=True)
        sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=rf"in use: locked by pid {holder.pid} "):
            FileLock(path, "the thing", OVERRIDE).acquire(force=True)
    finally:
        holder.communicate("\n", timeout=60)
    assert not path.exists()  # released at the holder's exit (atexit)


def test_a_forked_child_outliving_the_holder_does_not_keep_its_lock(tmp_path: Path) -> None:
    """Data loader workers are forked: one still running after its parent was killed must not hold the lock."""
    path = tmp_path / "x.lock"
    code = textwrap.dedent(f"""
        import os, signal, time
        from audiointerp.locks import FileLock
        FileLock({str(path)!r}, "the thing", "force it").acquire()
        child = os.fork()
        if child == 0:
            time.sleep(60); os._exit(0)
        print(child, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    orphan = int(result.stdout.split()[0])
    try:
        assert result.returncode == -9, result.stderr[-2000:]
        assert path.exists()  # left by the kill
        lock = FileLock(path, "the thing", OVERRIDE).acquire()  # dead holder: taken over despite the orphan
        lock.release()
    finally:
        os.kill(orphan, 9)


# --- the run lock -------------------------------------------------------------------------------------------------
def _config(tmp_path: Path, *overrides: str):
    return load_config("classifier", [f"output_dir={tmp_path / 'runs'}", "tracking.backend=none",
                                      f"data.source={tmp_path / 'manifest.csv'}", *overrides])


def _unfinished_run(tmp_path: Path, cfg, run_id: str = "r1") -> Path:
    """A run folder as a killed run leaves it: its config and one complete checkpoint, no summary."""
    run = Path(cfg.output_dir) / str(cfg.experiment) / run_id
    (run / "checkpoints" / "step-00000004").mkdir(parents=True)
    (run / "checkpoints" / "step-00000004" / "checkpoint.json").write_text("{}")
    OmegaConf.save(cfg, run / "config.yaml")
    return run


def test_plan_run_locks_the_run_it_chooses_outside_the_run_folder(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "run_id=fresh")
    plan = plan_run(cfg)
    try:
        lock_path = run_lock_path(plan.run_dir)
        assert lock_path == (tmp_path / "runs" / ".locks" / "classifier" / "fresh.lock")
        assert json.loads(lock_path.read_text())["pid"] == os.getpid()
        assert not plan.run_dir.exists()  # the trainer still sees a fresh run (and removes it if set-up fails)
        assert plan_run(cfg).run_dir == plan.run_dir  # the same process planning again keeps its lock
    finally:
        release_run_lock()
    assert not lock_path.exists()
    assert not (tmp_path / "runs" / ".locks").exists()  # no empty lock folders are left behind


def test_a_pruned_lock_folder_is_recreated_by_the_next_locker(tmp_path: Path) -> None:
    """Releasing removes the empty `.locks/<experiment>` folders; one that vanishes between another process's
    mkdir and its open is made again, and a folder still holding another run's lock is kept."""
    from audiointerp.locks import FileLock

    first = FileLock(tmp_path / ".locks" / "exp" / "a.lock", "run a", "", prune=2).acquire()
    second = FileLock(tmp_path / ".locks" / "exp" / "b.lock", "run b", "", prune=2).acquire()
    first.release()
    assert (tmp_path / ".locks" / "exp").is_dir()
    second.release()
    assert not (tmp_path / ".locks").exists() and tmp_path.is_dir()
    real_open, calls = os.open, {"n": 0}

    def racing_open(path, flags, *args):
        calls["n"] += 1
        if calls["n"] == 1:  # a releasing process prunes the folder right after our mkdir
            Path(path).parent.rmdir()
        return real_open(path, flags, *args)

    with patch("os.open", racing_open):
        lock = FileLock(tmp_path / ".locks" / "exp" / "c.lock", "run c", "", prune=2).acquire()
    assert lock.held and calls["n"] == 2
    lock.release()


def test_a_second_process_planning_a_locked_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run = _unfinished_run(tmp_path, cfg)
    plan = plan_run(cfg)
    assert plan.run_dir == run and plan.resume_from is not None
    code = textwrap.dedent("""
        import sys
        from audiointerp.train.config import load_config
        from audiointerp.locks import LockHeldError
        from audiointerp.train.rundir import plan_run
        try:
            plan_run(load_config("classifier", sys.argv[1:]))
        except LockHeldError as err:
            print(err); sys.exit(3)
        print("planned")
    """)
    try:
        result = subprocess.run([sys.executable, "-c", code, f"output_dir={tmp_path / 'runs'}",
                                 "tracking.backend=none", f"data.source={tmp_path / 'manifest.csv'}"],
                                capture_output=True, text=True, timeout=300)
    finally:
        plan.release_lock()
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert f"run {run.resolve()} is in use" in result.stdout and f"pid {os.getpid()}" in result.stdout
    assert not (Path(cfg.output_dir) / "classifier").joinpath("r2").exists()
    assert len(list((Path(cfg.output_dir) / "classifier").iterdir())) == 1  # no other run was started


def test_a_run_locked_on_another_host_needs_train_force_unlock(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    run = _unfinished_run(tmp_path, cfg)
    _record(run_lock_path(run), "node-elsewhere-7", 4242)
    with pytest.raises(LockHeldError, match=r"pid 4242 on host 'node-elsewhere-7'.*set train.force_unlock=true"):
        plan_run(cfg)
    forced = _config(tmp_path, "train.force_unlock=true")
    try:
        plan = plan_run(forced)  # force_unlock is not a config change: the run is still resumed
        assert plan.run_dir == run and plan.resume_from is not None
        assert json.loads(run_lock_path(run).read_text())["host"] == socket.gethostname()
    finally:
        release_run_lock()


def test_a_refused_plan_releases_the_lock_it_took(tmp_path: Path) -> None:
    from audiointerp.errors import ConfigError

    cfg = _config(tmp_path, "run_id=r1", "train.resume=never")
    run = _unfinished_run(tmp_path, cfg)
    with pytest.raises(ConfigError, match="already has checkpoints"):
        plan_run(cfg)
    assert not run_lock_path(run).exists() and held_lock(run_lock_path(run)) is None


def test_a_plan_for_another_run_releases_the_previous_runs_lock(tmp_path: Path) -> None:
    first = plan_run(_config(tmp_path, "run_id=a"))
    second = plan_run(_config(tmp_path, "run_id=b"))
    try:
        assert not run_lock_path(first.run_dir).exists() and run_lock_path(second.run_dir).exists()
    finally:
        second.release_lock()
    assert not run_lock_path(second.run_dir).exists()


def test_without_flock_support_the_recorded_holder_decides(tmp_path: Path, monkeypatch) -> None:
    """Lustre mounted without flock and some FUSE mounts fail flock with ENOSYS: the lock must still work."""
    import errno

    import audiointerp.locks as lock_module

    def no_flock(fd: int, operation: int) -> None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    path = tmp_path / "x.lock"
    FileLock(path, "the thing", OVERRIDE).acquire().release()  # a fresh lock: created with O_EXCL
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _record(path, socket.gethostname(), sleeper.pid)
        with pytest.raises(LockHeldError, match=rf"pid {sleeper.pid} .*still runs, and this file system cannot tell"):
            FileLock(path, "the thing", OVERRIDE).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    _record(path, socket.gethostname(), _dead_pid())
    lock = FileLock(path, "the thing", OVERRIDE).acquire()  # its holder is dead: taken over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()
