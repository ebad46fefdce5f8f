"""Exclusive, self-describing locks: one process at a time on a run folder or an activation-store shard.

A lock is a file holding JSON `{"host", "pid", "started", "command"}` (the holder), and it is held through
`fcntl.flock(LOCK_EX | LOCK_NB)` on a descriptor kept open for as long as the lock is held. The kernel drops a
`flock` when its holder dies, however it dies, so on one host the flock alone says whether the lock is held; the
JSON names the holder in the error of the process that is refused, and lets a process on another host (a shared
file system seen by several nodes, where `flock` may not reach across) see that someone else recorded it.

Acquiring (`FileLock.acquire`):

- the file is created with `O_CREAT | O_EXCL` (atomic, NFS included) or, if it exists, opened; then flocked
  without blocking. If the flock is refused, a live process holds the lock: `LockHeldError` naming the holder
  (host, pid, start time, command) and the lock path, whatever `force` says.
- With the flock taken, the recorded holder (if any) is judged: none (an empty file: a holder killed between
  creating and writing it, or one about to flock it, which will then be refused) or this process: taken.
  Same host and its pid no longer running: a stale lock, taken over (logged as a warning). Same host and its pid
  running (but not holding the flock: the pid was probably reused by another program): refused unless `force`.
  Another host: it cannot be checked from here, so refused unless `force` (then taken over, logged), or unless
  the lock was made with `stale_after_s` and its file has not been refreshed (`refresh`, its modification time)
  for that long: a holder that refreshes its lock while it works (a download's heartbeat) and stopped doing so
  has died with its node, so the lock is taken over (logged).
- The descriptor's file must still be the one at the path (a holder releasing unlinks it): otherwise retried.
- On a file system without `flock` (Lustre mounted without `flock`, some FUSE mounts: flock fails with ENOSYS,
  ENOLCK, EOPNOTSUPP or EINVAL) the recorded holder alone decides, as above (a warning says so): `O_EXCL`
  still makes one of several simultaneous creators win, but a stale lock's takeover is then not atomic.

Releasing unlinks the file while still holding the flock, then closes the descriptor, so a lock file left on
disk always belongs to a live holder or to a dead one. Every lock a process holds is released at its exit
(`atexit`); a child forked by it (data loader workers) closes its inherited copies at once, so that a child
outliving its parent never keeps the parent's lock. `acquire_lock` is re-entrant within a process: asked for a
lock the process already holds, it returns that lock.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from audiointerp.errors import AudioInterpError

log = logging.getLogger("audiointerp")

LOCK_SUFFIX = ".lock"
_ATTEMPTS = 20  # retries when a holder releases (unlinks) the file between our open and our flock
_CONTENT_WAIT_S = 1.0  # how long a refused process waits for a new holder to finish writing its record
# flock failing with these means the file system does not support it (Lustre without -o flock, some FUSE mounts)
_NO_FLOCK = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}

_held: dict[str, "FileLock"] = {}  # path -> lock this process holds
_held_guard = threading.Lock()


class LockHeldError(AudioInterpError, RuntimeError):
    """Another process holds (or may hold) the lock; the message names it, the lock file and how to override."""

    def __init__(self, message: str, path: Path, holder: Optional["Holder"]) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: host name, process id, start time (UTC, ISO 8601) and command line."""

    host: str
    pid: int
    started: str
    command: str

    @classmethod
    def me(cls) -> "Holder":
        return cls(host=socket.gethostname(), pid=os.getpid(),
                   started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   command=" ".join([sys.executable, *sys.argv]))

    @classmethod
    def parse(cls, text: str) -> Optional["Holder"]:
        """The holder recorded in a lock file's text, or None when it is empty or not a holder record."""
        try:
            data: Any = json.loads(text)
            return cls(host=str(data["host"]), pid=int(data["pid"]), started=str(data["started"]),
                       command=str(data.get("command", "")))
        except (ValueError, TypeError, KeyError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host!r}, started {self.started} ({self.command})"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> Optional[Holder]:
    size = os.fstat(fd).st_size
    return Holder.parse(os.pread(fd, max(size, 1), 0).decode("utf-8", errors="replace")) if size else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


