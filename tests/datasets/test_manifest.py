"""Manifests and ManifestDataset (audiointerp.datasets.manifest)."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiointerp.datasets.audio import load_audio
from audiointerp.datasets.manifest import (
    Manifest,
    ManifestDataset,
    ManifestRow,
    SkippedAudioWarning,
    read_manifest,
)
from audiointerp.datasets.readers import load_manifest
from audiointerp.errors import AudioFileError, DatasetError

SR = 8000


def _wav(path: Path, n: int, seed: int, sr: int = SR, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).uniform(-0.5, 0.5, size=(n, channels)).astype(np.float32)
    sf.write(str(path), data, sr, subtype="FLOAT")
    return path


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A generic manifest over 6 clips of different lengths, 2 folds, factors material/action."""
    specs = [
        ("a/wood_tap.wav", "wood", "1", "tapping", 900),
        ("a/metal_tap.wav", "metal", "1", "tapping", 300),
        ("b/wood_rub.wav", "wood", "2", "rubbing", 1200),
        ("b/glass_rub.wav", "glass", "2", "rubbing", 650),
        ("b/metal_rub.wav", "metal", "2", "rubbing", 1000),
        ("c/glass_tap.wav", "glass", "3", "tapping", 800),
    ]
    rows = []
    for k, (rel, mat, fold, act, n) in enumerate(specs):
        _wav(tmp_path / rel, n, seed=k)
        rows.append([rel, mat, f"a {mat} sound", fold, mat, act])
    _csv(tmp_path / "manifest.csv", ["path", "label", "description", "fold", "material", "action"], rows)
    return tmp_path


