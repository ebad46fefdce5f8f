"""Tests of the built-in synthetic impact-sound set: layout, determinism, argument checks, acoustics, learnability."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

from audiointerp.datasets import synth
from audiointerp.datasets.synth import ACTIONS, MATERIALS, describe, render_clip, synthesize

SMALL = {"clips_per_class": 5, "sample_rate": 8000, "seconds": 0.25, "progress": False}


def _read_manifest(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("synth") / "set", **SMALL)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The clips' tiny matrix products crawl with a multi-threaded BLAS on a busy machine."""
    with synth._single_threaded_blas():
        yield


# ----------------------------------------------------------------------------------------------------------
# API and data-set layout


def test_factor_names_and_labels() -> None:
    assert MATERIALS == ("wood", "metal", "glass", "stone", "cardboard", "plastic")
    assert ACTIONS == ("tapping", "rubbing", "whirling", "destructing")
    assert len(synth.CLASS_LABELS) == 24 == len(set(synth.CLASS_LABELS))
    assert set(synth.MATERIAL_ACOUSTICS) == set(MATERIALS)
    assert synth.class_label("metal", "tapping") == "metal_tapping"


@pytest.mark.parametrize("material", MATERIALS)
@pytest.mark.parametrize("action", ACTIONS)
def test_render_clip_is_float32_mono_peak_safe_and_audible(material: str, action: str) -> None:
    clip = render_clip(material, action, np.random.default_rng(3), sample_rate=8000, seconds=0.3)
    assert clip.dtype == np.float32 and clip.shape == (2400,)
    assert np.all(np.isfinite(clip))
    assert 0.3 - 1e-6 <= np.max(np.abs(clip)) <= 0.9 + 1e-6
    assert np.sqrt(np.mean(clip.astype(float) ** 2)) > 1e-3


def test_render_clip_depends_only_on_the_generator() -> None:
    first = render_clip("glass", "whirling", np.random.default_rng(11))
    again = render_clip("glass", "whirling", np.random.default_rng(11))
    other = render_clip("glass", "whirling", np.random.default_rng(12))
    assert first.shape == (16000,)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_descriptions_vary_and_read_as_text() -> None:
    rng = np.random.default_rng(0)
    for material in MATERIALS:
        for action in ACTIONS:
            texts = [describe(material, action, rng) for _ in range(30)]
            assert len(set(texts)) >= 10, texts
            for text in texts:
                assert text and text == text.strip().lower() and "{" not in text and "  " not in text
    assert any("cardboard" in describe("cardboard", "rubbing", rng) for _ in range(50))


def test_manifest_columns_rows_and_folds(small_set: Path) -> None:
    columns, rows = _read_manifest(small_set)
    assert columns == ["path", "label", "description", "fold", "material", "action"]
    assert len(rows) == 24 * SMALL["clips_per_class"]
    assert {row["label"] for row in rows} == set(synth.CLASS_LABELS)
    for row in rows:
        assert row["label"] == f"{row['material']}_{row['action']}"
        assert row["path"].startswith("audio/" + row["label"] + "_") and row["path"].endswith(".wav")
        assert row["description"]
    folds_per_class: dict[str, Counter[int]] = {}
    for row in rows:
        folds_per_class.setdefault(row["label"], Counter())[int(row["fold"])] += 1
    for label, folds in folds_per_class.items():
        assert folds == Counter({1: 1, 2: 1, 3: 1, 4: 1, 5: 1}), label
    assert "audio/metal_tapping_0003.wav" in {row["path"] for row in rows}


@pytest.mark.parametrize("clips_per_class", [1, 3, 7, 12, 40])
def test_folds_are_balanced_within_a_class(clips_per_class: int) -> None:
    for class_index in (0, 13):
        counts = Counter(synth._class_folds(5, class_index, clips_per_class))
        assert set(counts) <= {1, 2, 3, 4, 5}
        assert sum(counts.values()) == clips_per_class
        sizes = [counts.get(fold, 0) for fold in range(1, 6)]
        assert max(sizes) - min(sizes) <= 1


def test_audio_files_have_the_requested_format(small_set: Path) -> None:
    _, rows = _read_manifest(small_set)
    audio_files = sorted((small_set.parent / "audio").iterdir())
    assert len(audio_files) == len(rows)
    for row in rows:
        info = sf.info(str(small_set.parent / row["path"]))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 2000, 1, "PCM_16")
    audio, rate = sf.read(str(small_set.parent / rows[0]["path"]), dtype="float32")
    assert rate == 8000 and 0.29 <= np.max(np.abs(audio)) <= 0.9


