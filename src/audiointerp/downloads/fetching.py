"""Files by URL into a local cache: one download at a time, checked, atomic, recorded.

`download(url, dest, ...)` is the one way a file enters a cache (`weights_cache()`, `data_cache()`):

- an existing `dest` is checked against the cache's `hashes.json` record (size, and sha256 unless the file's size
  and modification time are the recorded ones) and returned; one without a record (put there by hand) is
  validated and recorded first;
- with downloads off (`offline()`: `AUDIOINTERP_OFFLINE=1` or `HF_HUB_OFFLINE=1`) a missing file is a
  `DownloadError` naming the URL and the exact path to put it at;
- otherwise the file is downloaded behind a lock (`<cache>/.locks/<file>.lock`; other processes wait for it and
  then use the file it left; its holder refreshes it every `LOCK_HEARTBEAT_S`, so on a cache shared by several
  nodes the lock of a node that died is taken over after `LOCK_STALE_S` rather than waited on for hours)
  through pooch's HTTP downloader (requests, a timeout, a progress bar) into a
  temporary file beside `dest`. A cut connection is retried (`ATTEMPTS` tries, a fresh temporary file each);
  a refused request (4xx, 5xx) is not. The temporary file is refused when it is an HTML page, shorter than the
  server's Content-Length or the expected size, of another md5 or sha256 than expected (a pinned or published
  hash, or the one recorded by an earlier download: trust on first use), or when `validate` raises (the caller's
  check that it loads into its model). A refused file is removed; an accepted one is renamed onto `dest`
  atomically and its sha256, size, URL and time recorded in `hashes.json` (written atomically, under its own lock).

`AUDIOINTERP_MIRROR=http://host:port/prefix` replaces the scheme and host of every URL (`mirrored`; the path and
query stay), for clusters with a local mirror. Imports only `audiointerp.errors` and `audiointerp.locks`.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

from audiointerp.errors import DownloadError, writing
from audiointerp.locks import FileLock, LockHeldError

log = logging.getLogger("audiointerp")

WEIGHTS_ENV = "AUDIOINTERP_WEIGHTS"  # the weights cache (default ~/.cache/audiointerp/weights)
DATA_ENV = "AUDIOINTERP_DATA"  # the data-set cache (default ~/.cache/audiointerp/data)
MIRROR_ENV = "AUDIOINTERP_MIRROR"  # http://host:port/prefix replacing every catalog URL's scheme and host
OFFLINE_ENVS = ("AUDIOINTERP_OFFLINE", "HF_HUB_OFFLINE")  # either one true: no download at all
HASHES = "hashes.json"  # a cache's record: {file: {sha256, size, url, fetched, mtime_ns}}
LOCKS = ".locks"  # a cache's lock folder
TIMEOUT_S = 60.0  # seconds without an answer (connecting or between two reads) before a try fails
ATTEMPTS = 3  # tries of a download whose connection is cut or times out
RETRY_PAUSE_S = 1.0  # first pause between tries (doubled each time)
LOCK_WAIT_S = 6 * 3600.0  # how long a process waits for another one's download of the same file
LOCK_HEARTBEAT_S = 30.0  # a download's lock file is refreshed this often while the download runs
LOCK_STALE_S = 600.0  # a lock of another node not refreshed for this long: its holder died, the lock is taken over
_TRUE = {"1", "true", "yes", "on"}



RETRIED_STATUS = (429, 500, 502, 503, 504)  # answers worth another try; a 4xx else is final


def first_line(err: BaseException, limit: int = 400) -> str:
    """An error's message on one line, at most `limit` characters (library errors, torch's load errors above all,
    run to paragraphs): the project's errors stay one line."""
    text = " ".join(part.strip() for part in str(err).splitlines() if part.strip())
    if not text:
        return type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."

def _folder(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default).expanduser()


def weights_cache() -> Path:
    """The weights cache: `$AUDIOINTERP_WEIGHTS`, or `~/.cache/audiointerp/weights` (not created here)."""
    return _folder(WEIGHTS_ENV, "~/.cache/audiointerp/weights")


def data_cache() -> Path:
    """The data-set cache: `$AUDIOINTERP_DATA`, or `~/.cache/audiointerp/data` (not created here)."""
    return _folder(DATA_ENV, "~/.cache/audiointerp/data")