def test_read_manifest_fields(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    assert len(m) == 6 and m.root == tree
    assert m.factor_names == ("material", "action")
    row = m.rows[0]
    assert row == ManifestRow(
        "a/wood_tap.wav", ("wood",), "a wood sound", "1", {"material": "wood", "action": "tapping"}
    )
    assert m.resolve(row) == tree / "a/wood_tap.wav" and m.resolve(0) == tree / "a/wood_tap.wav"
    assert m.label_values() == ["glass", "metal", "wood"]
    assert m.label_values("action") == ["rubbing", "tapping"]
    with pytest.raises(DatasetError, match="unknown column 'size'.*'material'"):
        m.label_values("size")


def test_multi_label_and_absolute_paths(tmp_path: Path) -> None:
    absolute = _wav(tmp_path / "elsewhere" / "x.wav", 100, 0)
    _csv(tmp_path / "m.csv", ["path", "label"], [[str(absolute), "dog; bark ;dog"], ["rel.wav", "cat"]])
    m = read_manifest(tmp_path / "m.csv")
    assert m.rows[0].labels == ("dog", "bark")
    assert m.resolve(m.rows[0]) == absolute
    assert m.label_values() == ["bark", "cat", "dog"]
    assert m.factor_names == ()


def test_select_folds(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    assert [r.fold for r in m.select_folds([1, "3"]).rows] == ["1", "1", "3"]
    assert len(m.select_folds([2])) == 3
    with pytest.raises(DatasetError, match=r"folds \['7'\].*available: \['1', '2', '3'\]"):
        m.select_folds([7])
    fold3 = m.select_folds(3)  # only glass: the class list of the whole manifest is kept
    assert fold3.label_values() == ["glass"] and fold3.classes == ("glass", "metal", "wood")
    assert _ds(fold3).classes == ["glass", "metal", "wood"]


def test_write_csv_round_trip_to_another_folder(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    m = read_manifest(tree / "manifest.csv")
    m.rows.append(
        ManifestRow("c/glass_tap.wav", ("glass", "tap"), "two labels", "3", {"material": "glass", "action": "tapping"})
    )
    inside = tree / "sub" / "copy.csv"
    m.write_csv(inside)
    outside = tmp_path_factory.mktemp("other") / "copy.csv"
    m.write_csv(outside)
    for path in (inside, outside):
        back = read_manifest(path)
        assert back.factor_names == m.factor_names
        assert [back.resolve(r).resolve() for r in back.rows] == [m.resolve(r).resolve() for r in m.rows]
        assert [(r.labels, r.description, r.fold, dict(r.factors)) for r in back.rows] == [
            (r.labels, r.description, r.fold, dict(r.factors)) for r in m.rows
        ]
    # files below the CSV's folder are written relative to it, others as absolute paths
    written = Path(read_manifest(inside).rows[0].path)
    assert written.is_absolute() and written.resolve() == (tree / "a/wood_tap.wav").resolve()
    m.write_csv(tree / "copy.csv")
    assert read_manifest(tree / "copy.csv").rows[0].path == "a/wood_tap.wav"


@pytest.mark.parametrize(
    ("header", "rows", "pattern"),
    [
        (["label"], [["dog"]], r"bad.csv.*missing required column 'path'"),
        (["label", "fold"], [["dog", "1"]], r"bad.csv.*missing required column 'path'"),
        (["path", "label"], [["", "dog"]], r"bad.csv.*row 1.*missing value in column 'path'"),
        (["path", "label"], [], r"bad.csv.*no rows"),
    ],
)
def test_manifest_format_errors(tmp_path: Path, header: list[str], rows: list[list[str]], pattern: str) -> None:
    with pytest.raises(DatasetError, match=pattern):
        read_manifest(_csv(tmp_path / "bad.csv", header, rows))


def test_load_manifest_sources_and_formats(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert len(load_manifest(tree / "manifest.csv")) == 6
    assert len(load_manifest(tree)) == 6  # a directory holding manifest.csv
    assert len(load_manifest(tree, format="manifest")) == 6
    with pytest.raises(
        DatasetError,
        match=r"unknown dataset format 'esc-51'.*'auto'.*'manifest'.*'esc50'.*'urbansound8k'.*'fsd50k'.*'msos'",
    ):
        load_manifest(tree, format="esc-51")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DatasetError, match="cannot detect the dataset layout.*esc50.csv.*UrbanSound8K.csv.*FSD50K"):
        load_manifest(empty)
    with pytest.raises(DatasetError, match="does not exist"):
        load_manifest(empty / "missing")


# --- ManifestDataset -------------------------------------------------------------------------------


def _ds(m: Manifest, **kw) -> ManifestDataset:
    kw.setdefault("sample_rate", SR)
    kw.setdefault("seconds", 0.05)
    kw.setdefault("progress", False)
    return ManifestDataset(m, **kw)


def test_items_have_the_documented_shapes(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    ds = _ds(m, seconds=0.1)
    assert len(ds) == 6 and ds.classes == ["glass", "metal", "wood"] and ds.num_classes == 3
    item = ds[1]
    assert set(item) == {"audio", "target", "index"}
    assert item["audio"].dtype == torch.float32 and item["audio"].shape == (1, 800)
    assert (
        item["target"].dtype == torch.int64
        and item["target"].shape == ()
        and ds.classes[int(item["target"])] == "metal"
    )
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 1
    assert int(ds[-1]["index"]) == 5
    with pytest.raises(IndexError):
        ds[6]
    stereo = _ds(m, sample_rate=16000, seconds=0.1, channels=2)[0]["audio"]
    assert stereo.shape == (2, 1600) and torch.equal(stereo[0], stereo[1])


def test_evaluation_crops_from_start_and_pads_at_end(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    ds = _ds(m, seconds=0.1)  # 800 samples
    full_long = load_audio(m.resolve(0), SR)  # 900 samples
    full_short = load_audio(m.resolve(1), SR)  # 300 samples
    assert torch.equal(ds[0]["audio"], full_long[:, :800])
    short = ds[1]["audio"]
    assert torch.equal(short[:, :300], full_short) and not short[:, 300:].any()
    ds.set_epoch(5)
    assert torch.equal(ds[0]["audio"], full_long[:, :800])


def test_seconds_none_keeps_full_clips(tree: Path) -> None:
    ds = _ds(read_manifest(tree / "manifest.csv"), seconds=None, sample_rate=16000)
    assert [ds[i]["audio"].shape[-1] for i in range(len(ds))] == [1800, 600, 2400, 1300, 2000, 1600]


def _offset_of(window: torch.Tensor, full: torch.Tensor) -> int:
    n = window.shape[-1]
    for off in range(full.shape[-1] - n + 1):
        if torch.equal(full[:, off : off + n], window):
            return off
    raise AssertionError("window is not a crop of the clip")


def test_training_crops_are_reproducible_and_independent_of_global_rng(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    a = _ds(m, train=True, seconds=0.05, seed=3)  # 400 samples
    b = _ds(m, train=True, seconds=0.05, seed=3)
    offsets = {}
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        torch.manual_seed(epoch)
        np.random.seed(epoch)
        torch_state, np_state = torch.get_rng_state(), np.random.get_state()
        got_a = [a[i]["audio"] for i in range(len(a))]
        assert torch.equal(torch.get_rng_state(), torch_state)  # the global RNGs are not touched
        assert np.array_equal(np.random.get_state()[1], np_state[1])
        torch.manual_seed(1234 + epoch)
        np.random.seed(4321)
        got_b = [b[i]["audio"] for i in reversed(range(len(b)))][::-1]  # other order, other global seeds
        for x, y in zip(got_a, got_b, strict=True):
            assert torch.equal(x, y)
        offsets[epoch] = _offset_of(got_a[0], load_audio(m.resolve(0), SR))
    clip2 = load_audio(m.resolve(2), SR)
    crops = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        crops.add(_offset_of(a[2]["audio"], clip2))
    assert len(crops) > 1  # the offset changes across epochs
    other_seed = _ds(m, train=True, seconds=0.05, seed=4)
    assert any(not torch.equal(other_seed[i]["audio"], a[i]["audio"]) for i in (0, 2, 4))


def test_unknown_label_names_row_label_and_classes(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    with pytest.raises(
        DatasetError, match=r"manifest.csv, file 'b/glass_rub.wav'.*'glass' is not a known class.*'metal', 'wood'"
    ):
        _ds(m, classes=["metal", "wood"])
    ds = _ds(m, classes=["wood", "metal", "glass"])
    assert ds.classes == ["wood", "metal", "glass"] and int(ds[0]["target"]) == 0


def test_declared_class_order_is_used(tree: Path) -> None:
    m = read_manifest(tree / "manifest.csv")
    m.classes = ("wood", "glass", "metal")
    assert _ds(m).classes == ["wood", "glass", "metal"]


def test_factor_column_as_label(tree: Path) -> None:
    ds = _ds(read_manifest(tree / "manifest.csv"), label_column="action")
    assert ds.classes == ["rubbing", "tapping"]
    assert [int(ds[i]["target"]) for i in range(len(ds))] == [1, 1, 0, 0, 0, 1]


def test_multi_label_targets_are_multi_hot(tmp_path: Path) -> None:
    for k in range(3):
        _wav(tmp_path / f"{k}.wav", 200, k)
    _csv(tmp_path / "m.csv", ["path", "label"], [["0.wav", "dog;bark"], ["1.wav", "cat"], ["2.wav", "bark;cat;dog"]])
    m = read_manifest(tmp_path / "m.csv")
    ds = _ds(m, multi_label=True)
    assert ds.classes == ["bark", "cat", "dog"]
    targets = torch.stack([ds[i]["target"] for i in range(3)])
    assert targets.dtype == torch.float32
    assert targets.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 1]]
    with pytest.raises(DatasetError, match="file '0.wav' has 2 labels.*data.multi_label=true"):
        _ds(m)


def test_bad_file_raises_at_construction(tree: Path) -> None:
    (tree / "b" / "glass_rub.wav").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(AudioFileError, match="glass_rub.wav.*unreadable audio header"):
        _ds(read_manifest(tree / "manifest.csv"))


def test_skip_mode_drops_bad_files_and_warns_once(tree: Path) -> None:
    (tree / "b" / "glass_rub.wav").write_bytes(b"\x00garbage" * 100)
    (tree / "a" / "metal_tap.wav").unlink()
    (tree / "c" / "glass_tap.wav").write_bytes(b"")
    with pytest.warns(SkippedAudioWarning, match="skipped 3 of 6") as record:
        ds = _ds(read_manifest(tree / "manifest.csv"), on_error="skip")
    assert len([w for w in record if issubclass(w.category, SkippedAudioWarning)]) == 1
    assert len(ds) == 3
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["glass_rub.wav", "glass_tap.wav", "metal_tap.wav"]
    reasons = dict((Path(p).name, r) for p, r in ds.skipped)
    assert "not found" in reasons["metal_tap.wav"] and "empty" in reasons["glass_tap.wav"]
    assert [r.path for r in ds.rows] == ["a/wood_tap.wav", "b/wood_rub.wav", "b/metal_rub.wav"]
    assert ds.classes == ["glass", "metal", "wood"]  # classes come from the manifest, not the survivors
    assert [ds.classes[int(ds[i]["target"])] for i in range(3)] == ["wood", "wood", "metal"]


@pytest.mark.parametrize(
    "kw",
    [
        {"sample_rate": 0},
        {"sample_rate": 16000.0},
        {"channels": 3},
        {"on_error": "ignore"},
        {"seconds": -1.0},
        {"seconds": 0},
    ],
)
def test_bad_arguments(tree: Path, kw: dict) -> None:
    with pytest.raises(ValueError):
        _ds(read_manifest(tree / "manifest.csv"), **kw)


def test_dataloader_workers_and_pickle(tree: Path) -> None:
    ds = _ds(read_manifest(tree / "manifest.csv"), train=True, seconds=0.05)
    ds.set_epoch(2)
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[3]["audio"], ds[3]["audio"])
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, shuffle=False))
    assert [tuple(b["audio"].shape) for b in batches] == [(4, 1, 400), (2, 1, 400)]
    assert torch.equal(torch.cat([b["audio"] for b in batches]), torch.stack([ds[i]["audio"] for i in range(6)]))
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(6))


def test_an_empty_label_is_an_error_naming_the_file(tmp_path) -> None:
    import numpy as np
    import soundfile as sf

    from audiointerp.datasets import ManifestDataset, read_manifest
    from audiointerp.errors import DatasetError

    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, np.full(800, 0.1, dtype=np.float32), 8000)
    (tmp_path / "m.csv").write_text("path,label,material\na.wav,x,wood\nb.wav,y,\n")
    with pytest.raises(DatasetError, match=r"file 'b.wav': its 'material' is empty"):
        ManifestDataset(read_manifest(tmp_path / "m.csv"), sample_rate=8000, seconds=0.1, label_column="material",
                        classes=["wood", ""])