def test_synthesize_is_deterministic(tmp_path: Path, small_set: Path) -> None:
    again = synthesize(tmp_path / "again", **SMALL)
    reseeded = synthesize(tmp_path / "reseeded", **{**SMALL, "seed": 1})
    reference = _tree_bytes(small_set.parent)
    assert _tree_bytes(again.parent) == reference
    other = _tree_bytes(reseeded.parent)
    assert other.keys() == reference.keys()
    differing = [name for name in reference if name.endswith(".wav") and other[name] != reference[name]]
    assert len(differing) == 24 * SMALL["clips_per_class"]


def _pooled_equals_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str) -> None:
    monkeypatch.setattr(synth, "POOL_MIN_CLIPS", 0)
    monkeypatch.setattr(synth, "CLIPS_PER_TASK", 1)
    monkeypatch.setattr(synth, "POOL_START_METHOD", start_method)
    arguments = {"clips_per_class": 2, "sample_rate": 8000, "seconds": 0.1, "seed": 4, "progress": False}
    in_process = synthesize(tmp_path / "one", workers=1, **arguments)
    pooled = synthesize(tmp_path / "two", workers=2, **arguments)
    assert _tree_bytes(in_process.parent) == _tree_bytes(pooled.parent)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_result_does_not_depend_on_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forked workers start in milliseconds; the spawn variant below checks the start method actually used."""
    _pooled_equals_in_process(tmp_path, monkeypatch, "fork")


@pytest.mark.slow
def test_result_does_not_depend_on_spawned_worker_processes(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _pooled_equals_in_process(tmp_path, monkeypatch, "spawn")


def test_rerun_replaces_an_earlier_set_and_leaves_no_staging(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "set"
    synthesize(out, clips_per_class=2, sample_rate=8000, seconds=0.1, progress=False)
    manifest = synthesize(out, clips_per_class=1, sample_rate=8000, seconds=0.1, progress=True)
    assert "synthesizing" in capsys.readouterr().err
    assert len(_read_manifest(manifest)[1]) == 24
    assert len(list((out / "audio").iterdir())) == 24
    assert sorted(path.name for path in tmp_path.iterdir()) == ["set"]
    assert sorted(path.name for path in out.iterdir()) == ["audio", "manifest.csv"]


def test_an_interrupted_run_keeps_the_earlier_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "set"
    synthesize(out, clips_per_class=1, sample_rate=8000, seconds=0.1, progress=False)
    before = _tree_bytes(out)
    rendered = []

    def render_then_fail(*args: object, **kwargs: object) -> np.ndarray:
        if len(rendered) == 30:
            raise KeyboardInterrupt
        rendered.append(args)
        return render_clip(*args, **kwargs)

    monkeypatch.setattr(synth, "render_clip", render_then_fail)
    with pytest.raises(KeyboardInterrupt):
        synthesize(out, clips_per_class=2, sample_rate=8000, seconds=0.1, progress=False)
    assert _tree_bytes(out) == before
    assert sorted(path.name for path in out.iterdir()) == ["audio", "manifest.csv"]
    with pytest.raises(KeyboardInterrupt):
        rendered.clear()
        synthesize(tmp_path / "new", clips_per_class=2, sample_rate=8000, seconds=0.1, progress=False)
    assert not (tmp_path / "new").exists()


def test_refuses_to_overwrite_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        synthesize(tmp_path, clips_per_class=1, sample_rate=8000, seconds=0.1, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"clips_per_class": 0}, "clips_per_class"),
        ({"clips_per_class": 2.5}, "clips_per_class"),
        ({"sample_rate": 7999}, "sample_rate"),
        ({"sample_rate": 16000.0}, "sample_rate"),
        ({"seconds": 0}, "seconds"),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": float("nan")}, "seconds"),
        ({"seed": -1}, "seed"),
        ({"workers": 0}, "workers"),
    ],
)
def test_synthesize_refuses_bad_arguments(tmp_path: Path, arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        synthesize(tmp_path / "set", **{"clips_per_class": 1, "progress": False, **arguments})
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize(
    "material, action, keywords, message",
    [
        ("rubber", "tapping", {}, "unknown material 'rubber'"),
        ("wood", "kicking", {}, "unknown action 'kicking'"),
        ("wood", "tapping", {"sample_rate": 4000}, "sample_rate"),
        ("wood", "tapping", {"seconds": 0.0}, "seconds"),
    ],
)
def test_render_and_describe_refuse_bad_arguments(material: str, action: str, keywords: dict[str, float],
                                                  message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_clip(material, action, np.random.default_rng(0), **keywords)
    if not keywords:
        with pytest.raises(ValueError, match=message):
            describe(material, action, np.random.default_rng(0))


# ----------------------------------------------------------------------------------------------------------
# acoustics


def test_block_synthesis_matches_the_damped_sinusoid_formula() -> None:
    rng = np.random.default_rng(0)
    frequencies = rng.uniform(50.0, 7000.0, 40)
    decay_rates = rng.uniform(0.5, 400.0, 40)
    amplitudes = rng.uniform(0.1, 1.0, 40)
    phases = rng.uniform(0.0, 2 * np.pi, 40)
    t = np.arange(12345) / 16000
    expected = (amplitudes[:, None] * np.exp(-decay_rates[:, None] * t)
                * np.sin(2 * np.pi * frequencies[:, None] * t + phases[:, None])).sum(axis=0)
    actual = synth._sum_of_damped_sinusoids(frequencies, decay_rates, amplitudes, phases, t.size, 16000)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-9)


def test_material_table_follows_the_design_notes() -> None:
    """Decay at 1 kHz as in DESIGN.md's table, and every fundamental far below Nyquist at 8 kHz."""
    expected_t60 = {"metal": (3.0, 6.0), "glass": (0.7, 1.5), "stone": (0.3, 0.6), "wood": (0.15, 0.3),
                    "plastic": (0.07, 0.15), "cardboard": (0.0, 0.05)}
    for material, (low, high) in expected_t60.items():
        assert low <= synth.MATERIAL_ACOUSTICS[material].decay_time(1000.0) <= high, material
    smallest_size = synth.OBJECT_SIZE_RANGE[0]
    for acoustics in synth.MATERIAL_ACOUSTICS.values():
        assert acoustics.fundamental_hz[1] / smallest_size < 0.45 * synth.MIN_SAMPLE_RATE


