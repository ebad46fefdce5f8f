"""Data sets by name: `fetch_data("esc50")` downloads the official archive, unpacks it atomically, checks its
layout and returns the folder to pass as `data.source`; `data:NAME` in a data source resolves through it.

The archive goes through `fetching.download` (cache, progress, mirror, offline and lock rules of the weights) into
`<root>/.archives/`, where `<root>` is `$AUDIOINTERP_DATA` (default `~/.cache/audiointerp/data`) or a given folder;
it is unpacked into a temporary folder beside the result, its layout checked (every clip its metadata lists is
there), and the archive's top folder renamed onto `<root>/<name>` in one step; the archive is then removed (its
hash stays recorded). A folder that is already there is checked and returned. Another process fetching the same
set waits for the first.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from audiointerp.downloads.fetching import LOCKS, data_cache, download, mirrored, offline, offline_reason, waiting_lock, write_record
from audiointerp.errors import ConfigError, DownloadError, closest, writing

DATA_PREFIX = "data:"
ARCHIVES = ".archives"


def _rows(meta: Path) -> list[dict[str, str]]:
    with open(meta, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def check_esc50(root: Path) -> int:
    """The clip count of an ESC-50 folder (`meta/esc50.csv`, `audio/*.wav`); `DownloadError` when the metadata is
    missing or empty, or names a clip that is not in `audio/`."""
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DownloadError(f"{root} is not an ESC-50 folder: {meta.relative_to(root)} is missing")
    rows = _rows(meta)
    missing = [r.get("filename", "") for r in rows if not (root / "audio" / r.get("filename", "")).is_file()]
    if not rows or missing:
        raise DownloadError(f"ESC-50 folder {root}: {len(missing)} of the {len(rows)} clips of meta/esc50.csv are not "
                            f"in audio/ (e.g. {missing[:3]})" if rows else f"ESC-50 folder {root}: {meta} has no rows")
    return len(rows)


def check_urbansound8k(root: Path) -> int:
    """The clip count of an UrbanSound8K folder (`metadata/UrbanSound8K.csv`, `audio/foldN/*.wav`); `DownloadError`
    when the metadata is missing or empty, or names a clip that is not in its fold's folder."""
    meta = root / "metadata" / "UrbanSound8K.csv"
    if not meta.is_file():
        raise DownloadError(f"{root} is not an UrbanSound8K folder: {meta.relative_to(root)} is missing")
    rows = _rows(meta)
    missing = [r.get("slice_file_name", "") for r in rows
               if not (root / "audio" / f"fold{r.get('fold', '')}" / r.get("slice_file_name", "")).is_file()]
    if not rows or missing:
        raise DownloadError(f"UrbanSound8K folder {root}: {len(missing)} of the {len(rows)} clips of its metadata are "
                            f"missing (e.g. {missing[:3]})" if rows else f"UrbanSound8K folder {root}: {meta} has no rows")
    return len(rows)


@dataclass(frozen=True)
class DataEntry:
    """One fetchable data set: its archive's URL and file name, the folder the archive holds, the `load_manifest`
    format, the layout check, licence and paper. `stable_hash` false: the host regenerates the archive (GitHub's
    zips), so a new download is not held to an earlier one's sha256."""

    name: str
    url: str
    file: str
    format: str
    check: Callable[[Path], int]
    licence: str
    paper: str
    md5: Optional[str] = None
    stable_hash: bool = True
    notes: str = ""

    def to_json(self) -> dict[str, Any]:
        """The `data list --json` object: name, url, file, and the rest."""
        return {"name": self.name, "url": self.url, "file": self.file, "format": self.format, "licence": self.licence,
                "paper": self.paper, "md5": self.md5, "notes": self.notes}


CATALOG: dict[str, DataEntry] = {e.name: e for e in [
    DataEntry("esc50", "https://github.com/karoldvl/ESC-50/archive/master.zip", "ESC-50-master.zip", "esc50",
              check_esc50, "CC BY-NC 3.0 (the ESC-10 subset CC BY); per-clip attributions in its LICENSE",
              "Piczak, \"ESC: Dataset for Environmental Sound Classification\", ACM MM 2015, doi:10.1145/2733373.2806390",
              stable_hash=False,
              notes="GitHub's archive of karoldvl (now karolpiczak)/ESC-50, ~600 MB; no published checksum"),
    DataEntry("urbansound8k", "https://zenodo.org/record/1203745/files/UrbanSound8K.tar.gz?download=1",
              "UrbanSound8K.tar.gz", "urbansound8k", check_urbansound8k,
              "CC BY-NC (non-commercial use only; 3.0 on the dataset's site, 4.0 on Zenodo)",
              "Salamon, Jacoby, Bello, \"A Dataset and Taxonomy for Urban Sound Research\", ACM MM 2014, "
              "doi:10.1145/2647868.2655045", md5="9aa69802bbf37fb986f71ec1483a196e",
              notes="Zenodo record 1203745, ~6 GB; for non-commercial use only"),
]}