def offline() -> bool:
    """Whether downloads are off: `AUDIOINTERP_OFFLINE` or `HF_HUB_OFFLINE` set to 1/true/yes/on."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_ENVS)


def offline_reason() -> str:
    """Which variable turned downloads off, for messages (e.g. 'AUDIOINTERP_OFFLINE=1')."""
    names = [f"{n}={os.environ[n]}" for n in OFFLINE_ENVS if os.environ.get(n, "").strip().lower() in _TRUE]
    return " and ".join(names) or "offline mode"


def mirrored(url: str) -> str:
    """`url` with its scheme and host replaced by `$AUDIOINTERP_MIRROR`'s (whose path is put before the URL's
    own path; query and fragment kept); `url` itself when the variable is unset or empty."""
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return url
    mirror, parts = urlsplit(base), urlsplit(url)
    if not mirror.scheme or not mirror.netloc:
        raise DownloadError(f"{MIRROR_ENV}={base!r} is not a URL like http://host:port/prefix")
    return urlunsplit((mirror.scheme, mirror.netloc, mirror.path.rstrip("/") + parts.path, parts.query, parts.fragment))


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (`sha256` or `md5`), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def looks_like_html(path: Path) -> bool:
    """Whether the file starts (after blanks and a byte-order mark) with `<!DOCTYPE html` or `<html`: an error
    or landing page saved in place of the file."""
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


# --- the cache's record --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What `hashes.json` holds for one cached file."""

    sha256: str
    size: int
    url: str
    fetched: str  # UTC, ISO 8601
    mtime_ns: int = 0  # the file's modification time when last hashed (a match skips re-hashing on use)
    pinned: bool = False  # the sha256 was given (catalog or --sha256), not trusted on first use

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "url": self.url, "fetched": self.fetched,
                "mtime_ns": self.mtime_ns, "pinned": self.pinned}


def read_records(cache: Path) -> dict[str, Record]:
    """The records of `cache/hashes.json` by file name (relative to the cache); {} when there is none. A record
    file that cannot be parsed is a `DownloadError` naming it (it is never silently replaced)."""
    path = cache / HASHES
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): Record(sha256=str(v["sha256"]), size=int(v["size"]), url=str(v.get("url", "")),
                               fetched=str(v.get("fetched", "")), mtime_ns=int(v.get("mtime_ns", 0)),
                               pinned=bool(v.get("pinned", False))) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DownloadError(f"cannot read the cache's record {path} ({err}): repair or remove it") from err


def write_record(cache: Path, key: str, record: Optional[Record]) -> None:
    """Set (or with None, remove) one file's record in `cache/hashes.json`, atomically (temporary file, fsync,
    rename) under the record's lock, so concurrent downloads of different files keep each other's records."""
    path = cache / HASHES
    with waiting_lock(cache / LOCKS / (HASHES + ".lock"), f"the record {path}"), writing("download record", path):
        records = read_records(cache)
        if record is None:
            if records.pop(key, None) is None:
                return
        else:
            records[key] = record
        temporary = path.with_name(f".{HASHES}.{os.getpid()}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({k: v.to_json() for k, v in sorted(records.items())}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


def now_utc() -> str:
    """The time now, UTC, ISO 8601 (records' `fetched`)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --- locks ---------------------------------------------------------------------------------------------------


@contextmanager
def waiting_lock(path: Path, what: str, wait_s: float = LOCK_WAIT_S) -> Iterator[FileLock]:
    """Hold the `FileLock` at `path`, waiting (polling every 0.2 s) while another process, or another thread of
    this one, holds it; a `DownloadError` naming the holder after `wait_s` seconds. While held, a background
    thread refreshes the lock file every `LOCK_HEARTBEAT_S`; a lock of another host left unrefreshed for
    `LOCK_STALE_S` (its node died mid-download) is taken over."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            lock = FileLock(path, what, override=f"remove {path} once no download of it runs", prune=1,
                            stale_after_s=LOCK_STALE_S).acquire()
            break
        except LockHeldError as err:
            if time.monotonic() > deadline:
                raise DownloadError(f"gave up waiting {wait_s:.0f} s for {what}: {err}") from err
            if not told:
                log.info("waiting for %s: %s", what, err)
                told = True
            time.sleep(0.2)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(LOCK_HEARTBEAT_S):
            try:
                lock.refresh()
            except OSError as err:  # e.g. the cache went read-only: the download itself will say so
                log.debug("could not refresh the lock %s: %s", path, err)

    beating = threading.Thread(target=heartbeat, name=f"lock heartbeat {path.name}", daemon=True)
    beating.start()
    try:
        yield lock
    finally:
        stop.set()
        beating.join()
        lock.release()


# --- one file ------------------------------------------------------------------------------------------------


