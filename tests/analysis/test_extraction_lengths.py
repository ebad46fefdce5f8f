"""`extract` over real-world shapes: clips from 0.3 s to 12 s in one manifest of paths only (issue 14, point 3).

Each store is checked against every clip processed alone (`layer_activations` on that clip by itself, padded to
the network's minimum input, in windows for a fixed-length network), averaged over the layer's time axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import soundfile as sf
import torch

import audiointerp.analysis.extraction as extraction
from audiointerp.analysis.extraction import ExtractSettings, extract, layer_activations, length_profile
from audiointerp.datasets.lengths import length_batches, pad_batch, patch_counts
from audiointerp.datasets.manifest import ManifestDataset, read_manifest
from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.models import build, build_pipeline
from audiointerp.models.frontends import AudioPipeline
from audiointerp.models.registry import build_frontend

SECONDS = (0.3, 12.0, 1.3, 0.3, 2.9, 5.0, 1.3, 0.7)  # repeats share a batch; 12 s needs PaSST windows below
RATE = 16000
BEATS_TINY = {"embed_dim": 32, "dim": 32, "ffn": 64, "heads": 2, "layers": 2, "conv_pos": 16, "conv_groups": 4}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest of paths only (relative, in a sub-folder) over clips of 0.3 s to 12 s."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    lines = ["path"]
    for k, seconds in enumerate(SECONDS):
        n = int(seconds * RATE)
        t = np.arange(n) / RATE
        clip = 0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t) * np.exp(-t) + 0.05 * rng.standard_normal(n)
        sf.write(root / "audio" / f"clip{k}.wav", clip.astype(np.float32), RATE)
        lines.append(f"audio/clip{k}.wav")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root / "manifest.csv"


def alone(pipeline: Any, manifest: Path, layer: str, pooling: str, max_seconds: Optional[float] = None) -> np.ndarray:
    """Every clip processed by itself: its windows (a fixed-length network, or `max_seconds`) run one at a time,
    each padded to the network's minimum input; `time`: the mean over the patch axis and the layer's time axes
    (every window's positions together); `mean`: the mean over the clip's patches."""
    profile = extraction.limit_input(length_profile(pipeline, [layer]), max_seconds, int(pipeline.frontend.sample_rate))
    data = ManifestDataset(read_manifest(manifest), sample_rate=int(pipeline.frontend.sample_rate), seconds=None,
                           label_column=None, progress=False)
    rows = []
    for i in range(len(data)):
        audio = data[i]["audio"]
        window = profile.window_samples or audio.shape[-1]
        parts = []
        for start in range(0, audio.shape[-1], window):
            piece = audio[..., start:start + window]
            if piece.shape[-1] < profile.min_samples:
                piece = torch.nn.functional.pad(piece, (0, profile.min_samples - piece.shape[-1]))
            parts.append(layer_activations(pipeline, piece[None], [layer])[layer][0].double())
        if pooling == "mean":
            assert len(parts) == 1
            rows.append(parts[0].mean(0).flatten().numpy())
            continue
        axes = [0, *(a + 1 for a in profile.time_axes[layer])]
        total = sum(p.sum(dim=axes).flatten() for p in parts)
        count = sum(int(np.prod([p.shape[a] for a in axes])) for p in parts)
        rows.append((total / count).numpy())
    return np.stack(rows)


def settings(model: str, manifest: Path, layers: list[str], **kw: Any) -> ExtractSettings:
    return ExtractSettings(model=model, data=str(manifest), layers=layers, chunk_size=5, **kw)


def check(out: Path, pipeline: Any, manifest: Path, layers: list[str], pooling: str = "time") -> ActivationStore:
    store = ActivationStore(out)
    for layer in layers:
        np.testing.assert_allclose(store.load(layer), alone(pipeline, manifest, layer, pooling), rtol=1e-5, atol=1e-5)
    return store


@pytest.mark.parametrize(("model", "kw", "layers"), [
    ("small_cnn", {"num_classes": 3}, ["block1", "block4", "embedding", "logits"]),
    ("mn01", {}, ["block0", "block16", "logits"]),
])
def test_cnns_store_the_time_mean_of_each_clip_processed_alone(mixed: Path, tmp_path: Path, model: str,
                                                                 kw: dict, layers: list[str]) -> None:
    torch.manual_seed(0)
    out = extract(settings(model, mixed, layers, pooling="time", **kw), tmp_path / "store", progress=False)
    torch.manual_seed(0)
    pipeline = build_pipeline(model, **({"num_classes": 3} if kw else {})).eval()
    store = check(out, pipeline, mixed, layers)
    assert store.shape("block1" if model == "small_cnn" else "block0")[0] % 8 == 0  # [C * F]: one vector per clip
    assert store.meta["lengths"]["time_axes"][layers[0]] == [2] and store.meta["lengths"]["time_axes"]["logits"] == []
    assert [row["samples"] for row in store.clips] == [str(int(s * RATE) * (2 if model == "mn01" else 1))
                                                        for s in SECONDS]


def test_max_input_seconds_runs_long_recordings_in_windows_of_that_length(mixed: Path, tmp_path: Path) -> None:
    """A CNN takes any length; `--max-input-seconds 2` runs the 12 s, 5 s and 2.9 s clips in 2 s windows (memory
    bounded for long recordings): each stored row is the time mean over its windows processed one by one, which
    differs from the whole clip's (edge frames) only for the windowed clips. Shorter clips are unchanged."""
    layers = ["block2", "embedding"]
    torch.manual_seed(0)
    out = extract(settings("small_cnn", mixed, layers, pooling="time", num_classes=3, max_input_seconds=2.0),
                  tmp_path / "store", progress=False)
    torch.manual_seed(0)
    pipeline = build_pipeline("small_cnn", num_classes=3).eval()
    store = ActivationStore(out)
    assert [row["windows"] for row in store.clips] == ["1", "6", "1", "1", "2", "3", "1", "1"]
    assert store.meta["max_input_seconds"] == 2.0 and store.meta["lengths"]["window_samples"] == 2 * RATE
    windowed, whole = alone(pipeline, mixed, "block2", "time", 2.0), alone(pipeline, mixed, "block2", "time")
    np.testing.assert_allclose(store.load("block2"), windowed, rtol=1e-5, atol=1e-5)
    difference = np.abs(windowed - whole).max(axis=1)
    assert np.all(difference[[0, 2, 3, 6, 7]] == 0) and np.all(difference[[1, 4, 5]] > 1e-4)  # the edges' frames
    with pytest.raises(StoreError, match="max-input-seconds 0.0001 is shorter than the network's minimum input"):
        extract(settings("small_cnn", mixed, layers, pooling="time", num_classes=3, max_input_seconds=0.0001),
                tmp_path / "too-short", progress=False)
    with pytest.raises(StoreError, match="longer than the network's input or --max-input-seconds"):
        extract(settings("small_cnn", mixed, ["logits"], pooling="none", num_classes=3, max_input_seconds=2.0),
                tmp_path / "none", progress=False)  # windows' rows cannot share one array without time pooling


def test_a_long_clip_run_whole_is_warned_about(mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(extraction, "LONG_CLIP_SECONDS", 10)  # the 12 s clip counts as long here
    with caplog.at_level("WARNING", logger="audiointerp"):
        extract(settings("small_cnn", mixed, ["embedding"], pooling="time", num_classes=3), tmp_path / "s", progress=False)
    assert "clip1.wav (0.2 min) runs through the network whole" in caplog.text and "--max-input-seconds" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="audiointerp"):
        extract(settings("small_cnn", mixed, ["embedding"], pooling="time", num_classes=3, max_input_seconds=4.0),
                tmp_path / "w", progress=False)
    assert "runs through the network whole" not in caplog.text


def test_yamnet_patches_batch_padded_and_mean_pooling_works_over_lengths(mixed: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    layers = ["layer3", "embedding"]
    mean = extract(settings("yamnet", mixed, layers, pooling="mean", num_classes=3), tmp_path / "mean", progress=False)
    torch.manual_seed(0)
    timed = extract(settings("yamnet", mixed, layers, pooling="time", num_classes=3), tmp_path / "time", progress=False)
    torch.manual_seed(0)
    pipeline = build_pipeline("yamnet", num_classes=3).eval()
    store = check(mean, pipeline, mixed, ["embedding"], pooling="mean")
    assert store.shape("layer3") == (128, 24, 16)  # mean over patches keeps the patch shape (forward_from takes it)
    check(timed, pipeline, mixed, layers)
    padded = [row["padded"] for row in store.clips]  # under 0.975 s: padded to one VGGish example
    assert padded == ["1", "0", "0", "1", "0", "0", "0", "1"] and store.meta["lengths"]["padded_clips"] == 3


def zoo_pipeline(monkeypatch: pytest.MonkeyPatch, mixed: Path, name: str, **params: Any) -> Any:
    """A zoo pipeline built with `params` (the smallest settings), which `extract` then uses for model `name`
    (its command builds zoo models at their default size)."""
    torch.manual_seed(0)
    pipeline = AudioPipeline(build_frontend(name), build(name, num_classes=3, **params)).eval()
    _, identity = extraction.load_model(settings("small_cnn", mixed, ["embedding"], num_classes=3), 3)
    identity = {**identity, "model": name, "network": name, "network_layers": pipeline.network.layer_names(),
                "frontend": {**identity["frontend"], "sample_rate": int(pipeline.frontend.sample_rate)}}
    monkeypatch.setattr(extraction, "load_model", lambda s, n: (pipeline, identity))
    return pipeline


def test_beats_tokens_are_averaged_over_time(mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = zoo_pipeline(monkeypatch, mixed, "beats", **BEATS_TINY)
    assert length_profile(pipeline, ["layer1", "logits"]).time_axes == {"layer1": [0], "logits": []}
    out = extract(settings("beats", mixed, ["layer1", "logits"], pooling="time"), tmp_path / "store", progress=False)
    check(out, pipeline, mixed, ["layer1", "logits"])


@pytest.mark.slow
def test_passt_runs_long_clips_in_windows_of_its_input_length(mixed: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = zoo_pipeline(monkeypatch, mixed, "passt", input_tdim=300)
    layers = ["blocks.0", "embedding"]
    out = extract(settings("passt", mixed, layers, pooling="time"), tmp_path / "store", progress=False)
    with pytest.raises(StoreError, match=r"longer than the network's input .*--pooling time"):
        extract(settings("passt", mixed, ["embedding"], pooling="mean"), tmp_path / "refused", progress=False)
    store = check(out, pipeline, mixed, layers)
    assert store.meta["lengths"]["window_samples"] == 96000  # 300 frames of 10 ms at 32 kHz
    assert [row["windows"] for row in store.clips] == ["1", "4", "1", "1", "1", "2", "1", "1"]


def test_an_export_extracts_mixed_lengths(mixed: Path, tmp_path: Path, tiny_overrides: list[str]) -> None:
    from audiointerp import load_export
    from audiointerp.train.config import load_config
    from audiointerp.train.export import export_run
    from audiointerp.train.trainer import Trainer

    run = Trainer(load_config("classifier", [*tiny_overrides, "train.max_steps=1"])).fit().run_dir
    export = export_run(run)
    layers = ["block2", "logits"]
    out = extract(settings(str(export), mixed, layers, pooling="time"), tmp_path / "store", progress=False)
    check(out, load_export(export).eval(), mixed, layers)


def test_fixed_shape_poolings_refuse_mixed_lengths_before_writing(mixed: Path, tmp_path: Path) -> None:
    for pooling in ("none", "mean"):
        with pytest.raises(StoreError, match=r"clips of different lengths .*clip0.wav.*clip1.wav.*--pooling time"):
            extract(settings("small_cnn", mixed, ["block2"], pooling=pooling, num_classes=3), tmp_path / pooling,
                    progress=False)
        assert not (tmp_path / pooling).exists()
    with pytest.raises(StoreError, match=r"different patch counts.*--pooling mean"):
        extract(settings("yamnet", mixed, ["embedding"], pooling="none", num_classes=3), tmp_path / "y", progress=False)


def test_a_window_longer_than_a_clips_patches_is_refused_before_writing(mixed: Path, tmp_path: Path) -> None:
    """`--pooling window` over more patches than the shortest clip holds failed in `pool` after earlier chunks were
    written; it is refused before anything is, naming the clip."""
    with pytest.raises(StoreError, match=r"--pooling window needs 3 patches .* gives 1"):
        extract(settings("yamnet", mixed, ["embedding"], pooling="window", window=3, num_classes=3),
                tmp_path / "w", progress=False)
    assert not (tmp_path / "w").exists()


def test_a_failing_clip_is_named_and_the_store_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    root.mkdir()
    for k in range(12):
        clip = 0.1 * np.random.default_rng(k).standard_normal(RATE // 2 + 100 * k)
        sf.write(root / f"c{k}.wav", clip.astype(np.float32), RATE)
    (root / "m.csv").write_text("path\n" + "".join(f"c{k}.wav\n" for k in range(12)), encoding="utf-8")
    original = extraction.layer_activations

    def failing(pipeline: Any, waveforms: torch.Tensor, layers: Any) -> Any:
        if waveforms.shape[-1] == RATE // 2 + 700:  # clip 7, in the second chunk
            raise RuntimeError("out of memory")
        return original(pipeline, waveforms, layers)

    monkeypatch.setattr(extraction, "layer_activations", failing)
    chosen = settings("small_cnn", root / "m.csv", ["embedding"], pooling="time", num_classes=3)
    with pytest.raises(StoreError, match=r"chunk 1: the network failed on clip 7 \(.*c7.wav, 0.54 s\).*out of memory"):
        extract(chosen, tmp_path / "store", progress=False)
    with pytest.raises(StoreError, match="incomplete"):  # analyses refuse it
        ActivationStore(tmp_path / "store")
    monkeypatch.setattr(extraction, "layer_activations", original)
    out = extract(chosen, tmp_path / "store", progress=False)  # the same command finishes it
    assert ActivationStore(out).load("embedding").shape == (12, 256)


def test_length_batches_group_equal_lengths_and_padding_keeps_each_clips_patches() -> None:
    assert length_batches([5, 9, 5, 9, 3], 2) == [[1, 3], [0, 2], [4]]
    assert length_batches([5, 9, 5, 9, 3], 2, pad=True) == [[1, 3], [0, 2], [4]]
    assert length_batches([5, 9, 6, 3], 3, pad=True) == [[1, 2, 0], [3]]
    audio, lengths = pad_batch([torch.ones(1, 3), torch.ones(1, 5)])
    assert audio.shape == (2, 1, 5) and lengths.tolist() == [3, 5] and audio[0, 0, 3:].abs().sum() == 0
    frontend = build_pipeline("yamnet", num_classes=2).frontend
    assert patch_counts(frontend, [100, 16000, 40000], 4) == [1, 1, 4 if frontend.num_patches(40000) >= 4 else
                                                               frontend.num_patches(40000)]
    assert patch_counts(torch.nn.Identity(), [1, 2], 3) == [3, 3]


def test_the_command_takes_pooling_time_and_explains_the_refusal(mixed: Path, tmp_path: Path, capsys) -> None:
    from audiointerp.cli import main

    common = ["extract", "--model", "small_cnn", "--num-classes", "3", "--data", str(mixed), "--layers",
              "block1,embedding,logits", "--quiet"]
    assert main([*common, "--pooling", "mean", "--out", str(tmp_path / "mean")]) == 2  # the command
    assert "--pooling time" in capsys.readouterr().err and not (tmp_path / "mean").exists()
    assert main([*common, "--pooling", "time", "--out", str(tmp_path / "time")]) == 0
    store = ActivationStore(tmp_path / "time")
    assert store.load("logits").shape == (len(SECONDS), 3) and store.shape("block1") == (32 * 32,)