def test_whole_clips_of_different_lengths_batch_with_their_lengths(tree: Path) -> None:
    """Full clips (seconds=None) are zero-padded to the longest of a batch; `length` gives each clip's samples."""
    from audiointerp.datasets.manifest import collate_clips

    ds = _ds(read_manifest(tree / "manifest.csv"), seconds=None, sample_rate=16000)
    assert ds.collate_fn is collate_clips
    assert _ds(read_manifest(tree / "manifest.csv"), seconds=0.1).collate_fn is None  # fixed crops: default collate
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=ds.collate_fn)))
    assert batch["length"].tolist() == [1800, 600, 2400]
    assert batch["audio"].shape == (3, 1, 2400)
    for k, n in enumerate([1800, 600, 2400]):
        assert torch.equal(batch["audio"][k, :, :n], ds[k]["audio"]) and not batch["audio"][k, :, n:].any()
    assert batch["index"].tolist() == [0, 1, 2]


# --- split checks and format detection (issue 12, point 6) ------------------------------------------------------


def _listing(root: Path, rows: list[tuple[str, str, str]]) -> Manifest:
    """A manifest of (path, label, fold) rows; check_splits never opens the files."""
    return Manifest(root, [ManifestRow(p, (lab,), fold=f) for p, lab, f in rows], source=str(root / "m.csv"))