def check_cached(path: Path, cache: Path, key: str, sha256: Optional[str] = None, full: bool = False,
                 url: str = "") -> Record:
    """Check a cached file against its record (and a pinned `sha256`): size always; sha256 when `full`, when a
    hash is pinned, or when the file's size or modification time differ from the recorded ones. A file without
    a record is hashed and recorded now (trust on first use). Returns the record; `DownloadError` on a mismatch
    (the file is left in place, and the message says how to replace it)."""
    records = read_records(cache)
    record = records.get(key)
    stat = path.stat()
    pinned = sha256.lower() if sha256 else None
    if record is None:
        digest = file_hash(path)
        if pinned and digest != pinned:
            raise DownloadError(f"cached file {path} has sha256 {digest}, not the pinned {pinned}: remove it and "
                                "fetch again, or pin its hash")
        record = Record(digest, stat.st_size, url, now_utc(), stat.st_mtime_ns, pinned=bool(pinned))
        _record_if_possible(cache, key, record)
        return record
    if stat.st_size != record.size:
        raise DownloadError(f"cached file {path} has {stat.st_size} bytes but {record.size} were recorded in "
                            f"{cache / HASHES} (truncated or replaced): remove it and fetch again")
    if pinned and record.sha256 != pinned:
        raise DownloadError(f"cached file {path} was recorded with sha256 {record.sha256}, not the pinned {pinned}: "
                            "remove it (and its record) and fetch again")
    if full or pinned or stat.st_mtime_ns != record.mtime_ns:
        digest = file_hash(path)
        if digest != record.sha256:
            raise DownloadError(f"cached file {path} has sha256 {digest} but {record.sha256} was recorded in "
                                f"{cache / HASHES} (modified or corrupt): remove it and fetch again")
        if stat.st_mtime_ns != record.mtime_ns:
            record = Record(record.sha256, record.size, record.url, record.fetched, stat.st_mtime_ns, record.pinned)
            _record_if_possible(cache, key, record)
    return record


def _record_if_possible(cache: Path, key: str, record: Record) -> None:
    """Record a verified file; on a cache that cannot be written (a read-only shared weights folder) the file is
    still used, and the record is left for a writable use (a warning says so)."""
    try:
        write_record(cache, key, record)
    except (OSError, DownloadError) as err:
        log.warning("could not record %s in %s (%s): the file is used, its hash is checked again next time",
                    key, cache / HASHES, first_line(err))


def missing_offline(what: str, url: str, dest: Path) -> DownloadError:
    """The error for a file that is not in the cache while downloads are off."""
    return DownloadError(f"{what} is not in the cache and downloads are off ({offline_reason()}): download "
                         f"{url} yourself and put it at {dest}")


