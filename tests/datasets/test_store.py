"""The activation store: written by `extract`, read back equal to the network's taps, resumed, refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.analysis import ActivationStore, ExtractSettings, StoreError, extract
from audiointerp.analysis.extraction import layer_activations, load_model
from audiointerp.datasets import load_manifest
from audiointerp.datasets.manifest import ManifestDataset


def settings(tiny_data: Path, **kw) -> ExtractSettings:
    base = dict(model="semdnn", data=str(tiny_data), layers=["block2", "4", "embedding"], chunk_size=7,
                num_classes=8)
    return ExtractSettings(**{**base, **kw})


def direct(tiny_data: Path, layer: str) -> np.ndarray:
    """The same activations computed directly, clip by clip, with the same (seeded) network."""
    torch.manual_seed(0)
    pipeline, _ = load_model(settings(tiny_data), 8)
    manifest = load_manifest(str(tiny_data))
    dataset = ManifestDataset(manifest, sample_rate=16000, seconds=None, train=False, classes=manifest.class_list("label"),
                              progress=False)
    return np.concatenate([layer_activations(pipeline, dataset[i]["audio"][None], [layer])[layer].numpy()
                           for i in range(len(dataset))])


def test_store_holds_the_taps_of_every_clip_with_its_metadata(tiny_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = extract(settings(tiny_data), tmp_path / "store", batch_size=4, progress=False)
    store = ActivationStore(out)
    assert store.layers == ["block2", "block4", "embedding"]  # "4" resolved to the 4th tap
    assert len(store) == 120 and store.column("material")[0] in {"wood", "metal", "glass", "stone", "cardboard", "plastic"}
    for layer in store.layers:
        np.testing.assert_allclose(store.load(layer), direct(tiny_data, layer), rtol=1e-5, atol=1e-5)
    assert store.load("embedding", [5, 2]).shape == (2, 1, 512)  # [clips, patches, ...]
    np.testing.assert_array_equal(store.load("embedding", [5, 2, 5]), store.load("embedding")[[5, 2, 5]])
    meta = json.loads((out / "store.json").read_text())
    assert meta["frontend"]["class"] == "VGGishFrontend" and meta["frontend"]["sample_rate"] == 16000
    assert meta["model_hash"] is None and meta["layers"] == store.layers


def test_pooling_flattening_and_float16(tiny_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = extract(settings(tiny_data, pooling="mean", flatten=True, dtype="float16", layers=["block2"]), tmp_path / "s",
                  progress=False)
    store = ActivationStore(out)
    values = store.load("block2")
    assert values.ndim == 2 and store.shape("block2") == (values.shape[1],)
    expected = direct(tiny_data, "block2").mean(axis=1).reshape(len(values), -1)
    np.testing.assert_allclose(values, expected, rtol=2e-3, atol=2e-3)
    patch = tuple(direct(tiny_data, "block2").shape[2:])
    assert store.patch_shape("block2") == patch  # recorded unflattened, per patch: what forward_from takes
    assert store.as_patches("block2", values).shape == (len(values), 1, *patch)


def test_an_interrupted_extraction_resumes_without_recomputing_finished_chunks(tiny_data: Path, tmp_path: Path,
                                                                              monkeypatch) -> None:
    torch.manual_seed(0)
    out = extract(settings(tiny_data), tmp_path / "store", progress=False, max_chunks=5)  # killed after 5 of 18 chunks
    with pytest.raises(StoreError, match="incomplete .13 of 18 chunks missing"):
        ActivationStore(out)
    import audiointerp.analysis.extraction as module

    calls = []
    original = module.layer_activations
    monkeypatch.setattr(module, "layer_activations", lambda p, w, layers: calls.append(len(w)) or original(p, w, layers))
    torch.manual_seed(0)
    extract(settings(tiny_data), out, batch_size=64, progress=False)
    assert sum(calls) == 1 + 120 - 5 * 7  # the one-clip shape probe, then only the missing chunks
    np.testing.assert_allclose(ActivationStore(out).load("embedding"), direct(tiny_data, "embedding"), rtol=1e-5, atol=1e-5)


def test_a_half_written_chunk_is_cut_off_and_recomputed(tiny_data: Path, tmp_path: Path) -> None:
    import h5py

    torch.manual_seed(0)
    out = extract(settings(tiny_data), tmp_path / "store", progress=False, max_chunks=2)
    shard = next(out.glob("shard-*.h5"))
    with h5py.File(shard, "a") as handle:  # rows appended, the process killed before marking the chunk done
        for name in ("index", "layers/block2", "layers/block4", "layers/embedding"):
            handle[name].resize(handle[name].shape[0] + 3, axis=0)
    torch.manual_seed(0)
    extract(settings(tiny_data), out, progress=False)
    store = ActivationStore(out)
    np.testing.assert_allclose(store.load("block4"), direct(tiny_data, "block4"), rtol=1e-5, atol=1e-5)


def test_other_settings_and_bad_layers_are_refused(tiny_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = extract(settings(tiny_data, layers=["embedding"]), tmp_path / "store", progress=False)
    with pytest.raises(StoreError, match="other settings .*layers"):
        extract(settings(tiny_data, layers=["block2"]), out, progress=False)
    with pytest.raises(StoreError, match="no layer 'block9'; the network's layers: block1"):
        extract(settings(tiny_data, layers=["block9"]), tmp_path / "other", progress=False)
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore(tmp_path)
    with pytest.raises(StoreError, match="no layer 'block1'"):
        ActivationStore(out).load("block1")


@pytest.mark.timeout(900)
def test_two_processes_write_disjoint_shards_that_read_back_like_one(tiny_data: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    args = ["extract", "--model", "semdnn", "--num-classes", "8", "--data", str(tiny_data), "--layers", "block2,embedding",
            "--chunk-size", "7", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for nproc, out in ((2, tmp_path / "two"), (1, tmp_path / "one")):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 \
            else [sys.executable]
        result = subprocess.run([*launcher, "-m", "audiointerp", *args, "--out", str(out)], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(p.name for p in (tmp_path / "two").glob("shard-*.h5"))
    assert shards == ["shard-00000-of-00002.h5", "shard-00001-of-00002.h5"]
    two, one = ActivationStore(tmp_path / "two"), ActivationStore(tmp_path / "one")
    for layer in ("block2", "embedding"):
        np.testing.assert_allclose(two.load(layer), one.load(layer), rtol=1e-5, atol=1e-6)


def test_the_store_records_the_hash_of_a_zoo_models_weights(tiny_data: Path, tmp_path: Path) -> None:
    import hashlib

    from audiointerp.models import build

    weights = tmp_path / "semdnn.pt"
    torch.save(build("semdnn", num_classes=8).state_dict(), weights)
    out = extract(settings(tiny_data, layers=["embedding"], checkpoint=str(weights)), tmp_path / "store", progress=False)
    assert json.loads((out / "store.json").read_text())["model_hash"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_a_store_of_activations_computed_elsewhere_reads_back(tmp_path: Path) -> None:
    from audiointerp.datasets.store import write_store

    values = np.random.default_rng(0).normal(size=(25, 3, 4)).astype(np.float32)
    folder = write_store(tmp_path / "s", {"roi": values}, {"label": [f"c{i % 3}" for i in range(25)]}, chunk_size=10)
    store = ActivationStore(folder)
    np.testing.assert_array_equal(store.load("roi"), values)
    assert store.patch_shape("roi") == (3, 4) and list(store.column("label")[:2]) == ["c0", "c1"]
    with pytest.raises(StoreError, match="already holds a store"):
        write_store(folder, {"roi": values}, {})
    with pytest.raises(StoreError, match="label has 3 rows, the first layer 25"):
        write_store(tmp_path / "t", {"roi": values}, {"label": ["a", "b", "c"]})


def _assert_same_store(left: Path, right: Path) -> None:
    a, b = ActivationStore(left), ActivationStore(right)
    assert a.layers == b.layers and len(a) == len(b) and a.clips == b.clips
    for layer in a.layers:
        np.testing.assert_array_equal(a.load(layer), b.load(layer))


def test_a_shard_truncated_by_a_kill_before_its_first_chunk_is_refused_by_name_then_resumed(
        tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 12.2: `extract` killed before its first chunk left a 96-byte shard (`truncated file: eof = 96`)."""
    torch.manual_seed(0)
    clean = extract(settings(tiny_data, layers=["block2", "embedding"]), tmp_path / "clean", progress=False)
    torch.manual_seed(0)
    out = extract(settings(tiny_data, layers=["block2", "embedding"]), tmp_path / "killed", progress=False, max_chunks=0)
    shard = out / "shard-00000-of-00001.h5"
    shard.write_bytes((clean / shard.name).read_bytes()[:96])  # what the kill left: the superblock alone
    with pytest.raises(StoreError, match=r"shard-00000-of-00001\.h5.*run the same `audiointerp extract` command"):
        ActivationStore(out)
    torch.manual_seed(0)
    with caplog.at_level("WARNING", logger="audiointerp"):
        extract(settings(tiny_data, layers=["block2", "embedding"]), out, progress=False)
    assert any(shard.name in record.getMessage() for record in caplog.records)
    _assert_same_store(out, clean)