def test_check_splits_is_silent_on_a_clean_manifest(tree: Path, recwarn: pytest.WarningsRecorder) -> None:
    from audiointerp.datasets.manifest import check_splits

    report = check_splits(read_manifest(tree / "manifest.csv"), ["2"], ["1"], ["3"])
    assert not recwarn.list
    assert report.rows == {"train": 3, "valid": 2, "test": 1}
    assert report.repeated_rows == 0 and report.unselected == {}


def test_a_file_in_two_splits_is_a_leak_naming_file_and_folds(tmp_path: Path) -> None:
    from audiointerp.datasets.manifest import check_splits

    m = _listing(tmp_path, [("a/x.wav", "dog", "1"), ("b/y.wav", "cat", "2"), ("a/../a/x.wav", "dog", "2"),
                            ("b/z.wav", "cat", "3"), ("b/./z.wav", "cat", "1")])
    pattern = (r"2 files are in more than one of the train, valid and test splits.*'a/x.wav'.*"
               r"fold '1' \(valid\).*fold '2' \(train\)")
    with pytest.raises(DatasetError, match=pattern):
        check_splits(m, ["2", "3"], ["1"])
    with pytest.raises(DatasetError, match=pattern):  # the option allows repeats, never a leak
        check_splits(m, ["2", "3"], ["1"], allow_duplicates=True)
    held_out = _listing(tmp_path, [("b/z.wav", "cat", "3"), ("b/y.wav", "cat", "2"), ("b/./z.wav", "cat", "1")])
    with pytest.raises(DatasetError, match=r"1 file is in more than one.*'b/z.wav'.*fold '1' \(valid\).*fold '3' \(test\)"):
        check_splits(held_out, ["2"], ["1"], ["3"])
    # the same file twice within one split is no leak
    ok = _listing(tmp_path, [("a/x.wav", "dog", "2"), ("a/x.wav", "dog", "3"), ("b/y.wav", "cat", "1")])
    with pytest.warns(UserWarning, match="repeat"):
        check_splits(ok, ["2", "3"], ["1"])