class FileLock:
    """An exclusive lock on `path` (see the module docstring); `what` names the locked thing in messages, and
    `override` says how a user takes over a lock that cannot be checked (e.g. "set train.force_unlock=true")."""

    def __init__(self, path: str | Path, what: str, override: str, prune: int = 0,
                 stale_after_s: Optional[float] = None) -> None:
        """`prune`: how many folders above the lock file `release` removes when they are left empty (a run's
        `.locks/<experiment>/` and `.locks/`); a process creating a lock in one just then simply recreates it.
        `stale_after_s`: a lock of another host whose file was not refreshed for that long is taken over (its
        holders `refresh` it more often than that; None: never)."""
        self.path = Path(os.path.abspath(path))
        self.what = what
        self.override = override
        self.prune = prune
        self.stale_after_s = stale_after_s
        self._fd: Optional[int] = None
        self._owner_pid: Optional[int] = None

    @property
    def held(self) -> bool:
        """Whether this process holds the lock through this object."""
        return self._fd is not None and self._owner_pid == os.getpid()

    def acquire(self, force: bool = False) -> "FileLock":
        """Take the lock, or raise LockHeldError naming its holder; returns self.

        `force` takes over a lock whose holder cannot be checked from here (recorded on another host) or whose
        pid runs on this host without holding it; never a lock the kernel reports as held by a live process.
        """
        key = str(self.path)
        if self.held:
            return self
        with _held_guard:
            current = _held.get(key)
        if current is not None and current.held:
            raise LockHeldError(f"{self.what} is already locked by this process (pid {os.getpid()}, lock file "
                                f"{self.path}) through another lock object; use `acquire_lock` to share it",
                                self.path, Holder.me())
        for _ in range(_ATTEMPTS):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = True
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                continue  # its empty folder was pruned by a releasing process between the two calls
            except FileExistsError:
                created = False
                try:
                    fd = os.open(self.path, os.O_RDWR)
                except FileNotFoundError:
                    continue  # released between the two calls
            kept = owned = False
            try:
                flocked = True
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    owned = True
                except BlockingIOError:
                    raise self._held_by_live_process(fd) from None
                except OSError as err:
                    if err.errno not in _NO_FLOCK:
                        raise
                    flocked = False  # e.g. Lustre mounted without flock: the record alone decides
                    log.warning("%s does not support flock (%s): judging its lock %s by the recorded holder only",
                                self.path.parent, os.strerror(err.errno), self.path.name)
                if not _same_file(fd, self.path):
                    continue  # its holder released (unlinked) it after we opened it
                holder = None if created else _read_holder(fd)
                if holder is None and not created and not flocked:
                    holder = self._wait_for_record(fd)  # a creator may be writing it right now
                if holder is not None:
                    self._judge(holder, force, flocked, time.time() - os.fstat(fd).st_mtime)
                record = json.dumps(asdict(Holder.me())).encode("utf-8")
                os.ftruncate(fd, 0)
                os.pwrite(fd, record, 0)
                os.fsync(fd)
                self._fd, self._owner_pid, kept = fd, os.getpid(), True
                with _held_guard:
                    _held[key] = self
                return self
            finally:
                if not kept:
                    if created and owned and _same_file(fd, self.path):  # created and flocked here, but never
                        try:                                   # kept (its record could not be written): remove it
                            os.unlink(self.path)
                        except OSError:
                            pass
                    os.close(fd)
        raise LockHeldError(f"cannot lock {self.what}: its lock file {self.path} was replaced {_ATTEMPTS} times while "
                            "this process tried to take it (several processes are starting on it at once)",
                            self.path, None)

    def _judge(self, holder: Holder, force: bool, flocked: bool = True, age_s: float = 0.0) -> None:
        """With the flock taken (or none to take: `flocked` false), decide whether the recorded `holder` may be
        taken over (else raise LockHeldError); `age_s`: seconds since the lock file was last written or refreshed."""
        if holder.on_this_host():
            if holder.pid == os.getpid():
                return  # this process's own record, left by a release that could not unlink it
            if not pid_alive(holder.pid):
                log.warning("taking over the lock %s of %s: that process is no longer running", self.path,
                            holder.describe())
                return
            if force:
                log.warning("forced: taking over the lock %s of %s, which runs but does not hold the lock",
                            self.path, holder.describe())
                return
            why = ("though it does not hold the lock (its pid may have been reused by another program)" if flocked
                   else "and this file system cannot tell whether it still holds the lock (no flock)")
            raise LockHeldError(
                f"{self.what} is locked by {holder.describe()} (lock file {self.path}); that process still runs, "
                f"{why}. Stop it, or if it is not working on {self.what}, {self.override}", self.path, holder)
        if force:
            log.warning("forced: taking over the lock %s of %s (another host; it cannot be checked from here)",
                        self.path, holder.describe())
            return
        if self.stale_after_s is not None and age_s > self.stale_after_s:
            log.warning("taking over the lock %s of %s (another host): it was last refreshed %.0f s ago, over the "
                        "%.0f s its holder refreshes it within, so that holder has stopped", self.path,
                        holder.describe(), age_s, self.stale_after_s)
            return
        raise LockHeldError(
            f"{self.what} is locked by {holder.describe()} (lock file {self.path}); that host's processes cannot "
            f"be checked from {socket.gethostname()!r}. If that process has ended, {self.override}",
            self.path, holder)

    def _wait_for_record(self, fd: int) -> Optional[Holder]:
        """The holder record of an existing lock file, waiting briefly while it is empty (being written)."""
        deadline = time.monotonic() + _CONTENT_WAIT_S
        holder = _read_holder(fd)
        while holder is None and time.monotonic() < deadline:
            time.sleep(0.05)
            holder = _read_holder(fd)
        return holder

    def _held_by_live_process(self, fd: int) -> LockHeldError:
        """The error for a flock refused: wait briefly for a just-started holder to write its record."""
        deadline = time.monotonic() + _CONTENT_WAIT_S
        holder = _read_holder(fd)
        while (holder is None or (holder.on_this_host() and not pid_alive(holder.pid))) and time.monotonic() < deadline:
            time.sleep(0.05)
            holder = _read_holder(fd)
        if holder is None:
            who = "another process (it has not written its record yet)"
        elif holder.on_this_host() and not pid_alive(holder.pid):
            who = (f"a process started by {holder.describe()}, which has ended while a process it started (such as a "
                   "data loader worker) still holds the lock")
        else:
            who = holder.describe()
        return LockHeldError(f"{self.what} is in use: locked by {who} (lock file {self.path}); wait for it to "
                             "finish or stop it", self.path, holder)

    def refresh(self) -> None:
        """Set the lock file's modification time to now (a holder's heartbeat, see `stale_after_s`); a no-op when
        this process does not hold the lock."""
        fd = self._fd
        if fd is not None and self._owner_pid == os.getpid():
            os.utime(fd)

    def release(self) -> None:
        """Unlink the lock file and drop the lock; a no-op when this process does not hold it."""
        if not self.held:
            return
        fd, self._fd, self._owner_pid = self._fd, None, None
        assert fd is not None
        with _held_guard:
            if _held.get(str(self.path)) is self:
                del _held[str(self.path)]
        try:
            if _same_file(fd, self.path):
                os.unlink(self.path)
        except OSError as err:
            log.warning("could not remove the lock file %s (%s); the next process will take it over", self.path, err)
        finally:
            os.close(fd)
        for folder in list(self.path.parents)[:self.prune]:
            try:
                folder.rmdir()
            except OSError:  # not empty (other locks), or gone
                break

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lock(path: str | Path, what: str, override: str, force: bool = False, prune: int = 0) -> FileLock:
    """The lock on `path`: the one this process already holds (re-entrant), else a new one acquired with
    `FileLock(path, what, override, prune).acquire(force)` (LockHeldError naming the holder when it cannot be
    taken)."""
    current = held_lock(path)
    return current if current is not None else FileLock(path, what, override, prune).acquire(force)


def held_lock(path: str | Path) -> Optional[FileLock]:
    """The lock this process holds on `path`, if any."""
    with _held_guard:
        lock = _held.get(os.path.abspath(path))
    return lock if lock is not None and lock.held else None


def _release_all() -> None:
    for lock in list(_held.values()):
        try:
            lock.release()
        except Exception as err:  # at exit: report and go on with the others
            log.warning("could not release the lock %s: %s", lock.path, err)


def _forget_in_child() -> None:
    """After a fork: the child holds none of its parent's locks; close the inherited descriptors (never unlock
    them: the flock belongs to the open file the parent still has) and forget them."""
    global _held_guard
    _held_guard = threading.Lock()  # another thread may have held it at the fork
    for lock in list(_held.values()):
        fd = lock._fd
        lock._fd, lock._owner_pid = None, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _held.clear()


atexit.register(_release_all)
os.register_at_fork(after_in_child=_forget_in_child)