def available_data() -> list[str]:
    """The fetchable data sets' names, sorted."""
    return sorted(CATALOG)


def data_entry(name: str) -> DataEntry:
    """The catalog entry `name`; a `ConfigError` naming the closest one for an unknown name."""
    key = name.lower().replace("-", "").replace("_", "")
    found = next((e for e in CATALOG.values() if e.name.replace("-", "").replace("_", "") == key), None)
    if found is None:
        raise ConfigError(f"unknown data set {name!r}{closest(name, CATALOG)}; fetchable: {', '.join(available_data())}")
    return found


def data_name(source: str | os.PathLike[str]) -> Optional[str]:
    """The catalog name of a `data:NAME` source, or None for anything else (a plain path)."""
    text = os.fspath(source)
    return text[len(DATA_PREFIX):].strip() if isinstance(text, str) and text.startswith(DATA_PREFIX) else None


def _unpack(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive into `into`; a corrupt one is a `DownloadError`."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(into)  # zipfile drops absolute paths and '..'
            return
        with tarfile.open(archive) as bundle:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                bundle.extractall(into, filter="data")  # no links out of the folder, no absolute paths
            else:
                bundle.extractall(into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DownloadError(f"cannot unpack {archive.name} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): "
                            "the archive is corrupt; it was removed, fetch again") from err


def fetch_data(name: str, folder: Optional[str | os.PathLike[str]] = None, progress: bool = True) -> Path:
    """The folder of the data set `name` (pass it as `data.source`), downloaded and unpacked on first use into
    `folder` (default: `data_cache()`), as the module docstring says. `DownloadError` when the download, the
    archive or its layout fails (nothing is left but the partial archive's absence), or when downloads are off
    and the set is not there."""
    entry = data_entry(name)
    root = Path(folder).expanduser() if folder is not None else data_cache()
    dest = root / entry.name
    if dest.is_dir():
        entry.check(dest)
        return dest
    if offline() and not (root / ARCHIVES / entry.file).is_file():
        raise DownloadError(f"data set {entry.name!r} is not in {root} and downloads are off ({offline_reason()}): "
                            f"download {mirrored(entry.url)} yourself and put it at {root / ARCHIVES / entry.file} "
                            f"(or its unpacked folder at {dest})")
    with writing("data folder", root):
        root.mkdir(parents=True, exist_ok=True)
    with waiting_lock(root / LOCKS / f"{entry.name}.lock", f"the data set {dest}"):
        if dest.is_dir():
            entry.check(dest)
            return dest
        archive = download(entry.url, root / ARCHIVES / entry.file, cache=root, what=f"data set {entry.name!r}",
                           md5=entry.md5, trust_record=entry.stable_hash, progress=progress)
        for stale in root.glob(f".unpack-*-{entry.name}"):  # left by a killed fetch (the lock is ours now)
            shutil.rmtree(stale, ignore_errors=True)
        temporary = root / f".unpack-{os.getpid()}-{entry.name}"
        try:
            with writing("data folder", temporary):
                temporary.mkdir(parents=True)
                try:
                    _unpack(archive, temporary)
                except DownloadError:
                    archive.unlink(missing_ok=True)  # never kept to fail again: the next fetch downloads anew
                    write_record(root, f"{ARCHIVES}/{entry.file}", None)
                    raise
            inside = [p for p in temporary.iterdir() if not p.name.startswith(".")]
            top = inside[0] if len(inside) == 1 and inside[0].is_dir() else temporary
            try:
                entry.check(top)
            except DownloadError as err:
                archive.unlink(missing_ok=True)  # a wrong archive is not kept to be unpacked again
                write_record(root, f"{ARCHIVES}/{entry.file}", None)
                raise DownloadError(f"data set {entry.name!r}: the archive from {entry.url} is not in the official "
                                    f"layout ({err}); nothing was kept") from err
            with writing("data folder", dest):
                os.replace(top, dest)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        archive.unlink(missing_ok=True)
        write_record(root, f"{ARCHIVES}/{entry.file}", None)  # the archive is gone: its record must not outlive it
    return dest


def resolve_data(source: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """A `data:NAME` source as the local folder of that data set (fetched on first use unless downloads are off);
    any other source unchanged."""
    name = data_name(source)
    return source if name is None else fetch_data(name)
