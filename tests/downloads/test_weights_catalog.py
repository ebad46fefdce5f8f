"""`weights:NAME`: the catalog, the cache, and every way a download fails, against a loopback server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save

from audiointerp.cli import main
from audiointerp.downloads import CATALOG, WeightsEntry, fetch_weights, fetching, mirrored, read_records, weights_cache
from audiointerp.downloads import weights_catalog as catalog_module
from audiointerp.errors import ConfigError, DownloadError
from audiointerp.models.registry import build, fetch_checked, load_weights, resolve_weights_params, sha256

WIDTHS = [4, 8, 8, 16]
URL_PATH = "/releases/download/v1/tiny.safetensors"


def leftovers(folder: Path) -> list[Path]:
    """Temporary download files left anywhere under `folder`."""
    return [p for p in folder.rglob("*") if p.name.startswith((".part-", ".hashes.json."))] if folder.exists() else []


def tiny_weights(seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    return save(build("small_cnn", num_classes=3, widths=WIDTHS).state_dict())


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch, caches: dict[str, Path]) -> WeightsEntry:
    """A test-only catalog entry: small_cnn weights at a github-like URL (mirrored to the loopback server)."""
    entry = WeightsEntry("tiny", "small_cnn", "tiny.safetensors", 3, "test", "test",
                         url="https://github.com/example/tiny" + URL_PATH, params={"widths": WIDTHS})
    monkeypatch.setitem(CATALOG, "tiny", entry)
    return entry


def test_the_catalog_entries_are_complete() -> None:
    for entry in CATALOG.values():
        assert entry.licence and entry.paper, entry.name
        assert (entry.url is not None) + (entry.hub_repo is not None) + (entry.manual is not None) == 1, entry.name
        if entry.url:
            assert entry.url.startswith("https://") and entry.file and entry.url.endswith(entry.file), entry.name
    assert CATALOG["mn10_as"].url == ("https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/"
                                      "mn10_as_mAP_471.pt")
    assert CATALOG["dymn20_as"].file == "dymn20_as_mAP_493.pt"
    assert CATALOG["beats_iter3_plus_as2m"].source == "manual"
    assert CATALOG["clap-htsat-unfused"].hub_repo == "laion/clap-htsat-unfused"


def test_mirror_replaces_scheme_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOINTERP_MIRROR", "http://127.0.0.1:8080/pre/")
    assert mirrored("https://github.com/a/b/c.pt?download=1") == "http://127.0.0.1:8080/pre/a/b/c.pt?download=1"
    monkeypatch.delenv("AUDIOINTERP_MIRROR")
    assert mirrored("https://github.com/a/b/c.pt") == "https://github.com/a/b/c.pt"


def test_a_download_is_recorded_and_used_by_name(server: Any, tiny: WeightsEntry) -> None:
    body = tiny_weights()
    route = server.serve("/example/tiny" + URL_PATH, body)
    path = fetch_checked("tiny", progress=False)
    assert path == weights_cache() / "tiny" / "tiny.safetensors" and path.read_bytes() == body
    record = read_records(weights_cache())["tiny/tiny.safetensors"]
    assert record.sha256 == hashlib.sha256(body).hexdigest() and record.size == len(body)
    assert record.url == tiny.url
    network = build("small_cnn", checkpoint="weights:tiny", widths=WIDTHS)  # no second download
    assert network.head.out_features == 3
    load_weights(build("small_cnn", num_classes=3, widths=WIDTHS), "weights:tiny")  # task starts (initialise)
    assert sha256(Path("weights:tiny")) == record.sha256  # what `extract --checkpoint weights:tiny` records
    assert route.hits == 1 and not leftovers(weights_cache())


def test_a_cut_download_is_retried_cleanly(server: Any, tiny: WeightsEntry) -> None:
    route = server.serve("/example/tiny" + URL_PATH, tiny_weights(), mode="cut_once")
    assert fetch_checked("tiny", progress=False).is_file()
    assert route.hits == 2 and not leftovers(weights_cache())


def test_a_download_cut_every_time_fails_and_leaves_nothing(server: Any, tiny: WeightsEntry) -> None:
    route = server.serve("/example/tiny" + URL_PATH, tiny_weights(), mode="cut")
    with pytest.raises(DownloadError, match="failed 3 times"):
        fetch_checked("tiny", progress=False)
    assert route.hits == 3
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists() and not leftovers(weights_cache())


def test_404_is_refused(server: Any, tiny: WeightsEntry) -> None:
    server.serve("/example/tiny" + URL_PATH, mode="404")
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        fetch_checked("tiny", progress=False)
    assert server.mirror in str(caught.value)
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists() and not leftovers(weights_cache())


def test_an_html_page_is_refused(server: Any, tiny: WeightsEntry) -> None:
    server.serve("/example/tiny" + URL_PATH, mode="html")
    with pytest.raises(DownloadError, match="HTML page"):
        fetch_checked("tiny", progress=False)
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists() and not leftovers(weights_cache())


def test_a_truncated_file_is_refused(server: Any, tiny: WeightsEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    body = tiny_weights()
    monkeypatch.setitem(CATALOG, "tiny", WeightsEntry(**{**tiny.__dict__, "size": len(body)}))
    server.serve("/example/tiny" + URL_PATH, body[:-100])  # a consistent Content-Length, but short
    with pytest.raises(DownloadError, match=f"expected {len(body)}"):
        fetch_checked("tiny", progress=False)
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists() and not leftovers(weights_cache())


def test_a_file_of_the_wrong_layout_is_refused(server: Any, tiny: WeightsEntry) -> None:
    torch.manual_seed(0)
    state = build("small_cnn", num_classes=3, widths=WIDTHS).state_dict()
    state["extra.weight"] = state.pop(next(k for k in state if not k.startswith("head")))
    server.serve("/example/tiny" + URL_PATH, save(state))
    with pytest.raises(DownloadError, match="does not load") as caught:
        fetch_checked("tiny", progress=False)
    assert "extra.weight" in str(caught.value)
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists() and not leftovers(weights_cache())


def test_a_file_whose_head_is_not_the_catalogs_class_count_is_refused(server: Any, tiny: WeightsEntry) -> None:
    """The catalog says 3 classes: a file of the same network with a 5-class head (another release, or a
    fine-tuned file put at its URL) loads into the zoo model, but is refused, naming the count."""
    torch.manual_seed(0)
    server.serve("/example/tiny" + URL_PATH, save(build("small_cnn", num_classes=5, widths=WIDTHS).state_dict()))
    with pytest.raises(DownloadError, match="head is not the catalog's 3 classes.*head"):
        fetch_checked("tiny", progress=False)
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists() and not leftovers(weights_cache())


def test_sha256_pins_and_records(server: Any, tiny: WeightsEntry) -> None:
    body = tiny_weights()
    server.serve("/example/tiny" + URL_PATH, body)
    with pytest.raises(DownloadError, match="expected 00"):
        fetch_checked("tiny", sha256="00" * 32, progress=False)
    assert not (weights_cache() / "tiny" / "tiny.safetensors").exists()
    path = fetch_checked("tiny", sha256=hashlib.sha256(body).hexdigest(), progress=False)
    assert read_records(weights_cache())["tiny/tiny.safetensors"].pinned
    path.write_bytes(tiny_weights(seed=1))  # same size, other content: tampered
    with pytest.raises(DownloadError, match="sha256"):
        build("small_cnn", checkpoint="weights:tiny", widths=WIDTHS)


def test_a_redownload_must_match_the_first_record(server: Any, tiny: WeightsEntry) -> None:
    server.serve("/example/tiny" + URL_PATH, tiny_weights())
    path = fetch_checked("tiny", progress=False)
    path.unlink()
    server.serve("/example/tiny" + URL_PATH, tiny_weights(seed=1))  # the host now serves another file
    with pytest.raises(DownloadError, match="recorded in"):
        fetch_checked("tiny", progress=False)
    assert not path.exists()


@pytest.mark.parametrize("variable", ["AUDIOINTERP_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_names_the_url_and_the_path(server: Any, tiny: WeightsEntry, monkeypatch: pytest.MonkeyPatch,
                                            variable: str) -> None:
    route = server.serve("/example/tiny" + URL_PATH, tiny_weights())
    monkeypatch.setenv(variable, "1")
    with pytest.raises(DownloadError, match="downloads are off") as caught:
        build("small_cnn", checkpoint="weights:tiny", widths=WIDTHS)
    assert server.mirror + "/example/tiny" + URL_PATH in str(caught.value)
    assert str(weights_cache() / "tiny" / "tiny.safetensors") in str(caught.value)
    assert route.hits == 0


def test_manual_entries_say_where_to_put_the_file(caches: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "beats_iter3"]) == 1
    err = capsys.readouterr().err
    assert "BEATs_iter3.pt" in err and str(caches["weights"] / "beats_iter3" / "BEATs_iter3.pt") in err
    with pytest.raises(DownloadError, match="no direct download"):
        fetch_weights("beats_iter3")


def test_several_processes_download_once(server: Any, tiny: WeightsEntry, caches: dict[str, Path]) -> None:
    route = server.serve("/example/tiny" + URL_PATH, tiny_weights(), mode="slow")
    script = textwrap.dedent(f"""
        from audiointerp.downloads import CATALOG, WeightsEntry, fetch_weights
        CATALOG["tiny"] = WeightsEntry("tiny", "small_cnn", "tiny.safetensors", 3, "test", "test", url={tiny.url!r})
        print(fetch_weights("tiny", progress=False))
    """)
    env = {**os.environ}
    runs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert {out.strip() for out, _ in outputs} == {str(caches["weights"] / "tiny" / "tiny.safetensors")}
    assert route.hits == 1 and not leftovers(weights_cache())


def test_a_download_lock_left_by_a_dead_node_is_taken_over_not_waited_on(server: Any, tiny: WeightsEntry,
                                                                         caches: dict[str, Path]) -> None:
    """A cache shared by several nodes: a node died mid-download, leaving its lock (recorded on its host, not
    refreshed since) and a partial file. The next download takes the lock over at once, removes the partial file
    and downloads; a lock refreshed recently is waited on instead."""
    route = server.serve("/example/tiny" + URL_PATH, tiny_weights())
    lock = caches["weights"] / fetching.LOCKS / "tiny__tiny.safetensors.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": "node-that-died", "pid": 7, "started": "2026-01-01T00:00:00Z", "command": "x"}))
    partial = caches["weights"] / "tiny" / ".part-7-tiny.safetensors"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a file")
    with pytest.raises(DownloadError, match="gave up waiting 1 s.*node-that-died"):  # fresh: perhaps still working
        with fetching.waiting_lock(lock, "the download", wait_s=1.0):
            pass
    old = time.time() - fetching.LOCK_STALE_S - 1
    os.utime(lock, (old, old))
    started = time.monotonic()
    path = fetch_weights("tiny", progress=False)
    assert time.monotonic() - started < 30 and route.hits == 1
    assert path.read_bytes() == tiny_weights() and not partial.exists() and not lock.exists()


def test_a_held_download_lock_is_refreshed_while_the_download_runs(caches: dict[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetching, "LOCK_HEARTBEAT_S", 0.05)
    path = caches["weights"] / fetching.LOCKS / "x.lock"
    with fetching.waiting_lock(path, "the download"):
        old = time.time() - 3600
        os.utime(path, (old, old))
        deadline = time.monotonic() + 10
        while path.stat().st_mtime < time.time() - 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.stat().st_mtime > time.time() - 60  # the heartbeat refreshed it
    assert not path.exists()


def test_hub_entries_go_through_huggingface_hub(caches: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"weights" * 10)
    calls: list[dict[str, Any]] = []

    def snapshot_download(repo_id: str, **kwargs: Any) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    checked: list[Path] = []
    path = fetch_weights("clap-htsat-unfused", validate=checked.append)
    assert path == folder and checked == [folder]
    assert calls[0]["repo_id"] == "laion/clap-htsat-unfused" and calls[0]["revision"] == CATALOG["clap-htsat-unfused"].revision
    assert not calls[0]["local_files_only"]
    assert "hub/laion/clap-htsat-unfused@" + str(CATALOG["clap-htsat-unfused"].revision) in read_records(weights_cache())
    # the CLAP folder by name in a builder parameter (build('clap', pretrained='weights:...'))
    monkeypatch.setattr(catalog_module, "_fetch_hub", lambda entry, validate, progress, sha256=None: folder)
    assert resolve_weights_params({"pretrained": "weights:clap-htsat-unfused", "x": 1}) == {"pretrained": str(folder), "x": 1}


def test_hub_offline_is_a_clear_error(caches: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="archinetai/autoencoder1d-AT-v1") as caught:
        fetch_weights("autoencoder1d-at-v1")
    assert "downloads are off" in str(caught.value) and str(caches["weights"].parent / "hf") in str(caught.value)


def test_cli_list_fetch_path_verify(server: Any, tiny: WeightsEntry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    for key in ("name", "model", "url", "hub_repo", "file", "num_classes"):
        assert key in listed["mn10_as"]
    assert listed["mn10_as"]["model"] == "mn10" and listed["mn10_as"]["num_classes"] == 527
    assert listed["clap-htsat-unfused"]["url"] is None and listed["clap-htsat-unfused"]["hub_repo"]
    assert main(["weights", "list"]) == 0 and "mn10_as" in capsys.readouterr().out

    assert main(["weights", "path", "tiny"]) == 1
    capsys.readouterr()
    server.serve("/example/tiny" + URL_PATH, tiny_weights())
    assert main(["weights", "fetch", "tiny", "--quiet"]) == 0
    path = capsys.readouterr().out.strip()
    assert main(["weights", "path", "tiny"]) == 0 and capsys.readouterr().out.strip() == path
    assert main(["weights", "verify", "tiny"]) == 0 and "ok" in capsys.readouterr().out
    Path(path).write_bytes(tiny_weights(seed=1))
    assert main(["weights", "verify", "tiny"]) == 1 and "FAIL" in capsys.readouterr().out
    assert main(["weights", "fetch", "no-such-weights"]) == 2
    assert "unknown weights" in capsys.readouterr().err


def test_a_file_put_in_the_cache_by_hand_is_checked_once(tiny: WeightsEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOINTERP_OFFLINE", "1")  # no download: the file is where `weights path` says
    path = weights_cache() / "tiny" / "tiny.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DownloadError, match="put there by hand; it is left in place"):
        fetch_checked("tiny")
    assert path.exists() and "tiny/tiny.safetensors" not in read_records(weights_cache())
    path.write_bytes(tiny_weights())
    assert fetch_checked("tiny") == path and "tiny/tiny.safetensors" in read_records(weights_cache())


def test_a_killed_download_leaves_nothing_behind(server: Any, tiny: WeightsEntry) -> None:
    stale = weights_cache() / "tiny" / ".part-999999-tiny.safetensors"  # a download killed mid-way
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    server.serve("/example/tiny" + URL_PATH, tiny_weights())
    assert fetch_checked("tiny", progress=False).is_file() and not stale.exists()


def test_an_unknown_name_suggests_the_closest(caches: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="mn10_as"):
        build("mn10", checkpoint="weights:mn10_a")


def test_the_papers_word_vectors_by_name_download_once_and_load(caches: dict[str, Path], server: Any,
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`task.vectors=weights:word2vec-google-news-300`: the gzip word2vec binary at gensim-data's release path
    (served by the mirror), checked as gzip, loaded with its words and vectors; the second use reads the cache."""
    import gzip

    import numpy as np
    from gensim.models import KeyedVectors

    from audiointerp.datasets.embeddings import load_word_vectors

    words = ["glass", "wood", "metal"]
    vectors = np.arange(9, dtype=np.float32).reshape(3, 3)
    kv = KeyedVectors(3)
    kv.add_vectors(words, vectors)
    raw = tmp_path / "vectors.bin"
    kv.save_word2vec_format(str(raw), binary=True)
    body = gzip.compress(raw.read_bytes())
    entry = CATALOG["word2vec-google-news-300"]
    small = WeightsEntry(entry.name, None, entry.file, None, entry.licence, entry.paper, url=entry.url, use="vectors")
    monkeypatch.setitem(CATALOG, entry.name, small)  # the real entry pins the real file's md5 and size
    server.serve("/RaRe-Technologies/gensim-data/releases/download/word2vec-google-news-300/word2vec-google-news-300.gz", body)
    loaded = load_word_vectors("weights:word2vec-google-news-300")
    assert loaded.words == words and np.array_equal(loaded.matrix(words), vectors)
    assert loaded.source.startswith("weights:word2vec-google-news-300")
    hits = server.hits()
    assert load_word_vectors("weights:word2vec-google-news-300").words == words
    assert server.hits() == hits  # from the cache


