"""The on-disk audio cache (audiointerp.datasets.cache) as used by ManifestDataset."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.datasets import audio as audio_mod
from audiointerp.datasets.cache import AudioCache
from audiointerp.datasets.manifest import ManifestDataset, SkippedAudioWarning, read_manifest
from audiointerp.errors import AudioFileError

SR_FILE = 22050
LENGTHS = [2205, 1000, 4410, 3000, 2600, 500]


def _make_tree(root: Path) -> Path:
    """Six clips at 22.05 kHz (one stereo), in a generic manifest with labels a/b."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, n in enumerate(LENGTHS):
        ch = 2 if k == 3 else 1
        data = np.random.default_rng(k).uniform(-0.5, 0.5, size=(n, ch)).astype(np.float32)
        sf.write(str(root / f"clip{k}.wav"), data, SR_FILE, subtype="FLOAT")
        rows.append([f"clip{k}.wav", "ab"[k % 2], str(k % 3)])
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "fold"])
        w.writerows(rows)
    return root / "manifest.csv"


@pytest.fixture()
def manifest_csv(tmp_path: Path) -> Path:
    return _make_tree(tmp_path / "data")


@pytest.fixture()
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count calls of audio.load_audio (the only decoder the dataset and cache use)."""
    calls: list[str] = []
    real = audio_mod.load_audio

    def counting(path, sample_rate, channels=1):
        calls.append(Path(path).name)
        return real(path, sample_rate, channels)

    monkeypatch.setattr(audio_mod, "load_audio", counting)
    return calls


def _ds(manifest_csv: Path, **kw) -> ManifestDataset:
    kw.setdefault("sample_rate", 16000)
    kw.setdefault("seconds", 0.1)
    kw.setdefault("progress", False)
    return ManifestDataset(read_manifest(manifest_csv), **kw)


def _cache_files(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir())


def test_cache_is_built_once(manifest_csv: Path, tmp_path: Path, decode_counter: list[str]) -> None:
    cache_dir = tmp_path / "cache"
    first = _ds(manifest_csv, cache_dir=cache_dir, train=True)
    assert first.cache_built and len(decode_counter) == 6
    for epoch in range(2):
        first.set_epoch(epoch)
        [first[i] for i in range(len(first))]
    assert len(decode_counter) == 6  # epochs read the memmap
    second = _ds(manifest_csv, cache_dir=cache_dir, train=True)
    assert not second.cache_built
    [second[i] for i in range(len(second))]
    assert len(decode_counter) == 6  # nothing decoded again by a new instance
    names = _cache_files(cache_dir)
    assert len([n for n in names if n.endswith(".f32")]) == 1 and len([n for n in names if n.endswith(".json")]) == 1
    assert not [n for n in names if ".tmp" in n]
    other_rate = _ds(manifest_csv, cache_dir=cache_dir, sample_rate=8000)
    assert other_rate.cache_built and len(decode_counter) == 12  # another parameter set, another cache
    assert len([n for n in _cache_files(cache_dir) if n.endswith(".f32")]) == 2


@pytest.mark.parametrize(
    "kw",
    [
        {"train": True, "seconds": 0.1},
        {"train": False, "seconds": 0.1},
        {"train": False, "seconds": None},
        {"train": True, "seconds": 0.05, "channels": 2, "sample_rate": 32000},
    ],
)
def test_samples_identical_with_and_without_cache(manifest_csv: Path, tmp_path: Path, kw: dict) -> None:
    plain = _ds(manifest_csv, seed=7, **kw)
    cached = _ds(manifest_csv, seed=7, cache_dir=tmp_path / "cache", **kw)
    for epoch in (0, 1, 5):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = plain[i], cached[i]
            assert a["audio"].shape == b["audio"].shape
            assert torch.equal(a["audio"], b["audio"]), (epoch, i)
            assert torch.equal(a["target"], b["target"]) and torch.equal(a["index"], b["index"])


def test_cached_dataset_pickles_without_the_memmap(manifest_csv: Path, tmp_path: Path) -> None:
    ds = _ds(manifest_csv, cache_dir=tmp_path / "cache")
    before = ds[2]["audio"]
    assert ds.cache is not None and ds.cache._mm is not None
    blob = pickle.dumps(ds)
    assert len(blob) < 20_000  # no audio inside
    clone = pickle.loads(blob)
    assert clone.cache._mm is None
    assert torch.equal(clone[2]["audio"], before)


def test_audio_cache_read_window(manifest_csv: Path, tmp_path: Path) -> None:
    m = read_manifest(manifest_csv)
    paths = [m.resolve(r).resolve() for r in m.rows]
    cache = AudioCache(tmp_path / "c", paths, 16000, 1)
    assert cache.ensure(progress=False)
    full = audio_mod.load_audio(paths[2], 16000).numpy()
    assert cache.lengths.tolist()[2] == full.shape[1] == 3200
    np.testing.assert_array_equal(cache.read(2), full)
    np.testing.assert_array_equal(cache.read(2, 100, 50), full[:, 100:150])
    assert cache.read(2, 3150, 100).shape == (1, 50)
    assert not AudioCache(tmp_path / "c", paths, 16000, 1).ensure(progress=False)


@pytest.mark.parametrize("damage", ["marker", "truncate", "index", "garbage-marker"])
def test_stale_or_corrupt_cache_is_rebuilt(
    manifest_csv: Path, tmp_path: Path, decode_counter: list[str], damage: str
) -> None:
    cache_dir = tmp_path / "cache"
    ds = _ds(manifest_csv, cache_dir=cache_dir, seconds=None)
    reference = [ds[i]["audio"] for i in range(len(ds))]
    assert len(decode_counter) == 6
    assert ds.cache is not None
    if damage == "marker":
        ds.cache.marker_path.unlink()
    elif damage == "truncate":
        with open(ds.cache.data_path, "r+b") as fh:
            fh.truncate(ds.cache.data_path.stat().st_size - 8)
    elif damage == "index":
        np.save(ds.cache.index_path, np.zeros((2, 2), dtype=np.int64))
    else:
        ds.cache.marker_path.write_text("[1, 2")
    again = _ds(manifest_csv, cache_dir=cache_dir, seconds=None)
    assert again.cache_built and len(decode_counter) == 12
    for i, ref in enumerate(reference):
        assert torch.equal(again[i]["audio"], ref)
    marker = json.loads(again.cache.marker_path.read_text())
    assert marker["data_bytes"] == again.cache.data_path.stat().st_size


def test_changed_file_gets_a_new_cache(manifest_csv: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    old = _ds(manifest_csv, cache_dir=cache_dir, seconds=None)
    time.sleep(0.01)
    sf.write(str(manifest_csv.parent / "clip0.wav"), np.full((100, 1), 0.25, np.float32), 16000, subtype="FLOAT")
    new = _ds(manifest_csv, cache_dir=cache_dir, seconds=None)
    assert new.cache_built and new.cache.key != old.cache.key
    np.testing.assert_allclose(new[0]["audio"].numpy(), 0.25)


def test_decode_failure_during_build(manifest_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = audio_mod.load_audio

    def failing(path, sample_rate, channels=1):
        if Path(path).name == "clip4.wav":
            raise AudioFileError(path, "cannot decode (simulated)")
        return real(path, sample_rate, channels)

    monkeypatch.setattr(audio_mod, "load_audio", failing)
    cache_dir = tmp_path / "cache"
    with pytest.raises(AudioFileError, match="clip4.wav.*simulated"):
        _ds(manifest_csv, cache_dir=cache_dir)
    assert not [n for n in _cache_files(cache_dir) if n.endswith((".json", ".f32")) or ".tmp" in n]

    with pytest.warns(SkippedAudioWarning, match="skipped 1 of 6.*clip4.wav"):
        ds = _ds(manifest_csv, cache_dir=cache_dir, on_error="skip")
    assert ds.cache_built and len(ds) == 5 and [Path(p).name for p, _ in ds.skipped] == ["clip4.wav"]
    assert [r.path for r in ds.rows] == ["clip0.wav", "clip1.wav", "clip2.wav", "clip3.wav", "clip5.wav"]
    assert torch.equal(ds[4]["audio"], _ds(manifest_csv)[5]["audio"])

    monkeypatch.setattr(audio_mod, "load_audio", real)  # the failure recorded in the cache is reused
    with pytest.warns(SkippedAudioWarning, match="skipped 1 of 6"):
        again = _ds(manifest_csv, cache_dir=cache_dir, on_error="skip")
    assert not again.cache_built and len(again) == 5
    with pytest.raises(AudioFileError, match="clip4.wav.*simulated"):
        _ds(manifest_csv, cache_dir=cache_dir)


def test_bad_files_with_cache(manifest_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = manifest_csv.parent
    cache_dir = tmp_path / "cache"
    (data / "clip1.wav").write_bytes(b"RIFF garbage" * 50)
    with pytest.raises(AudioFileError, match="clip1.wav.*unreadable audio header"):
        _ds(manifest_csv, cache_dir=cache_dir, on_error="raise")
    (data / "clip4.wav").unlink()
    with pytest.raises(AudioFileError, match="clip4.wav.*not found"):
        _ds(manifest_csv, cache_dir=cache_dir, on_error="raise")
    assert not cache_dir.exists() or not list(cache_dir.glob("*.f32"))  # nothing built

    decoded: list[str] = []
    header_checks: list[str] = []
    real_load, real_check = audio_mod.load_audio, audio_mod.check_audio_file

    def load(path, sample_rate, channels=1):
        decoded.append(Path(path).name)
        return real_load(path, sample_rate, channels)

    def check(path, *, read_header=True):
        if read_header:
            header_checks.append(Path(path).name)
        return real_check(path, read_header=read_header)

    monkeypatch.setattr(audio_mod, "load_audio", load)
    monkeypatch.setattr(audio_mod, "check_audio_file", check)
    with pytest.warns(SkippedAudioWarning, match="skipped 2 of 6"):
        first = _ds(manifest_csv, cache_dir=cache_dir, on_error="skip")
    assert first.cache_built and sorted(decoded) == ["clip0.wav", "clip2.wav", "clip3.wav", "clip5.wav"]
    reasons = {Path(p).name: r for p, r in first.skipped}
    assert "not found" in reasons["clip4.wav"] and "unreadable audio header" in reasons["clip1.wav"]
    assert len(header_checks) == 5  # the cache had to be built: headers of the existing files were checked

    decoded.clear()
    header_checks.clear()
    with pytest.warns(SkippedAudioWarning, match="skipped 2 of 6"):
        second = _ds(manifest_csv, cache_dir=cache_dir, on_error="skip")
    assert not second.cache_built and decoded == [] and header_checks == []  # the valid cache knows
    assert {Path(p).name: r for p, r in second.skipped} == reasons
    assert [r.path for r in second.rows] == ["clip0.wav", "clip2.wav", "clip3.wav", "clip5.wav"]
    for i in range(len(second)):
        assert torch.equal(second[i]["audio"], first[i]["audio"])


def _build_in_process(manifest_csv: str, cache_dir: str, barrier, queue) -> None:
    """Spawned worker: slow decoding down so that both processes overlap, then build or wait."""
    from audiointerp.datasets import audio as worker_audio

    real = worker_audio.load_audio

    def slow(path, sample_rate, channels=1):
        time.sleep(0.03)
        return real(path, sample_rate, channels)

    worker_audio.load_audio = slow
    barrier.wait(timeout=120)
    ds = ManifestDataset(
        read_manifest(manifest_csv), sample_rate=16000, seconds=None, cache_dir=cache_dir, progress=False
    )
    audio = [ds[i]["audio"].numpy().tolist() for i in range(len(ds))]
    queue.put((os.getpid(), ds.cache_built, ds.cache.key, audio))


def test_concurrent_build_from_two_processes(manifest_csv: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_build_in_process, args=(str(manifest_csv), str(cache_dir), barrier, queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(built for _, built, _, _ in results) == [False, True]  # one built, the other waited
    assert results[0][2] == results[1][2]
    names = _cache_files(cache_dir)
    assert len([n for n in names if n.endswith(".f32")]) == 1
    assert len([n for n in names if n.endswith(".json")]) == 1
    assert not [n for n in names if ".tmp" in n]
    reference = _ds(manifest_csv, seconds=None)
    for _, _, _, audio in results:
        for i, clip in enumerate(audio):
            assert torch.equal(torch.tensor(clip, dtype=torch.float32), reference[i]["audio"])
    reopened = _ds(manifest_csv, seconds=None, cache_dir=cache_dir)
    assert not reopened.cache_built


def test_silent_files_warn_again_when_the_cache_is_reused(tmp_path) -> None:
    import numpy as np
    import pytest
    import soundfile as sf

    from audiointerp.datasets import ManifestDataset, SilentAudioWarning, read_manifest

    sf.write(tmp_path / "quiet.wav", np.zeros(800, dtype=np.float32), 8000)
    sf.write(tmp_path / "loud.wav", np.full(800, 0.2, dtype=np.float32), 8000)
    (tmp_path / "m.csv").write_text("path,label\nquiet.wav,a\nloud.wav,b\n")
    for _ in range(2):  # build, then reuse
        with pytest.warns(SilentAudioWarning, match="quiet.wav"):
            ManifestDataset(read_manifest(tmp_path / "m.csv"), sample_rate=8000, seconds=0.1,
                            cache_dir=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("cached", [False, True])
def test_truncated_wav_is_an_error_or_skipped_with_its_reason(manifest_csv: Path, tmp_path: Path, cached: bool) -> None:
    """A WAV cut inside its data chunk (header: 3000 frames, file: 1200) is never read as a shorter clip."""
    clip = manifest_csv.parent / "clip3.wav"  # stereo float: 8 bytes per frame
    raw = clip.read_bytes()
    clip.write_bytes(raw[: raw.index(b"data") + 8 + 1200 * 8 + 3])
    cache_dir = tmp_path / "cache" if cached else None
    with pytest.raises(AudioFileError, match=r"clip3\.wav.*truncated.*3000 frames.*1200"):
        _ds(manifest_csv, cache_dir=cache_dir, on_error="raise")
    with pytest.warns(SkippedAudioWarning, match="skipped 1 of 6"):
        ds = _ds(manifest_csv, cache_dir=cache_dir, on_error="skip")
    assert [(Path(p).name, r) for p, r in ds.skipped] == [
        ("clip3.wav", "truncated: the header declares 3000 frames but the file holds only 1200")
    ]
    assert [r.path for r in ds.rows] == ["clip0.wav", "clip1.wav", "clip2.wav", "clip4.wav", "clip5.wav"]