def test_a_symlinked_copy_of_a_training_file_is_a_leak(tmp_path: Path) -> None:
    from audiointerp.datasets.manifest import check_splits

    real = _wav(tmp_path / "a" / "x.wav", 100, 0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x_link.wav").symlink_to(real)
    m = _listing(tmp_path, [("a/x.wav", "dog", "2"), ("b/x_link.wav", "dog", "1")])
    with pytest.raises(DatasetError, match=r"1 file is in more than one.*'a/x.wav'.*'b/x_link.wav'"):
        check_splits(m, ["2"], ["1"])


def test_a_file_under_two_labels_is_an_error_unless_duplicates_are_allowed(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    from audiointerp.datasets.manifest import check_splits

    m = _listing(tmp_path, [("x.wav", "dog", "2"), ("y.wav", "cat", "2"), ("x.wav", "cat", "2"), ("v.wav", "cat", "1")])
    with pytest.raises(DatasetError, match=r"1 file is listed under different labels.*'x.wav'.*'dog'.*'cat'.*allow_duplicates"):
        check_splits(m, ["2"], ["1"])
    report = check_splits(m, ["2"], ["1"], allow_duplicates=True)  # on purpose: no label error, no warning
    assert not recwarn.list and report.repeated_rows == 1


def test_repeated_files_and_unused_folds_are_warnings_with_counts(tmp_path: Path) -> None:
    from audiointerp.datasets.manifest import ManifestWarning, check_splits

    m = _listing(tmp_path, [("x.wav", "dog", "2"), ("x.wav", "dog", "2"), ("y.wav", "cat", "2"), ("y.wav", "cat", "2"),
                            ("./y.wav", "cat", "2"), ("v.wav", "cat", "1"), ("u.wav", "cat", "7"), ("t.wav", "dog", "7"),
                            ("s.wav", "dog", "")])
    with pytest.warns(ManifestWarning) as record:
        report = check_splits(m, ["2"], ["1"])
    messages = [str(w.message) for w in record]  # repeats first, then unused folds
    assert len(messages) == 2
    assert re_search(r"3 rows repeat a file listed earlier \(2 files\).*'x.wav'.*'y.wav'", messages[0])
    assert re_search(r"3 of 9 rows are in no selected fold.*fold '7' \(2 rows\).*no fold \(1 row\)", messages[1])
    assert report.repeated_rows == 3 and report.unselected == {"7": 2, "": 1}
    assert report.rows == {"train": 5, "valid": 1, "test": 0}


def re_search(pattern: str, text: str) -> bool:
    import re

    assert re.search(pattern, text, re.S), f"{pattern!r} not in {text!r}"
    return True


def test_a_fold_in_two_fold_lists_is_a_config_error(tree: Path) -> None:
    from audiointerp.datasets.manifest import check_splits
    from audiointerp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"fold\(s\) \['1'\] are in both the train and the valid folds"):
        check_splits(read_manifest(tree / "manifest.csv"), ["1", "2"], [1])


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("label,fold\ndog,1\n", r"missing required column 'path'"),
        ("", r"is empty: expected a header"),
        ("\n\n", r"is empty: expected a header"),
        ("path;label;fold\nx.wav;dog;1\n", r"uses ';' to separate columns.*comma-separated"),
        ("path\tlabel\nx.wav\tdog\n", r"uses tabs to separate columns.*comma-separated"),
    ],
)
def test_auto_format_gives_the_manifest_format_messages(tmp_path: Path, text: str, pattern: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=pattern) as explicit:
        load_manifest(bad, format="manifest")
    with pytest.raises(DatasetError) as auto:
        load_manifest(bad)
    assert str(auto.value) == str(explicit.value)
    assert "bad.csv" in str(auto.value)