def _strongest_peak_loss_factor(response: np.ndarray, sample_rate: int) -> float:
    """tan(phi) = alpha / (pi f) of the loudest spectral peak, from the slope of its log power over time."""
    frequencies, times, power = signal.spectrogram(response, sample_rate, nperseg=512, noverlap=448)
    level_db = 10 * np.log10(power + 1e-30)
    peak_bin = int(np.argmax(level_db[:, 0]))
    track = level_db[peak_bin]
    above = track > track[0] - 40.0
    usable = max(3, int(np.argmin(above)) if not above.all() else track.size)
    slope_db_per_s = np.polyfit(times[:usable], track[:usable], 1)[0]
    alpha = -slope_db_per_s / (20.0 * math.log10(math.e))  # power in dB falls at 20 log10(e) * alpha per s
    return alpha / (math.pi * frequencies[peak_bin])


@pytest.mark.parametrize("material", MATERIALS)
def test_internal_friction_is_recovered_from_the_decay(material: str) -> None:
    acoustics = synth.MATERIAL_ACOUSTICS[material]
    estimates = [
        _strongest_peak_loss_factor(synth._object_response(acoustics, np.random.default_rng(k), 16000, 16000, 1.0),
                                    16000)
        for k in range(6)
    ]
    assert np.median(estimates) == pytest.approx(acoustics.loss_factor, rel=0.25)


def test_modes_stay_below_nyquist() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        response = synth._object_response(synth.MATERIAL_ACOUSTICS["metal"], rng, 8000, 8000, 1.0 / 0.7)
        power = np.abs(np.fft.rfft(response)) ** 2
        frequencies = np.fft.rfftfreq(response.size, 1 / 8000)
        assert power[frequencies > 0.45 * 8000].sum() < 1e-3 * power.sum()


