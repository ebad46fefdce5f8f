from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.models import archisound
from audiointerp.models.archisound import (
    ArchiSoundAutoencoder,
    AutoencoderWrapper,
    WaveformFrontend,
    autoencoder1d_at_v1,
    initialise,
)
from audiointerp.models.registry import build, build_frontend, load_weights

TINY = dict(channels=8, num_blocks=(1, 1, 1, 1, 1, 1))  # same 32x downsampling, 243,544 parameters


def tiny(seed: int = 0) -> ArchiSoundAutoencoder:
    torch.manual_seed(seed)
    return autoencoder1d_at_v1(**TINY)


def hub_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The hub model's key layout: the AutoEncoder1d kept as `.autoencoder`."""
    return {f"autoencoder.{k}": v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --- the autoencoder ---------------------------------------------------------------------------------------


def test_default_config_has_the_released_parameter_count_and_latent() -> None:
    model = build("autoencoder1d-at-v1")
    assert isinstance(model, ArchiSoundAutoencoder)
    assert sum(p.numel() for p in model.parameters()) == 20_770_642
    assert model.downsample_factor == 32 and model.latent_channels == 32 and model.in_channels == 2
    with torch.no_grad():
        assert model.encode(torch.randn(1, 2, 2**18)).shape == (1, 32, 8192)  # about 2 s on 2 CPU cores


def test_registered_with_a_waveform_front_end() -> None:
    front = build_frontend("autoencoder1d-at-v1")
    assert isinstance(front, WaveformFrontend) and front.sample_rate == 48000
    x = torch.randn(2, 2, 64)
    assert front(x) is x
    assert build_frontend("waveform", sample_rate=32000).sample_rate == 32000


def test_tiny_config_keeps_the_ratio() -> None:
    model = tiny()
    assert sum(p.numel() for p in model.parameters()) == 243_544
    assert model.downsample_factor == 32
    with torch.no_grad():
        z = model.encode(torch.randn(2, 2, 2**12))
        assert z.shape == (2, 8, 2**12 // 32)
        assert z.abs().max() <= 1  # Tanh bottleneck
        assert model.decode(z).shape == (2, 2, 2**12)


def test_downsampling_is_computed_from_the_config() -> None:
    model = autoencoder1d_at_v1(channels=8, num_blocks=(1,) * 6, factors=(2, 2, 1, 1, 1, 1), patch_size=2)
    assert model.downsample_factor == 8
    assert AutoencoderWrapper(model, 16000, 16000).downsample_factor == 8
    with torch.no_grad():
        assert model.encode(torch.randn(1, 2, 64)).shape == (1, 8, 8)


@pytest.mark.parametrize(
    "params",
    [dict(channels=4, num_blocks=(1,) * 6), dict(channels=8, factors=(2, 2), num_blocks=(1,) * 6), dict(multipliers="ab")],
)
def test_bad_configs_are_config_errors(params: dict) -> None:
    with pytest.raises(ConfigError):
        build("autoencoder1d-at-v1", **params)


# --- checkpoints -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_hub_checkpoint_loads_strictly(tmp_path: Path, suffix: str) -> None:
    source = tiny(seed=1)
    state = hub_state(source)
    assert all(k.startswith(("autoencoder.encoder.", "autoencoder.decoder.")) for k in state)
    path = tmp_path / f"pytorch_model{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    loaded = build("autoencoder1d-at-v1", checkpoint=path, **TINY)
    assert_same_weights(loaded, source)


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save(hub_state(tiny()), path)
    with pytest.raises(CheckpointError):
        build("autoencoder1d-at-v1", checkpoint=path, channels=16, num_blocks=(1,) * 6)
    state = hub_state(tiny())
    state["autoencoder.extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="extra"):
        build("autoencoder1d-at-v1", checkpoint=path, **TINY)


def test_wrapper_loads_hub_and_bare_keys() -> None:
    source = tiny(seed=2)
    for state in (hub_state(source), source.state_dict()):
        wrapper = AutoencoderWrapper(tiny(seed=3))
        load_weights(wrapper, state)
        assert_same_weights(wrapper.autoencoder, source)


# --- starts ------------------------------------------------------------------------------------------------


def test_random_start_is_xavier_uniform_zero_bias_groupnorm_one_zero() -> None:
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    torch.manual_seed(0)
    assert initialise(model, "random") is model
    counts = {nn.Conv1d: 0, nn.ConvTranspose1d: 0, nn.GroupNorm: 0}
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
            counts[type(module)] += 1
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weight = module.weight.detach()
            assert weight.abs().max() <= bound
            if weight.numel() >= 200:  # uniform on [-bound, bound]: variance bound^2 / 3
                assert weight.abs().max() > 0.8 * bound
                assert weight.var().item() == pytest.approx(bound**2 / 3, rel=0.35)
            assert module.bias is not None and torch.equal(module.bias, torch.zeros_like(module.bias))
        elif isinstance(module, nn.GroupNorm):
            counts[nn.GroupNorm] += 1
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    assert all(counts.values()), counts
    assert not any((p == 3.0).all() for p in model.parameters())  # every parameter was reset


def test_random_start_sets_linear_layers_too() -> None:
    layer = nn.Linear(64, 32)
    initialise(layer, "random")
    assert layer.weight.abs().max() <= math.sqrt(6.0 / 96) and not layer.bias.any()


def test_pretrained_start_loads_the_local_checkpoint(tmp_path: Path) -> None:
    source = tiny(seed=4)
    path = tmp_path / "pretrained.safetensors"
    save_file(hub_state(source), str(path))
    model = initialise(tiny(seed=5), "pretrained", checkpoint=path)
    assert_same_weights(model, source)
    with pytest.raises(ConfigError, match="checkpoint"):
        initialise(tiny(), "pretrained")
    with pytest.raises(ConfigError, match="random"):
        initialise(tiny(), "off-the-shelf")


# --- the wrapper -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 32000 * 5 + 7), (1, 1, 32000 * 5 + 7), (2, 2, 1001)])
def test_wrapper_returns_the_input_length_at_the_input_rate(shape: tuple[int, ...]) -> None:
    wrapper = AutoencoderWrapper(tiny()).eval()
    with torch.no_grad():
        y = wrapper(torch.randn(*shape))
    expected = (shape[0], shape[-1]) if len(shape) == 2 else (shape[0], 1, shape[-1])
    assert y.shape == expected and torch.isfinite(y).all()


def test_wrapper_encode_resamples_and_pads() -> None:
    wrapper = AutoencoderWrapper(tiny())
    with torch.no_grad():
        assert wrapper.encode(torch.randn(1, 160000)).shape == (1, 8, 240000 // 32)
        assert wrapper.encode(torch.randn(1, 160007)).shape == (1, 8, math.ceil(240011 / 32))
        assert wrapper.decode(wrapper.encode(torch.randn(1, 1000)), 1000).shape == (1, 1000)


@pytest.mark.slow
def test_default_wrapper_on_a_five_second_clip() -> None:
    wrapper = AutoencoderWrapper(build("autoencoder1d-at-v1")).eval()
    with torch.no_grad():
        assert wrapper(torch.randn(1, 32000 * 5 + 7)).shape == (1, 32000 * 5 + 7)


def test_mono_is_duplicated_to_stereo_and_averaged_back() -> None:
    wrapper = AutoencoderWrapper(tiny(), input_rate=32000, ae_rate=32000).eval()
    seen: dict[str, torch.Tensor] = {}
    left, right = torch.randn(1, 1024), torch.randn(1, 1024)
    wrapper.autoencoder.encoder.register_forward_pre_hook(lambda m, args: seen.setdefault("input", args[0]))
    wrapper.autoencoder.decoder.register_forward_hook(lambda m, args, out: torch.stack([left, right], dim=1))
    x = torch.randn(1, 1000)
    with torch.no_grad():
        y = wrapper(x)
    assert seen["input"].shape == (1, 2, 1024)  # padded to a multiple of 32
    assert torch.equal(seen["input"][:, 0, :1000], x) and torch.equal(seen["input"][:, 1, :1000], x)
    assert not seen["input"][..., 1000:].any()
    torch.testing.assert_close(y, ((left + right) / 2)[:, :1000])


def test_direct_mode_does_not_resample(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("resampled although ae_rate == input_rate")

    monkeypatch.setattr(archisound.torchaudio.functional, "resample", refuse)
    wrapper = AutoencoderWrapper(tiny(), input_rate=32000, ae_rate=32000).eval()
    assert wrapper.sample_rate == 32000
    with torch.no_grad():
        assert wrapper(torch.randn(2, 32000 * 5 + 7)).shape == (2, 32000 * 5 + 7)
        assert wrapper.encode(torch.randn(2, 32000 * 5)).shape == (2, 8, 5000)


def test_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match="channels"):
        AutoencoderWrapper(tiny())(torch.randn(1, 3, 640))


@pytest.mark.parametrize("part", ["encoder", "decoder", "both"])
def test_gradients_reach_the_input_and_the_trainable_part(part: str) -> None:
    wrapper = AutoencoderWrapper(tiny()).trainable(part)
    x = torch.randn(2, 3207, requires_grad=True)
    wrapper(x).pow(2).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, sub in (("encoder", wrapper.autoencoder.encoder), ("decoder", wrapper.autoencoder.decoder)):
        wanted = part in (name, "both")
        assert all(p.requires_grad == wanted for p in sub.parameters())
        grads = [p.grad for p in sub.parameters()]
        if wanted:
            assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads)
    with pytest.raises(ConfigError):
        wrapper.trainable("bottleneck")


def test_encoder_taps_continue_to_the_latent_and_take_hub_checkpoints(tmp_path: Path) -> None:
    from audiointerp.models.archisound import AutoencoderWrapper

    torch.manual_seed(0)
    encoder = build("autoencoder1d-at-v1-encoder", **TINY).eval()
    assert encoder.layer_names() == ["patches", *(f"down{i}" for i in range(1, 7)), "latent"]
    wave = torch.randn(2, 4800) * 0.1  # mono at 48 kHz: made stereo and padded inside
    with torch.no_grad():
        latent = encoder(wave)
        torch.testing.assert_close(latent, AutoencoderWrapper(encoder.autoencoder, 48000, 48000).encode(wave))
        for layer in encoder.layer_names():
            torch.testing.assert_close(encoder.forward_from(encoder.forward_until(wave, layer), layer), latent, msg=layer)
    hub = {f"autoencoder.{k}": v for k, v in tiny(seed=3).state_dict().items()}  # the hub file's key layout
    torch.save(hub, tmp_path / "pytorch_model.bin")
    loaded = build("autoencoder1d-at-v1-encoder", checkpoint=tmp_path / "pytorch_model.bin", **TINY).state_dict()
    assert loaded.keys() == hub.keys() and all(torch.equal(loaded[k], v) for k, v in hub.items())
