"""`audiointerp data fetch esc50` and `data:esc50`, against a loopback server serving a tiny official archive."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from audiointerp.cli import main
from audiointerp.datasets.readers import load_manifest
from audiointerp.downloads import data_catalog, fetch_data, read_records
from audiointerp.errors import DownloadError

ESC50_PATH = "/karoldvl/ESC-50/archive/master.zip"  # the catalog URL's path, served under the mirror
CLIPS = [("1-100-A-0.wav", 1, 0, "dog"), ("1-101-A-1.wav", 1, 1, "rooster"), ("2-102-A-0.wav", 2, 0, "dog"),
         ("2-103-A-1.wav", 2, 1, "rooster")]


def esc50_zip(drop: int = 0) -> bytes:
    """A zip in the layout of GitHub's ESC-50 archive (ESC-50-master/audio, meta/esc50.csv); `drop` clips of
    the metadata left out of audio/."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        lines = ["filename,fold,target,category,esc10,src_file,take"]
        for i, (name, fold, target, category) in enumerate(CLIPS):
            lines.append(f"{name},{fold},{target},{category},False,{100 + i},A")
            if i < len(CLIPS) - drop:
                wav = io.BytesIO()
                sf.write(wav, np.zeros(441, dtype=np.float32), 44100, format="WAV")
                bundle.writestr(f"ESC-50-master/audio/{name}", wav.getvalue())
        bundle.writestr("ESC-50-master/meta/esc50.csv", "\n".join(lines) + "\n")
        bundle.writestr("ESC-50-master/README.md", "ESC-50")
    return buffer.getvalue()


def test_fetch_unpacks_and_data_source_resolves_by_name(server: Any, caches: dict[str, Path]) -> None:
    route = server.serve(ESC50_PATH, esc50_zip())
    folder = fetch_data("esc50", progress=False)
    assert folder == caches["data"] / "esc50"
    assert (folder / "meta" / "esc50.csv").is_file() and len(list((folder / "audio").glob("*.wav"))) == 4
    assert not (caches["data"] / ".archives" / "ESC-50-master.zip").exists()  # unpacked, then removed
    assert [p.name for p in caches["data"].iterdir() if p.name.startswith(".unpack")] == []
    assert read_records(caches["data"]) == {}  # the archive is gone, and so is its record (a later hand copy is checked anew)
    manifest = load_manifest("data:esc50")
    assert len(manifest.rows) == 4
    assert route.hits == 1  # the folder is there: no second download


def test_cli_fetch_into_a_folder_and_list(server: Any, caches: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    server.serve(ESC50_PATH, esc50_zip())
    assert main(["data", "fetch", "esc50", "--dir", str(tmp_path / "sets"), "--quiet"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == str(tmp_path / "sets" / "esc50") and "data.source" in out.err
    assert main(["data", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert listed["esc50"]["url"] == "https://github.com/karoldvl/ESC-50/archive/master.zip"
    assert listed["esc50"]["file"] == "ESC-50-master.zip" and "urbansound8k" in listed


def test_an_archive_out_of_layout_is_refused(server: Any, caches: dict[str, Path]) -> None:
    server.serve(ESC50_PATH, esc50_zip(drop=1))
    with pytest.raises(DownloadError, match="official layout"):
        fetch_data("esc50", progress=False)
    assert sorted(p.name for p in caches["data"].iterdir()) in ([".archives", ".locks", "hashes.json"],
                                                                [".archives", "hashes.json"])
    assert list((caches["data"] / ".archives").iterdir()) == []


def test_an_html_page_instead_of_the_archive_is_refused(server: Any, caches: dict[str, Path]) -> None:
    server.serve(ESC50_PATH, mode="html")
    with pytest.raises(DownloadError, match="HTML page"):
        fetch_data("esc50", progress=False)
    assert not (caches["data"] / "esc50").exists()


def test_offline_names_the_url_and_where_to_put_it(server: Any, caches: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    route = server.serve(ESC50_PATH, esc50_zip())
    monkeypatch.setenv("AUDIOINTERP_OFFLINE", "1")
    with pytest.raises(DownloadError, match="downloads are off") as caught:
        load_manifest("data:esc50")
    assert server.mirror + ESC50_PATH in str(caught.value) and str(caches["data"] / "esc50") in str(caught.value)
    assert route.hits == 0


def us8k_tar() -> bytes:
    """A tar.gz in UrbanSound8K's layout (UrbanSound8K/audio/foldN, metadata/UrbanSound8K.csv)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))

        lines = ["slice_file_name,fsID,start,end,salience,fold,classID,class"]
        for i, (fold, label, name) in enumerate([(1, 0, "air_conditioner"), (2, 3, "dog_bark")]):
            clip = f"{100 + i}-{label}-0-0.wav"
            lines.append(f"{clip},{100 + i},0.0,0.01,1,{fold},{label},{name}")
            wav = io.BytesIO()
            sf.write(wav, np.zeros(441, dtype=np.float32), 44100, format="WAV")
            add(f"UrbanSound8K/audio/fold{fold}/{clip}", wav.getvalue())
        add("UrbanSound8K/metadata/UrbanSound8K.csv", ("\n".join(lines) + "\n").encode())
    return buffer.getvalue()


def test_urbansound8k_is_checked_by_its_md5_and_unpacked(server: Any, caches: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    body = us8k_tar()
    server.serve("/record/1203745/files/UrbanSound8K.tar.gz", body)
    with pytest.raises(DownloadError, match="md5"):  # the catalog's md5 is the real archive's
        fetch_data("urbansound8k", progress=False)
    entry = data_catalog.CATALOG["urbansound8k"]
    monkeypatch.setitem(data_catalog.CATALOG, "urbansound8k", replace(entry, md5=hashlib.md5(body).hexdigest()))
    folder = fetch_data("urbansound8k", progress=False)
    assert (folder / "metadata" / "UrbanSound8K.csv").is_file()
    assert len(load_manifest("data:urbansound8k").rows) == 2


def test_a_corrupt_archive_is_one_error_and_not_kept(caches: dict[str, Path], server: Any) -> None:
    """A zip cut short (it no longer reads as a zip, so tarfile tried it) was kept with its record: every retry
    failed the same way, with a traceback. Now: one DownloadError line, archive and record removed."""
    entry = data_catalog.CATALOG["esc50"]
    server.serve(ESC50_PATH, b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(DownloadError, match="corrupt") as caught:
        fetch_data("esc50")
    assert "\n" not in str(caught.value)
    assert not (caches["data"] / ".archives" / entry.file).exists()
    assert read_records(caches["data"]) == {}