def download(url: str, dest: Path, *, cache: Optional[Path] = None, what: Optional[str] = None,
             sha256: Optional[str] = None, md5: Optional[str] = None, size: Optional[int] = None,
             validate: Optional[Callable[[Path], None]] = None, trust_record: bool = True,
             progress: bool = True, timeout: float = TIMEOUT_S, attempts: int = ATTEMPTS) -> Path:
    """`dest`, downloaded from `url` (through `mirrored`) if it is not there yet; see the module docstring.

    `cache` is the folder whose `hashes.json` records `dest` (default: `dest`'s folder); `what` names the file in
    messages. `sha256` / `md5` / `size` are expected values (published or pinned); `trust_record` false ignores
    an earlier record's hash for a new download (archives that the host regenerates, e.g. GitHub's zips).
    `validate(temporary_path)` raises when the file does not load (it keeps `dest`'s suffix). Returns `dest`.
    """
    cache = cache if cache is not None else dest.parent
    key = dest.relative_to(cache).as_posix()
    what = what or f"file {dest.name}"
    if dest.is_file():
        if key not in read_records(cache):  # put there by hand: checked once as a download is (HTML page, the
            try:                            # catalog's size and md5, a pinned sha256, loading), then recorded
                _accept(dest, str(dest), dest, what, sha256, md5, size, validate, None, cache)
            except DownloadError as err:  # the file is the user's: named with the cause, not removed
                raise DownloadError(f"{err} (this file was put there by hand; it is left in place)") from err
        check_cached(dest, cache, key, sha256, url=url)
        return dest
    source = mirrored(url)
    if offline():
        raise missing_offline(what, source, dest)
    with writing("download cache", dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
    with waiting_lock(cache / LOCKS / (key.replace("/", "__") + ".lock"), f"the download of {dest}"):
        if dest.is_file():  # another process downloaded it while this one waited
            check_cached(dest, cache, key, sha256, url=url)
            return dest
        previous = read_records(cache).get(key) if trust_record else None
        for stale in dest.parent.glob(f".part-*-{glob.escape(dest.name)}"):  # left by a killed download (the lock is ours now)
            stale.unlink(missing_ok=True)
        temporary = dest.with_name(f".part-{os.getpid()}-{dest.name}")
        _fetch(source, temporary, what, progress, timeout, attempts)
        try:
            digest = _accept(temporary, source, dest, what, sha256, md5, size, validate, previous, cache)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        with writing("download cache", dest):
            os.replace(temporary, dest)
        stat = dest.stat()
        write_record(cache, key, Record(digest, stat.st_size, url, now_utc(), stat.st_mtime_ns, pinned=bool(sha256)))
        log.info("downloaded %s to %s", source, dest)
    return dest


def _accept(temporary: Path, source: str, dest: Path, what: str, sha256: Optional[str], md5: Optional[str],
            size: Optional[int], validate: Optional[Callable[[Path], None]], previous: Optional[Record],
            cache: Path) -> str:
    """Check a downloaded temporary file (HTML page, size, md5, sha256, `validate`); its sha256, or a
    `DownloadError` naming the cause (the caller removes the file)."""
    got = temporary.stat().st_size
    if looks_like_html(temporary):
        raise DownloadError(f"{what}: {source} answered with an HTML page, not the file (a login, error or landing "
                            f"page); nothing was cached at {dest}")
    wanted = size if size is not None else (previous.size if previous and not sha256 else None)  # a new pin wins
    if wanted is not None and got != wanted:
        raise DownloadError(f"{what}: {source} gave {got} bytes, expected {wanted} (truncated or another file); "
                            f"nothing was cached at {dest}")
    if md5:
        found = file_hash(temporary, "md5")
        if found != md5.lower():
            raise DownloadError(f"{what}: {source} gave a file of md5 {found}, expected {md5.lower()}; nothing was "
                                f"cached at {dest}")
    digest = file_hash(temporary)
    expected = (sha256 or (previous.sha256 if previous else None) or "").lower() or None
    if expected and digest != expected:
        origin = "pinned" if sha256 else f"recorded in {cache / HASHES} by the first download"
        raise DownloadError(f"{what}: {source} gave a file of sha256 {digest}, expected {expected} ({origin}); "
                            f"nothing was cached at {dest}")
    if validate is not None:
        try:
            validate(temporary)
        except Exception as err:  # noqa: BLE001 (any failure to load refuses the file; the cause is named)
            raise DownloadError(f"{what}: the file from {source} does not load: {first_line(err)}") from err
    return digest


def _fetch(url: str, temporary: Path, what: str, progress: bool, timeout: float, attempts: int) -> None:
    """Download `url` to `temporary` with pooch's HTTP downloader; retry a cut or timed-out connection, never a
    refused request; check the length against the server's Content-Length. `DownloadError` when it fails."""
    import pooch
    import requests
    from tqdm import tqdm

    pause = RETRY_PAUSE_S
    for attempt in range(1, attempts + 1):
        # total=1, not 0: pooch fills in the bar (and its Content-Length) only when the bar is truthy, and a tqdm
        # is falsy while its total is 0
        bar = tqdm(total=1, unit="B", unit_scale=True, desc=temporary.name.split("-", 2)[-1], disable=not progress,
                   leave=False)
        try:
            with writing("download", temporary):
                # identity encoding: the bytes written are the bytes announced by Content-Length
                pooch.HTTPDownloader(progressbar=bar, timeout=timeout, headers={"Accept-Encoding": "identity"})(
                    url, str(temporary), None)
            declared = int(bar.total or 0)
            if declared and temporary.stat().st_size != declared:
                raise requests.exceptions.ChunkedEncodingError(
                    f"got {temporary.stat().st_size} of the {declared} bytes announced")
            return
        except requests.exceptions.HTTPError as err:
            temporary.unlink(missing_ok=True)
            status = err.response.status_code if err.response is not None else "?"
            if status in RETRIED_STATUS and attempt < attempts:  # a busy or failing server: try again later
                log.warning("%s: %s answered HTTP %s; retrying in %.0f s", what, url, status, pause)
                time.sleep(pause)
                pause *= 2
                continue
            raise DownloadError(f"{what}: {url} answered HTTP {status}; nothing was downloaded") from err
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as err:
            temporary.unlink(missing_ok=True)
            if attempt == attempts:
                raise DownloadError(f"{what}: downloading {url} failed {attempts} times (last: {first_line(err)}); nothing was "
                                    "cached") from err
            log.warning("download of %s cut (%s); trying again (%d of %d)", url, err, attempt + 1, attempts)
            time.sleep(pause)
            pause *= 2
        except requests.exceptions.RequestException as err:
            temporary.unlink(missing_ok=True)
            raise DownloadError(f"{what}: cannot download {url}: {first_line(err)}") from err
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        finally:
            bar.close()