def test_a_shard_writer_starts_an_unreadable_shard_afresh(tmp_path: Path) -> None:
    from audiointerp.datasets.store import ShardWriter, shard_path

    path = shard_path(tmp_path, 0, 1)
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)  # 96 bytes: an HDF5 signature and nothing parseable
    writer = ShardWriter(path, ["roi"], "float32")
    try:
        assert writer.done == set()
        writer.write_chunk(0, np.arange(3), {"roi": np.ones((3, 2), dtype=np.float32)})
    finally:
        writer.close()
    import h5py

    with h5py.File(path, "r") as handle:
        assert int(handle.attrs["rows"]) == 3 and json.loads(handle.attrs["done"]) == [0]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_new_shard_is_a_valid_empty_shard_on_disk_before_any_chunk(tmp_path: Path) -> None:
    import h5py

    from audiointerp.datasets.store import ShardWriter, shard_path

    path = shard_path(tmp_path, 0, 1)
    writer = ShardWriter(path, ["roi"], "float32")
    try:
        copy = tmp_path / "copy.h5"
        copy.write_bytes(path.read_bytes())  # the bytes a kill at this moment would leave
    finally:
        writer.close()
    with h5py.File(copy, "r") as handle:
        assert int(handle.attrs["rows"]) == 0 and json.loads(handle.attrs["done"]) == []


