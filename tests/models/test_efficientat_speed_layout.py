"""The EfficientAT MobileNets' channels_last layout (`channels_last=True`, the default on every device) computes what the
default layout computes, with the same state dict; DyMN's state dict is unchanged too.

Tolerances: in float64 (training mode, batch statistics) outputs and every gradient agree to 1e-10 of their
largest value (the differences are float rounding of differently ordered sums, about 1e-14); in float32 (eval
mode) logits, input gradients and parameter gradients agree to 1e-4 of each tensor's largest value (seen: under
1e-5). Float32 training-mode gradients are not compared: at EfficientAT's initialisation a BatchNorm's backward
amplifies rounding (float32 gradients differ from float64 ones by more than the two layouts differ).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from audiointerp.errors import ConfigError
from audiointerp.models import build
from audiointerp.models.efficientat import MobileNetAT

DATA = Path(__file__).parent / "data"
MN_KEYS = json.loads((DATA / "efficientat_mn_keys.json").read_text())["models"]


def pair(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[MobileNetAT, MobileNetAT]:
    """(default layout, channels_last) models of `name` with the same weights."""
    torch.manual_seed(seed)
    default = build(name, num_classes=10, channels_last=False).to(dtype)
    fast = build(name, num_classes=10, channels_last=True).to(dtype)
    fast.load_state_dict(default.state_dict(), strict=True)
    return default, fast


def kernels(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 4]


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, fraction: float, scale: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=0.0, atol=fraction * scale)


def test_channels_last_is_the_default_on_cpu_and_keeps_the_parameters() -> None:
    model = build("mn04", num_classes=10)
    assert model.channels_last and model.uses_channels_last(torch.device("cpu"))
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels(model))
    plain = build("mn04", num_classes=10, channels_last=False)
    assert all(k.is_contiguous() for k in kernels(plain))
    before = [id(p) for p in model.parameters()]
    model.double().float()  # conversions keep the layout and the Parameter objects (an optimizer holds them)
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels(model))
    assert [id(p) for p in model.parameters()] == before
    model.to("meta")  # another device than the CPU (a GPU on the device machine): channels_last too
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels(model))
    cpu_only = build("mn04", num_classes=10, channels_last="cpu")
    cpu_only.to("meta")  # "cpu": the default layout elsewhere...
    assert all(k.is_contiguous() for k in kernels(cpu_only))
    cpu_only.to_empty(device="cpu")  # ...and channels_last again back on the CPU
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels(cpu_only))


def test_channels_last_always_keeps_the_layout_on_another_device_and_never_not_even_on_the_cpu() -> None:
    always = build("mn04", num_classes=10)  # True, the default, is "always"
    assert always.uses_channels_last(torch.device("cuda")) and always.uses_channels_last(torch.device("cpu"))
    always.to("meta")  # another device than the CPU (a GPU on the device machine): still channels_last
    assert all(k.is_contiguous(memory_format=torch.channels_last) for k in kernels(always))
    assert always.to_layout(torch.empty(2, 3, 8, 8, device="meta")).is_contiguous(memory_format=torch.channels_last)
    cpu_only = build("mn04", num_classes=10, channels_last="cpu")
    assert cpu_only.uses_channels_last(torch.device("cpu")) and not cpu_only.uses_channels_last(torch.device("cuda"))
    assert build("mn04", num_classes=10, channels_last=True).layout == "always"
    never = build("mn04", num_classes=10, channels_last="never")
    assert not never.uses_channels_last(torch.device("cpu")) and all(k.is_contiguous() for k in kernels(never))
    with pytest.raises(ConfigError, match="'channels_last' is 'sometimes', expected bool or one of 'cpu', 'always'"):
        build("mn04", num_classes=10, channels_last="sometimes")  # the registry checks the parameter's type
    with pytest.raises(ValueError, match="channels_last must be"):
        MobileNetAT(10, width_mult=0.4, channels_last="sometimes")  # the class itself too


@pytest.mark.parametrize("name", ["mn04", "mn10"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_state_dict_keys_and_shapes_are_the_released_ones_in_either_layout(name: str, channels_last: bool) -> None:
    model = build(name, num_classes=527, channels_last=channels_last)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == MN_KEYS[name]
    assert list(model.state_dict()) == list(MN_KEYS[name])


def test_state_dicts_move_between_layouts_strictly() -> None:
    default, fast = pair("mn04")
    for source, target in ((default, build("mn04", num_classes=10)), (fast, build("mn04", num_classes=10,
                                                                                  channels_last=False))):
        target.load_state_dict(source.state_dict(), strict=True)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key


def test_dymn_state_dict_keys_and_shapes_are_unchanged() -> None:
    expected = json.loads((DATA / "dymn10_keys.json").read_text())["keys"]
    state = build("dymn10", num_classes=527).state_dict()
    assert list(state) == list(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected


def test_training_outputs_gradients_and_running_statistics_match_in_float64() -> None:
    default, fast = pair("mn01", torch.float64)
    x = torch.randn(2, 1, 64, 32, dtype=torch.float64)
    target = torch.tensor([1, 7])
    outputs = []
    for model in (default, fast):
        torch.manual_seed(1)  # the same dropout mask
        logits = model.train()(x)
        F.cross_entropy(logits, target).backward()
        outputs.append(logits)
    assert_close_to_scale(outputs[1], outputs[0], 1e-10, outputs[0].abs().max().item())
    grad_scale = max(p.grad.abs().max().item() for p in default.parameters())
    for (key, p), q in zip(default.named_parameters(), fast.parameters()):
        assert p.grad is not None and q.grad is not None, key
        assert_close_to_scale(q.grad, p.grad, 1e-10, grad_scale)
    for (key, b), c in zip(default.named_buffers(), fast.buffers()):
        torch.testing.assert_close(c, b, rtol=1e-10, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", ["mn04", "mn10"])
def test_eval_outputs_and_gradients_match_in_float32(name: str) -> None:
    default, fast = pair(name, seed=3)
    x = torch.randn(2, 1, 128, 64)
    target = torch.tensor([0, 4])
    results = []
    for model in (default, fast):
        features = x.clone().requires_grad_(True)
        logits = model.eval()(features)
        F.cross_entropy(logits, target).backward()
        results.append((logits, features.grad))
    (logits, input_grad), (fast_logits, fast_input_grad) = results
    assert_close_to_scale(fast_logits, logits, 1e-4, logits.abs().max().item())
    assert_close_to_scale(fast_input_grad, input_grad, 1e-4, input_grad.abs().max().item())
    for (key, p), q in zip(default.named_parameters(), fast.parameters()):
        assert_close_to_scale(q.grad, p.grad, 1e-4, p.grad.abs().max().item())


def test_taps_and_embedding_in_channels_last() -> None:
    default, fast = pair("mn04", seed=5)
    x = torch.randn(2, 1, 128, 64)
    with torch.no_grad():
        for layer in ("block0", "block5", "block16", "embedding"):
            tap = fast.eval().forward_until(x, layer)
            assert_close_to_scale(tap, default.eval().forward_until(x, layer), 1e-4, tap.abs().max().item())
            assert_close_to_scale(fast.forward_from(tap, layer), fast(x), 1e-6, fast(x).abs().max().item())
        logits, embedding = fast.forward_with_embedding(x)
        assert_close_to_scale(logits, default.forward_with_embedding(x)[0], 1e-4, logits.abs().max().item())
        assert embedding.shape == (2, fast.embedding_dim)