def test_auto_format_still_reads_official_metadata_files_and_names_other_files(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(DatasetError, match="neither a generic manifest"):
        load_manifest(other)
    meta = tmp_path / "meta"
    meta.mkdir()
    (tmp_path / "audio").mkdir()
    _wav(tmp_path / "audio" / "1-1-A-0.wav", 100, 0)
    _csv(meta / "esc50.csv", ["filename", "fold", "target", "category"], [["1-1-A-0.wav", "1", "0", "dog"]])
    assert load_manifest(meta / "esc50.csv").rows[0].labels == ("dog",)


def test_a_manifest_needs_only_paths_and_labels_are_checked_where_used(tmp_path: Path) -> None:
    """Issue 14: `path` alone is a manifest (relative to its folder); a dataset without a label column reads it;
    one that is told to use labels names the file whose label is empty."""
    import numpy as np
    import soundfile as sf

    from audiointerp.datasets import ManifestDataset, read_manifest
    from audiointerp.errors import DatasetError

    (tmp_path / "sub").mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / "sub" / name, np.full(800 + 400 * (name == "b.wav"), 0.1, dtype=np.float32), 8000)
    (tmp_path / "paths.csv").write_text("path\nsub/a.wav\nsub/b.wav\n")
    manifest = read_manifest(tmp_path / "paths.csv")
    assert [row.labels for row in manifest.rows] == [(), ()] and [row.fold for row in manifest.rows] == ["", ""]
    assert manifest.resolve(1) == tmp_path / "sub" / "b.wav"  # relative to the manifest's folder
    data = ManifestDataset(manifest, sample_rate=8000, seconds=None, label_column=None, progress=False)
    assert data.classes == [] and int(data[0]["target"]) == -1 and data.clip_samples() == [800, 1200]
    assert [tuple(data[i]["audio"].shape) for i in range(2)] == [(1, 800), (1, 1200)]
    assert ManifestDataset(manifest, sample_rate=16000, seconds=None, label_column=None,
                           progress=False).clip_samples() == [1600, 2400]  # predicted at the dataset's rate
    with pytest.raises(DatasetError, match=r"file 'sub/a.wav': its 'label' is empty.*data.label_column"):
        ManifestDataset(manifest, sample_rate=8000, seconds=None, progress=False)
    (tmp_path / "partial.csv").write_text("path,label,fold\nsub/a.wav,x,1\nsub/b.wav,,1\n")
    partial = read_manifest(tmp_path / "partial.csv")
    assert [row.labels for row in partial.rows] == [("x",), ()]
    with pytest.raises(DatasetError, match=r"file 'sub/b.wav': its 'label' is empty"):
        ManifestDataset(partial, sample_rate=8000, seconds=None, progress=False)