def store_error_in_another_process(name: str, call: str) -> subprocess.CompletedProcess[str]:
    """Run `call` (of `audiointerp.datasets.store.<name>`) in a fresh Python process: exit 3 with the StoreError's
    message on stdout when it raises one."""
    code = (f"import sys\nfrom audiointerp.datasets.store import StoreError, {name}\n"
            f"try:\n    {call}\nexcept StoreError as err:\n    print(err); sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(__import__("os").environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE",
                    reason="HDF5 file locking is disabled here")
def test_a_shard_locked_by_another_writer_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Only a shard HDF5 cannot parse is started afresh: a live writer's shard (file lock held) is never moved."""
    from audiointerp.datasets.store import ShardWriter, shard_path

    path = shard_path(tmp_path, 0, 1)
    writer = ShardWriter(path, ["roi"], "float32")
    try:
        writer.write_chunk(0, np.arange(2), {"roi": np.ones((2, 2), dtype=np.float32)})
        result = store_error_in_another_process("ShardWriter", f"ShardWriter({str(path)!r}, ['roi'], 'float32')")
    finally:
        writer.close()
    assert result.returncode == 3, result.stderr[-2000:]
    assert "cannot open shard" in result.stdout and path.name in result.stdout
    assert path.exists() and not list(tmp_path.glob("*.unreadable"))
    from audiointerp.datasets.store import done_chunks

    assert done_chunks(tmp_path) == {0}


def test_a_second_writer_of_a_shard_is_refused_naming_the_holder_even_without_hdf5_locking(tmp_path: Path) -> None:
    """Issue 12.3: one process per shard, whatever HDF5's own file locking (often off on shared file systems)."""
    import os
    import socket
    import subprocess
    import sys

    from audiointerp.datasets.store import ShardWriter, shard_path

    path = shard_path(tmp_path, 0, 1)
    lock = path.with_name(path.name + ".lock")
    writer = ShardWriter(path, ["roi"], "float32")
    try:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        writer.write_chunk(0, np.arange(2), {"roi": np.ones((2, 2), dtype=np.float32)})
        code = ("import sys\nfrom audiointerp.datasets.store import ShardWriter, StoreError\n"
                f"try:\n    ShardWriter({str(path)!r}, ['roi'], 'float32')\n"
                "except StoreError as err:\n    print(err); sys.exit(3)\nprint('opened')\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "HDF5_USE_FILE_LOCKING": "FALSE"})
    finally:
        writer.close()
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert f"cannot open shard {path}" in result.stdout and f"pid {os.getpid()} " in result.stdout
    assert socket.gethostname() in result.stdout and str(lock) in result.stdout
    assert not lock.exists()  # released by close()
    from audiointerp.datasets.store import done_chunks

    assert done_chunks(tmp_path) == {0}


def test_a_shard_lock_left_by_a_killed_writer_is_taken_over(tmp_path: Path, caplog) -> None:
    import logging
    import socket
    import subprocess
    import sys

    from audiointerp.datasets.store import ShardWriter, shard_path

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = shard_path(tmp_path, 0, 2)
    lock = path.with_name(path.name + ".lock")
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": "2026-01-01T00:00:00Z",
                                "command": "audiointerp extract"}))
    with caplog.at_level(logging.WARNING, logger="audiointerp"):
        writer = ShardWriter(path, ["roi"], "float32")
    writer.close()
    assert f"pid {dead.pid}" in caplog.text and not lock.exists()
    lock.write_text(json.dumps({"host": "node-elsewhere-7", "pid": 4242, "started": "2026-01-01T00:00:00Z",
                                "command": "audiointerp extract"}))
    with pytest.raises(StoreError, match=r"cannot open shard .*pid 4242 on host 'node-elsewhere-7'"):
        ShardWriter(path, ["roi"], "float32")
    ShardWriter(path, ["roi"], "float32", force_unlock=True).close()
    assert not lock.exists()