def test_a_file_put_by_hand_is_checked_against_the_catalog_size(tiny: WeightsEntry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The offline message says where to put a file; a truncated copy put there was trusted on first use."""
    good = tiny_weights()
    monkeypatch.setitem(CATALOG, "tiny", WeightsEntry(**{**tiny.__dict__, "size": len(good)}))
    monkeypatch.setenv("AUDIOINTERP_OFFLINE", "1")
    path = weights_cache() / "tiny" / "tiny.safetensors"
    path.parent.mkdir(parents=True)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DownloadError, match=f"expected {len(good)}.*put there by hand"):
        fetch_weights("tiny")
    assert path.exists() and read_records(weights_cache()) == {}
    path.write_bytes(good)
    assert fetch_weights("tiny") == path


def test_a_hub_entry_honours_a_pinned_sha256_and_its_record(caches: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`weights fetch NAME --sha256 HEX` was silently ignored for hub entries, and later uses never checked them."""
    import huggingface_hub

    model = tmp_path / "pytorch_model.bin"
    model.write_bytes(b"weights" * 10)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo_id, filename, **kwargs: str(model))
    with pytest.raises(DownloadError, match="pinned"):
        fetch_weights("autoencoder1d-at-v1", sha256="0" * 64)
    assert read_records(weights_cache()) == {}
    right = hashlib.sha256(model.read_bytes()).hexdigest()
    assert fetch_weights("autoencoder1d-at-v1", sha256=right) == model
    model.write_bytes(b"other" * 14)  # the same size, another file: its record no longer matches
    with pytest.raises(DownloadError):
        fetch_weights("autoencoder1d-at-v1")


def test_a_busy_server_is_tried_again_and_a_read_only_cache_still_serves(server: Any, tiny: WeightsEntry,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """503 (or 429, 5xx) is retried, 404 is not (test_404_is_refused); a verified file whose record cannot be
    written (a read-only shared cache) is still used."""
    route = server.serve("/example/tiny" + URL_PATH, tiny_weights(), mode="busy_once")
    path = fetch_weights("tiny", progress=False)
    assert route.hits == 2 and path.is_file()
    records = read_records(weights_cache())
    (weights_cache() / "hashes.json").unlink()  # as if another copy of the cache had no record yet

    def read_only(*args: Any, **kwargs: Any) -> None:
        raise OSError(30, "Read-only file system", str(weights_cache() / "hashes.json"))

    monkeypatch.setattr(catalog_module, "write_record", read_only, raising=False)
    import audiointerp.downloads.fetching as fetching_module

    monkeypatch.setattr(fetching_module, "write_record", read_only)
    assert fetch_weights("tiny", progress=False) == path
    assert records  # it had been recorded when the cache was writable