def _ringing_seconds(clip: np.ndarray, sample_rate: int) -> float:
    """How long the 10 ms energy envelope stays within 30 dB of its loudest frame."""
    frame = sample_rate // 100
    energy = np.mean(clip[: clip.size // frame * frame].astype(float).reshape(-1, frame) ** 2, axis=1)
    level_db = 10 * np.log10(energy + 1e-20)
    return float(np.sum(level_db > level_db.max() - 30.0)) * frame / sample_rate


def _spectral_centroid(clip: np.ndarray, sample_rate: int) -> float:
    power = np.abs(np.fft.rfft(clip.astype(float))) ** 2
    return float(np.sum(power * np.fft.rfftfreq(clip.size, 1 / sample_rate)) / np.sum(power))


@pytest.fixture(scope="module")
def tapping_clips() -> dict[str, list[np.ndarray]]:
    with synth._single_threaded_blas():
        return {material: [render_clip(material, "tapping", np.random.default_rng([21, i, k]))
                           for k in range(12)]
                for i, material in enumerate(MATERIALS)}


def test_metal_and_glass_ring_longer_than_wood_and_cardboard(tapping_clips: dict[str, list[np.ndarray]]) -> None:
    ringing = {material: float(np.median([_ringing_seconds(clip, 16000) for clip in clips]))
               for material, clips in tapping_clips.items()}
    assert min(ringing["metal"], ringing["glass"]) > max(ringing["wood"], ringing["cardboard"]) + 0.05, ringing
    assert ringing["metal"] > ringing["glass"] and ringing["wood"] > ringing["cardboard"], ringing
    assert ringing["cardboard"] < 0.3, ringing


def test_cardboard_sounds_duller_than_metal_and_glass(tapping_clips: dict[str, list[np.ndarray]]) -> None:
    centroid = {material: float(np.median([_spectral_centroid(clip, 16000) for clip in clips]))
                for material, clips in tapping_clips.items()}
    assert centroid["cardboard"] < centroid["wood"] < min(centroid["metal"], centroid["glass"]), centroid
    assert centroid["cardboard"] * 2.5 < min(centroid["metal"], centroid["glass"]), centroid


# ----------------------------------------------------------------------------------------------------------
# learnability


def _simple_features(clip: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log band energies (mean and spread over time), spectral peakiness per octave, envelope statistics."""
    frequencies, _, power = signal.spectrogram(clip, sample_rate, nperseg=256, noverlap=128)
    edges = np.geomspace(80.0, 0.45 * sample_rate, 17)
    bands = np.log10(np.stack([power[(frequencies >= low) & (frequencies < high)].sum(axis=0)
                               for low, high in zip(edges[:-1], edges[1:])]) + 1e-10)
    mean_bands = bands.mean(axis=1)
    envelope_db = 10 * np.log10(power.sum(axis=0) + 1e-12)
    envelope_db -= envelope_db.max()
    half = envelope_db.size // 2
    envelope = [np.mean(envelope_db > -threshold) for threshold in (10, 20, 30, 40)]
    envelope += [np.mean(np.abs(np.diff(envelope_db))), envelope_db.std(),
                 envelope_db[:half].mean() - envelope_db[half:].mean()]
    fine_frequencies, fine_power = signal.welch(clip, sample_rate, nperseg=2048)
    fine_db = np.log10(fine_power + 1e-14)
    octaves = np.geomspace(100.0, 0.45 * sample_rate, 9)
    peakiness = []
    for low, high in zip(octaves[:-1], octaves[1:]):
        in_band = fine_db[(fine_frequencies >= low) & (fine_frequencies < high)]
        peakiness.append(in_band.max() - np.median(in_band))
    return np.concatenate([mean_bands - mean_bands.max(), bands.std(axis=1), peakiness, envelope])


def test_material_and_action_are_decodable_from_simple_features() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, materials, actions = [], [], []
    for class_index, label in enumerate(synth.CLASS_LABELS):
        material, action = label.split("_")
        for k in range(10):
            clip = render_clip(material, action, np.random.default_rng([77, class_index, k]))
            features.append(_simple_features(clip, 16000))
            materials.append(material)
            actions.append(action)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    material_accuracy = cross_val_score(model, np.array(features), materials, cv=folds).mean()
    action_accuracy = cross_val_score(model, np.array(features), actions, cv=folds).mean()
    assert material_accuracy > 0.6, material_accuracy  # chance 1/6
    assert action_accuracy > 0.6, action_accuracy  # chance 1/4