@pytest.mark.skipif(__import__("os").environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE",
                    reason="HDF5 file locking is disabled here")
def test_reading_the_done_chunks_of_a_shard_being_written_names_its_writer(tmp_path: Path) -> None:
    """A second `extract` first reads every shard's done chunks: HDF5's lock refuses it there, naming the writer."""
    import os

    from audiointerp.datasets.store import ShardWriter, shard_path

    path = shard_path(tmp_path, 0, 1)
    writer = ShardWriter(path, ["roi"], "float32")
    try:
        result = store_error_in_another_process("done_chunks", f"done_chunks({str(tmp_path)!r})")
    finally:
        writer.close()
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert f"being written by pid {os.getpid()} " in result.stdout and f"{path.name}.lock" in result.stdout


def test_extract_refuses_a_shard_locked_on_another_host_unless_forced(tiny_data: Path, tmp_path: Path) -> None:
    """A shard lock recorded by another node stops `extract` naming its holder; `--force-unlock` takes it over and
    the store is then complete and equal to an extraction that met no lock."""
    import socket

    from audiointerp.datasets.store import shard_path

    out = tmp_path / "store"
    out.mkdir()
    lock = shard_path(out, 0, 1)
    lock = lock.with_name(lock.name + ".lock")
    lock.write_text(json.dumps({"host": "node-elsewhere-7", "pid": 4242, "started": "2026-01-01T00:00:00Z",
                                "command": "audiointerp extract"}))
    assert socket.gethostname() != "node-elsewhere-7"
    torch.manual_seed(0)
    with pytest.raises(StoreError, match=r"pid 4242 on host 'node-elsewhere-7'.*--force-unlock"):
        extract(settings(tiny_data), out, progress=False)
    torch.manual_seed(0)
    forced = ActivationStore(extract(settings(tiny_data), out, progress=False, force_unlock=True))
    torch.manual_seed(0)
    clean = ActivationStore(extract(settings(tiny_data), tmp_path / "clean", progress=False))
    assert not lock.exists()
    for layer in clean.layers:
        assert np.array_equal(forced.load(layer), clean.load(layer)), layer


def test_a_shard_damaged_by_a_kill_during_a_flush_is_redone(tmp_path: Path) -> None:
    """A real shard left by `extract` SIGKILLed while flushing (benchmarks/faults.py, extract trial 47): HDF5
    opens it and reads its attributes, but its group's metadata points past the end of the file ("addr overflow"),
    so before the fix the rerun died inside h5py. Now it counts as holding no chunk and is started afresh."""
    from audiointerp.datasets.store import ShardWriter, UnreadableShardError, done_chunks

    damaged = Path(__file__).parent / "data" / "shard_damaged_by_a_kill.h5"
    shard = tmp_path / "shard-00000-of-00001.h5"
    shutil.copy(damaged, shard)
    assert done_chunks(tmp_path) == set()
    writer = ShardWriter(shard, ["block2", "block3"], "float32")
    try:
        assert writer.done == set()
        writer.write_chunk(0, np.arange(2), {"block2": np.ones((2, 3), np.float32), "block3": np.zeros((2, 4), np.float32)})
    finally:
        writer.close()
    assert (tmp_path / "shard-00000-of-00001.h5.unreadable").read_bytes() == damaged.read_bytes()
    assert done_chunks(tmp_path, strict=True) == {0}
    with pytest.raises(UnreadableShardError):
        shutil.copy(damaged, shard)
        _damaged_with_rows(shard)
        done_chunks(tmp_path, strict=True)


def _damaged_with_rows(shard: Path) -> None:
    """Claim a complete row in the damaged shard's attributes (which still write), so its datasets must read."""
    import h5py

    with h5py.File(shard, "r+") as handle:
        handle.attrs["rows"] = 2
        handle.attrs["done"] = "[0]"
