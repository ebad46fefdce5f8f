from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from audiointerp.models import available_frontends, available_models, build, build_frontend, build_pipeline
from audiointerp.models.frontends import AudioPipeline
from audiointerp.models.vggish import VGGishFrontend, VGGishNet

TINY = {"widths": [4, 8, 8, 16], "embedding_dim": 16}
VARIANTS = [("semdnn", 300), ("catdnn", 37), ("cae", None)]


def reference_examples(audio: np.ndarray, log_offset: float = 0.01, hop_frames: int = 96) -> np.ndarray:
    """VGGish log-mel examples in float64 numpy, written from the algorithm's description (mel_features.py)."""
    sample_rate, window, hop, n_fft, n_mels = 16000, 400, 160, 512, 64
    n_frames = 1 + (len(audio) - window) // hop
    frames = np.stack([audio[i * hop : i * hop + window] for i in range(n_frames)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    magnitude = np.abs(np.fft.rfft(frames * hann, n_fft))

    def mel(hz: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)

    bin_mel = mel(np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), n_mels + 2)
    weights = np.zeros((len(bin_mel), n_mels))
    for band in range(n_mels):
        low, centre, high = edges[band : band + 3]
        weights[:, band] = np.clip(np.minimum((bin_mel - low) / (centre - low), (high - bin_mel) / (high - centre)), 0, None)
    weights[0] = 0.0
    log_mel = np.log(magnitude @ weights + log_offset)
    n_examples = 1 + (len(log_mel) - 96) // hop_frames
    return np.stack([log_mel[i * hop_frames : i * hop_frames + 96] for i in range(n_examples)])


def test_registered_with_the_vggish_front_end() -> None:
    assert {"semdnn", "catdnn", "cae"} <= set(available_models())
    assert "vggish" in available_frontends()
    for name in ("semdnn", "catdnn", "cae", "vggish"):
        front = build_frontend(name)
        assert isinstance(front, VGGishFrontend) and front.sample_rate == 16000


def test_log_mel_matches_a_numpy_reference_of_vggish() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(2.3 * 16000)) / 16000
    noise = (0.3 * rng.standard_normal(len(t))).astype(np.float32)
    tones = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    front = VGGishFrontend()
    # float32 (the default) on a broadband clip
    got = front(torch.from_numpy(noise)[None])[0, :, 0].numpy()
    np.testing.assert_allclose(got, reference_examples(noise.astype(np.float64)), atol=1e-4, rtol=0)
    # tonal clips leave bands near the log floor, where float32 rounding shows (~5e-4); float64 is exact
    got = front(torch.from_numpy(tones)[None])[0, :, 0].numpy()
    np.testing.assert_allclose(got, reference_examples(tones), atol=1e-8, rtol=0)
    got32 = front(torch.from_numpy(tones).float()[None])[0, :, 0].numpy()
    np.testing.assert_allclose(got32, reference_examples(tones.astype(np.float32).astype(np.float64)), atol=2e-3, rtol=0)
    # YAMNet's settings: log offset 0.001, examples every 0.48 s
    yamnet = VGGishFrontend(log_offset=0.001, patch_hop_seconds=0.48)
    got = yamnet(torch.from_numpy(tones)[None])[0, :, 0].numpy()
    np.testing.assert_allclose(got, reference_examples(tones, log_offset=0.001, hop_frames=48), atol=1e-8, rtol=0)
    got = yamnet(torch.from_numpy(noise)[None])[0, :, 0].numpy()
    np.testing.assert_allclose(got, reference_examples(noise.astype(np.float64), 0.001, 48), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seconds,patches", [(0.5, 1), (0.96, 1), (1.0, 1), (2.0, 2), (5.0, 5)])
def test_patch_counts(seconds: float, patches: int) -> None:
    front = VGGishFrontend()
    samples = int(round(seconds * 16000))
    features = front(torch.randn(3, samples))
    assert features.shape == (3, patches, 1, 96, 64)
    assert front.num_patches(samples) == patches
    assert torch.isfinite(features).all()


def test_short_clip_is_zero_padded_to_one_patch() -> None:
    front = VGGishFrontend()
    clip = torch.randn(1, 8000, dtype=torch.float64)
    features = front(clip)[0, 0, 0]
    head = reference_examples(np.pad(clip[0].numpy(), (0, front.min_samples - 8000)))[0]
    np.testing.assert_allclose(features.numpy(), head, atol=1e-9, rtol=0)
    torch.testing.assert_close(features[-1], torch.full((64,), float(np.log(0.01)), dtype=torch.float64))  # silence


def test_stereo_is_averaged_and_buffers_can_be_saved(tmp_path: Path) -> None:
    front = VGGishFrontend()
    stereo = torch.randn(2, 2, 16000)
    torch.testing.assert_close(front(stereo), front(stereo.mean(dim=1)))
    save_file(front.state_dict(), str(tmp_path / "front.safetensors"))  # refuses views of a larger storage


@pytest.mark.parametrize("name,num_classes", VARIANTS)
def test_shapes_and_layers_of_each_variant(name: str, num_classes: int | None) -> None:
    net = build(name, num_classes=num_classes, **TINY).eval()
    x = torch.randn(5, 1, 96, 64)
    with torch.no_grad():
        shapes = {layer: tuple(net.forward_until(x, layer).shape) for layer in net.layer_names()}
    expected = {"block1": (5, 4, 48, 32), "block2": (5, 8, 24, 16), "block3": (5, 8, 12, 8), "block4": (5, 16, 6, 4),
                "pooled": (5, 16), "embedding": (5, 16)}
    if name == "cae":
        expected |= {"decoder1": (5, 16, 6, 4), "decoder2": (5, 8, 12, 8), "decoder3": (5, 8, 24, 16),
                     "decoder4": (5, 4, 48, 32), "reconstruction": (5, 1, 96, 64)}
    else:
        expected["output"] = (5, num_classes)
    assert shapes == expected


@pytest.mark.parametrize("widths", [[4], [4, 8], [4, 4, 8, 8, 8, 16, 16]])
def test_any_number_of_blocks(widths: list[int]) -> None:
    x = torch.randn(2, 1, 96, 64)
    assert build("cae", widths=widths, embedding_dim=8).eval()(x).shape == (2, 1, 96, 64)
    assert build("semdnn", num_classes=6, widths=widths, embedding_dim=8).eval()(x).shape == (2, 6)


def test_cae_builds_without_num_classes_and_cat_needs_it() -> None:
    assert isinstance(build("cae", **TINY), VGGishNet)
    with pytest.raises(ValueError, match="num_classes"):
        VGGishNet("cat", None, **TINY)


@pytest.mark.parametrize("name,num_classes", VARIANTS)
def test_pipeline_averages_the_network_over_patches(name: str, num_classes: int | None) -> None:
    torch.manual_seed(0)
    pipe = build_pipeline(name, num_classes=num_classes, params=TINY).eval()
    assert isinstance(pipe, AudioPipeline) and pipe.sample_rate == 16000
    waveform = torch.randn(3, 2, 3 * 16000)  # stereo, 3 patches a clip
    with torch.no_grad():
        features = pipe.frontend(waveform)
        assert features.shape == (3, 3, 1, 96, 64)
        manual = torch.stack([torch.stack([pipe.network(features[b, p : p + 1])[0] for p in range(3)]).mean(0)
                              for b in range(3)])
        output = pipe(waveform)
    torch.testing.assert_close(output, manual, rtol=1e-5, atol=1e-5)


def test_pipeline_leaves_four_dimensional_features_alone() -> None:
    pipe = build_pipeline("small_cnn", num_classes=5, params={"widths": [4, 8, 8, 16]}).eval()
    waveform = torch.randn(2, 16000)
    with torch.no_grad():
        torch.testing.assert_close(pipe(waveform), pipe.network(pipe.frontend(waveform)))


@pytest.mark.parametrize("name,num_classes", VARIANTS)
def test_gradients_reach_every_parameter_and_the_waveform(name: str, num_classes: int | None) -> None:
    torch.manual_seed(0)
    pipe = build_pipeline(name, num_classes=num_classes, params=TINY).train()
    waveform = torch.randn(4, 2 * 16000, requires_grad=True)
    output = pipe(waveform)
    loss = output.pow(2).mean()
    loss.backward()
    for param_name, param in pipe.network.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name
    assert waveform.grad is not None and torch.isfinite(waveform.grad).all() and waveform.grad.abs().sum() > 0


@pytest.mark.parametrize("name,num_classes", VARIANTS)
def test_state_dict_round_trip_through_build(tmp_path: Path, name: str, num_classes: int | None) -> None:
    torch.manual_seed(0)
    source = build(name, num_classes=num_classes, **TINY)
    source.train()
    source(torch.randn(6, 1, 96, 64))  # move the BatchNorm running statistics away from their defaults
    source.eval()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    loaded = build(name, num_classes=num_classes, checkpoint=tmp_path / "w.safetensors", **TINY).eval()
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    assert "blocks.0.conv.weight" in source.state_dict() and "fc.linear.weight" in source.state_dict()


def test_catdnn_checkpoint_of_another_vocabulary_loads_all_but_the_head(tmp_path: Path) -> None:
    source = build("catdnn", num_classes=9960, **TINY)
    save_file(source.state_dict(), str(tmp_path / "cat.safetensors"))
    with pytest.warns(UserWarning, match="head not loaded"):
        model = build("catdnn", num_classes=120, checkpoint=tmp_path / "cat.safetensors", **TINY)
    torch.testing.assert_close(model.blocks[0].conv.weight, source.blocks[0].conv.weight)
    torch.testing.assert_close(model.fc.linear.weight, source.fc.linear.weight)
    assert model.head.weight.shape == (120, 16)


def expected_parameters(widths: tuple[int, ...], embedding_dim: int, num_classes: int | None) -> int:
    """Trainable parameters by the architecture's description (conv/linear weights + biases, BatchNorm scale+shift)."""
    channels = (1, *widths)
    encoder = sum(9 * c_in * c_out + c_out + 2 * c_out for c_in, c_out in zip(channels[:-1], channels[1:]))
    encoder += widths[-1] * embedding_dim + embedding_dim + 2 * embedding_dim
    if num_classes is not None:
        return encoder + embedding_dim * num_classes + num_classes
    map_size = (96 // 2 ** len(widths)) * (64 // 2 ** len(widths))
    decoder = embedding_dim * widths[-1] * map_size + widths[-1] * map_size + 2 * widths[-1]
    decoder += sum(9 * c_in * c_out + c_out + 2 * c_out for c_in, c_out in zip(widths[:0:-1], widths[-2::-1]))
    decoder += 9 * widths[0] + 1
    return encoder + decoder


@pytest.mark.parametrize(
    "name,num_classes,count",
    [("semdnn", 300, 1_969_324), ("catdnn", 9960, 6_924_904), ("cae", None, 9_670_401)],
    ids=["semdnn-300-1969324-params", "catdnn-9960-6924904-params", "cae-9670401-params"],
)
def test_parameter_count_of_the_default_networks(name: str, num_classes: int | None, count: int) -> None:
    net = build(name, num_classes=num_classes)
    total = sum(p.numel() for p in net.parameters())
    assert total == count == expected_parameters((64, 128, 256, 512), 512, num_classes)
