"""Official dataset layouts (audiointerp.datasets.readers) built as tiny trees with generated audio."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiointerp.datasets.manifest import ManifestDataset
from audiointerp.datasets.readers import load_manifest, read_esc50, read_fsd50k, read_msos, read_urbansound8k
from audiointerp.errors import DatasetError


def _wav(path: Path, seed: int, n: int = 300, sr: int = 44100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).uniform(-0.3, 0.3, n).astype(np.float32)
    sf.write(str(path), data, sr)


def _csv(path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        if header is not None:
            w.writerow(header)
        w.writerows(rows)
    return path


def _dataset(m, **kw) -> ManifestDataset:
    return ManifestDataset(m, sample_rate=16000, seconds=0.02, progress=False, **kw)


# --- ESC-50 ------------------------------------------------------------------------------------

ESC50_ROWS = [
    ["1-100032-A-0.wav", "1", "0", "dog", "True", "100032", "A"],
    ["1-100038-A-14.wav", "1", "14", "chirping_birds", "False", "100038", "A"],
    ["2-100648-A-43.wav", "2", "43", "car_horn", "False", "100648", "A"],
    ["2-102414-B-0.wav", "2", "0", "dog", "True", "102414", "B"],
    ["5-103415-A-14.wav", "5", "14", "chirping_birds", "False", "103415", "A"],
]


@pytest.fixture()
def esc50(tmp_path: Path) -> Path:
    root = tmp_path / "ESC-50-master"
    _csv(
        root / "meta" / "esc50.csv", ESC50_ROWS, ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
    )
    for k, row in enumerate(ESC50_ROWS):
        _wav(root / "audio" / row[0], k)
    return root


def test_esc50(esc50: Path) -> None:
    m = load_manifest(esc50)
    assert len(m) == 5 and m.root == esc50
    row = m.rows[1]
    assert row.path == "audio/1-100038-A-14.wav" and row.labels == ("chirping_birds",)
    assert row.fold == "1" and row.description == "chirping birds"
    assert {k: row.factors[k] for k in ("esc10", "target", "take")} == {"esc10": "False", "target": "14", "take": "A"}
    assert set(m.factor_names) >= {"esc10", "target", "take"}
    assert m.classes == ("dog", "chirping_birds", "car_horn")  # official target order
    assert m.label_values() == ["car_horn", "chirping_birds", "dog"]
    assert [r.fold for r in m.select_folds([2, 5]).rows] == ["2", "2", "5"]
    assert len(load_manifest(esc50, format="esc50")) == 5
    assert len(load_manifest(esc50 / "meta" / "esc50.csv")) == 5  # the metadata file itself
    ds = _dataset(m.select_folds([1]))
    assert ds.classes == ["dog", "chirping_birds", "car_horn"]
    item = ds[1]
    assert item["audio"].shape == (1, 320) and int(item["target"]) == 1


def test_esc50_bad_layout(esc50: Path) -> None:
    (esc50 / "meta" / "esc50.csv").unlink()
    with pytest.raises(DatasetError, match=r"ESC-50 layout: missing .*meta/esc50.csv"):
        read_esc50(esc50)
    with pytest.raises(DatasetError, match=r"ESC-50 layout: missing .*meta/esc50.csv"):
        load_manifest(esc50, format="esc50")


def test_esc50_bad_metadata(tmp_path: Path) -> None:
    root = tmp_path / "esc"
    (root / "audio").mkdir(parents=True)
    _csv(
        root / "meta" / "esc50.csv",
        [["x.wav", "1", "0", "dog"], ["y.wav", "1", "0", "cat"]],
        ["filename", "fold", "target", "category"],
    )
    with pytest.raises(DatasetError, match=r"esc50.csv.*row 2: target 0 is 'cat' here but 'dog' earlier"):
        read_esc50(root)
    _csv(root / "meta" / "esc50.csv", [["x.wav", "1", "0"]], ["filename", "fold", "target"])
    with pytest.raises(DatasetError, match=r"esc50.csv.*missing column 'category'"):
        read_esc50(root)


# --- UrbanSound8K ------------------------------------------------------------------------------

US8K_ROWS = [
    ["100032-3-0-0.wav", "100032", "0.0", "0.317551", "1", "5", "3", "dog_bark"],
    ["100263-2-0-117.wav", "100263", "58.5", "62.5", "1", "5", "2", "children_playing"],
    ["101415-3-0-2.wav", "101415", "1.0", "5.0", "2", "1", "3", "dog_bark"],
    ["102305-6-0-0.wav", "102305", "0.0", "2.61", "1", "10", "6", "gun_shot"],
]


@pytest.fixture()
def us8k(tmp_path: Path) -> Path:
    root = tmp_path / "UrbanSound8K"
    header = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
    _csv(root / "metadata" / "UrbanSound8K.csv", US8K_ROWS, header)
    for k, row in enumerate(US8K_ROWS):
        _wav(root / "audio" / f"fold{row[5]}" / row[0], k, sr=22050)
    return root


def test_urbansound8k(us8k: Path) -> None:
    m = load_manifest(us8k)
    assert len(m) == 4
    assert [r.path for r in m.rows][:2] == ["audio/fold5/100032-3-0-0.wav", "audio/fold5/100263-2-0-117.wav"]
    assert m.resolve(m.rows[3]) == us8k / "audio" / "fold10" / "102305-6-0-0.wav"
    assert [r.fold for r in m.rows] == ["5", "5", "1", "10"]
    assert m.rows[0].labels == ("dog_bark",) and m.rows[0].description == "dog bark"
    assert m.rows[0].factors["fsID"] == "100032" and m.rows[0].factors["salience"] == "1"
    assert m.classes == ("children_playing", "dog_bark", "gun_shot")  # classID 2, 3, 6
    ds = _dataset(m.select_folds(["10"]))
    assert ds.classes[int(ds[0]["target"])] == "gun_shot"


def test_urbansound8k_bad_layout(us8k: Path) -> None:
    with pytest.raises(DatasetError, match=r"ESC-50 layout: missing .*meta/esc50.csv"):
        load_manifest(us8k, format="esc50")
    (us8k / "metadata" / "UrbanSound8K.csv").rename(us8k / "metadata" / "other.csv")
    with pytest.raises(DatasetError, match=r"UrbanSound8K layout: missing .*metadata/UrbanSound8K.csv"):
        read_urbansound8k(us8k)


# --- FSD50K ------------------------------------------------------------------------------------

VOCAB = [
    ["0", "Accelerating_and_revving_and_vroom", "/m/07q2z82"],
    ["1", "Bark", "/m/05tny_"],
    ["2", "Dog", "/m/0bt9lr"],
    ["3", "Animal", "/m/0jbk"],
]


@pytest.fixture()
def fsd50k(tmp_path: Path) -> Path:
    root = tmp_path / "FSD50K"
    gt = root / "FSD50K.ground_truth"
    _csv(gt / "vocabulary.csv", VOCAB)
    _csv(
        gt / "dev.csv",
        [
            ["64760", "Bark,Dog,Animal", "/m/05tny_,/m/0bt9lr,/m/0jbk", "train"],
            ["16399", "Accelerating_and_revving_and_vroom", "/m/07q2z82", "val"],
        ],
        ["fname", "labels", "mids", "split"],
    )
    _csv(gt / "eval.csv", [["37199", "Dog,Animal", "/m/0bt9lr,/m/0jbk"]], ["fname", "labels", "mids"])
    for k, name in enumerate(["64760", "16399"]):
        _wav(root / "FSD50K.dev_audio" / f"{name}.wav", k)
    _wav(root / "FSD50K.eval_audio" / "37199.wav", 9)
    return root


def test_fsd50k(fsd50k: Path) -> None:
    m = load_manifest(fsd50k)
    assert [r.path for r in m.rows] == [
        "FSD50K.dev_audio/64760.wav",
        "FSD50K.dev_audio/16399.wav",
        "FSD50K.eval_audio/37199.wav",
    ]
    assert [r.fold for r in m.rows] == ["train", "val", "eval"]
    assert m.rows[0].labels == ("Bark", "Dog", "Animal")
    assert m.rows[0].factors["mids"] == "/m/05tny_,/m/0bt9lr,/m/0jbk"
    assert m.rows[1].description == "Accelerating and revving and vroom"
    assert m.classes == ("Accelerating_and_revving_and_vroom", "Bark", "Dog", "Animal")  # vocabulary order
    ds = _dataset(m, multi_label=True)
    assert torch.stack([ds[i]["target"] for i in range(3)]).tolist() == [[0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 1, 1]]
    assert len(load_manifest(fsd50k / "FSD50K.ground_truth" / "dev.csv", format="fsd50k")) == 3
    with pytest.raises(DatasetError, match="64760.wav' has 3 labels.*data.multi_label=true"):
        _dataset(m)


def test_fsd50k_errors(fsd50k: Path) -> None:
    gt = fsd50k / "FSD50K.ground_truth"
    _csv(gt / "eval.csv", [["37199", "Dog,Cat", "x"]], ["fname", "labels", "mids"])
    with pytest.raises(DatasetError, match=r"eval.csv.*row 1: label 'Cat' is not in .*vocabulary.csv"):
        read_fsd50k(fsd50k)
    (gt / "vocabulary.csv").unlink()
    with pytest.raises(DatasetError, match=r"FSD50K layout: missing .*vocabulary.csv"):
        load_manifest(fsd50k)


def test_fsd50k_dev_only_and_missing_audio_folder(fsd50k: Path) -> None:
    (fsd50k / "FSD50K.ground_truth" / "eval.csv").unlink()
    assert [r.fold for r in read_fsd50k(fsd50k).rows] == ["train", "val"]
    (fsd50k / "FSD50K.dev_audio").rename(fsd50k / "elsewhere")
    with pytest.raises(DatasetError, match=r"FSD50K layout: missing folder .*FSD50K.dev_audio"):
        read_fsd50k(fsd50k)


# --- MSOS --------------------------------------------------------------------------------------

MSOS_DEV = [
    ["Effects", "Beep", "e001.wav"],
    ["Human", "Laughter", "h001.wav"],
    ["Music", "Guitar", "m001.wav"],
    ["Nature", "Birds", "n001.wav"],
    ["Urban", "Traffic", "u001.wav"],
    ["Nature", "Rain", "n002.wav"],
]
MSOS_EVAL = [["x01.wav", "Dog", "Nature"], ["x02.wav", "Siren", "Urban"]]


def _msos_tree(base: Path) -> tuple[Path, Path]:
    """The released archives side by side: development (per-category folders) and evaluation (flat)."""
    dev = base / "MSoS_challenge_2018_Development_v1-00"
    _csv(dev / "Logsheet_Development.csv", MSOS_DEV, ["Category", "Event", "File"])
    for k, (cat, _, name) in enumerate(MSOS_DEV):
        _wav(dev / "Development" / cat / name, k)
    ev = base / "MSoS_challenge_2018_Evaluation_v1-00"
    _csv(ev / "Logsheet_EvaluationMaster.csv", MSOS_EVAL, ["File", "Event", "Category"])
    _csv(ev / "Logsheet_Evaluation.csv", [[r[0]] for r in MSOS_EVAL], ["File"])
    for k, row in enumerate(MSOS_EVAL):
        _wav(ev / "Evaluation" / row[0], 10 + k)
    return dev, ev


def test_msos_development_archive(tmp_path: Path) -> None:
    dev, _ = _msos_tree(tmp_path)
    m = load_manifest(dev)
    assert len(m) == 6 and {r.fold for r in m.rows} == {"development"}
    assert m.rows[0].path == "Development/Effects/e001.wav"
    assert m.rows[0].labels == ("Effects",) and m.rows[0].factors == {"event": "Beep"}
    assert m.rows[0].description == "Beep"
    assert m.label_values() == ["Effects", "Human", "Music", "Nature", "Urban"]
    assert m.label_values("event") == ["Beep", "Birds", "Guitar", "Laughter", "Rain", "Traffic"]
    ds = _dataset(m)
    assert ds.classes[int(ds[5]["target"])] == "Nature"
    assert len(load_manifest(dev / "Logsheet_Development.csv")) == 6


def test_msos_both_archives_side_by_side(tmp_path: Path) -> None:
    _msos_tree(tmp_path)
    m = load_manifest(tmp_path, format="msos")
    assert len(m) == 8
    ev = m.select_folds(["evaluation"])
    assert [r.path for r in ev.rows] == [
        "MSoS_challenge_2018_Evaluation_v1-00/Evaluation/x01.wav",
        "MSoS_challenge_2018_Evaluation_v1-00/Evaluation/x02.wav",
    ]
    assert [r.labels[0] for r in ev.rows] == ["Nature", "Urban"]
    assert all(m.resolve(r).is_file() for r in m.rows)
    assert len(_dataset(m)) == 8


def test_msos_variants(tmp_path: Path) -> None:
    root = tmp_path / "msos"
    # lower-case header, files flat in Development/ (no category folder)
    _csv(root / "logsheet_development.csv", [["Music", "Piano", "p1.wav"]], ["category", "event", "file"])
    _wav(root / "Development" / "p1.wav", 1)
    m = read_msos(root)
    assert m.rows[0].path == "Development/p1.wav" and m.rows[0].labels == ("Music",)
    # headerless logsheet read as Category, Event, File; audio next to it in category folders
    headerless = tmp_path / "headerless"
    _csv(headerless / "Logsheet_Development.csv", [["Human", "Cough", "c1.wav"], ["Urban", "Horn", "c2.wav"]])
    _wav(headerless / "Human" / "c1.wav", 2)
    _wav(headerless / "Urban" / "c2.wav", 3)
    m = read_msos(headerless)
    assert [r.path for r in m.rows] == ["Human/c1.wav", "Urban/c2.wav"] and m.rows[1].factors["event"] == "Horn"
    # an evaluation logsheet without an event column
    no_event = tmp_path / "noevent"
    _csv(no_event / "Logsheet_EvaluationMaster.csv", [["z.wav", "Effects"]], ["File", "Category"])
    _wav(no_event / "Evaluation" / "z.wav", 4)
    m = read_msos(no_event)
    assert (
        m.rows[0].path == "Evaluation/z.wav" and m.rows[0].factors == {"event": ""} and m.rows[0].fold == "evaluation"
    )


def test_msos_bad_layout(tmp_path: Path) -> None:
    unlabelled = tmp_path / "eval_only"
    _csv(unlabelled / "Logsheet_Evaluation.csv", [["x01.wav"]], ["File"])
    with pytest.raises(DatasetError, match="MSOS layout: no labelled logsheet.*Logsheet_Development.csv"):
        load_manifest(unlabelled)
    bad = tmp_path / "bad"
    _csv(bad / "Logsheet_Development.csv", [["a", "b"]], ["Name", "Class"])
    with pytest.raises(DatasetError, match=r"Logsheet_Development.csv.*expected columns Category, Event, File"):
        read_msos(bad)
    with pytest.raises(DatasetError, match="MSOS layout: no labelled logsheet"):
        read_msos(unlabelled)


def test_auto_detection_failure_lists_layouts(tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    with pytest.raises(DatasetError, match="cannot detect.*esc50: meta/esc50.csv.*msos: Logsheet_Development.csv"):
        load_manifest(tmp_path)
