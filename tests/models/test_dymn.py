from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import audiointerp.models.dymn  # noqa: F401  (registers dymn04/10/20 until the zoo imports it)
from audiointerp.errors import CheckpointError
from audiointerp.models import available_frontends, build, build_pipeline, load_weights
from audiointerp.models.dymn import DyMN, DynamicConv, make_divisible, temperature_schedule
from audiointerp.models.registry import model_spec

DATA = Path(__file__).parent / "data"
# upstream EfficientAT get_model(width_mult=w, num_classes=527): parameter counts
PARAMETERS = {"dymn04": 1_961_239, "dymn10": 10_548_479, "dymn20": 39_966_143}


def upstream_keys() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((DATA / "dymn10_keys.json").read_text())["keys"].items()}


def temperatures(model: nn.Module) -> set[float]:
    return {m.temperature for m in model.modules() if isinstance(m, DynamicConv)}


def calibrate(model: DyMN) -> DyMN:
    """Running BatchNorm statistics from one random batch, so that activations keep their scale in eval mode
    (at initialisation, every block's kernel mixture shrinks them; logits would be ~1e-16)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(4, 1, 128, 32))
    return model.eval()


@pytest.fixture(scope="module")
def dymn04() -> DyMN:
    torch.manual_seed(0)
    model = calibrate(build("dymn04", num_classes=527))
    with torch.no_grad():
        assert model(torch.randn(2, 1, 128, 64)).abs().max() > 1e-3
    return model


def test_dymn10_state_dict_has_upstreams_keys_shapes_and_order() -> None:
    model = build("dymn10", num_classes=527)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(own) == list(upstream_keys())
    assert own == upstream_keys()


@pytest.mark.parametrize("name", ["dymn04", "dymn10", "dymn20"])
def test_parameter_counts_and_key_names_per_width(name: str) -> None:
    model = build(name, num_classes=527)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert list(model.state_dict()) == list(upstream_keys())
    width = {"dymn04": 0.4, "dymn10": 1.0, "dymn20": 2.0}[name]
    assert model.classifier[5].in_features == make_divisible(1280 * width)
    assert model.embedding_dim == 6 * make_divisible(160 * width)


def test_registered_with_the_efficientat_front_end_and_hint(tmp_path: Path) -> None:
    for name in ("dymn04", "dymn10", "dymn20"):
        spec = model_spec(name)
        assert spec.frontend == "efficientat_mel" and "EfficientAT GitHub releases" in spec.weights_hint
    with pytest.raises(CheckpointError, match="dymn10_as.pt"):
        build("dymn10", num_classes=50, checkpoint=tmp_path / "missing.pt")


def test_output_shapes(dymn04: DyMN) -> None:
    x = torch.randn(2, 1, 128, 100)
    with torch.no_grad():
        logits, embedding = dymn04.forward_with_embedding(x)
        assert torch.equal(dymn04(x), logits)
        assert dymn04(x[:1]).shape == (1, 527)
    assert logits.shape == (2, 527) and embedding.shape == (2, dymn04.embedding_dim) == (2, 384)


def test_taps_continue_to_the_same_output_for_every_layer(dymn04: DyMN) -> None:
    names = dymn04.layer_names()
    assert names == ["in_c", *(f"layer{i}" for i in range(15)), "out_c", "embedding", "logits"]
    x = torch.randn(2, 1, 128, 40)
    with torch.no_grad():
        full = dymn04(x)
        for layer in names:
            torch.testing.assert_close(dymn04.forward_from(dymn04.forward_until(x, layer), layer), full, msg=layer)
        assert dymn04.forward_until(x, "layer14").shape == (2, 64, 4, 2)
        torch.testing.assert_close(dymn04.forward_until(x, "layer3"), dymn04.layers[3](dymn04.forward_until(x, "layer2")))


def test_strict_loading_reproduces_the_outputs(dymn04: DyMN, tmp_path: Path) -> None:
    path = tmp_path / "dymn04.pt"
    torch.save({"model": dymn04.state_dict()}, path)
    torch.manual_seed(1)
    fresh = build("dymn04", num_classes=527)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = load_weights(fresh, path)
    assert report.skipped_head == [] and len(report.loaded) == len(upstream_keys())
    x = torch.randn(2, 1, 128, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), dymn04(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(build("dymn10", num_classes=527), dymn04.state_dict())


def test_a_527_class_checkpoint_loads_into_50_classes_but_the_head(dymn04: DyMN) -> None:
    model = build("dymn04", num_classes=50)
    with pytest.warns(UserWarning, match="head not loaded"):
        report = load_weights(model, dymn04.state_dict())
    assert report.skipped_head == ["classifier.5.bias", "classifier.5.weight"]
    source = dymn04.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("classifier.5."):
            assert torch.equal(value, source[key]), key
    with pytest.raises(RuntimeError):
        model.load_state_dict(source, strict=True)


def test_temperature_defaults_to_one_and_loading_resets_it(dymn04: DyMN) -> None:
    model = build("dymn04", num_classes=527, temperature=30.0)
    assert model.temperature == 30.0 and temperatures(model) == {30.0}
    assert build("dymn10", num_classes=5).temperature == 1.0
    x = torch.randn(1, 1, 128, 32)
    model.load_state_dict(dymn04.state_dict())
    assert model.temperature == 1.0 and temperatures(model) == {1.0}
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), dymn04(x))
        model.set_temperature(30.0)
        assert not torch.allclose(model(x), dymn04(x))
    load_weights(model, dymn04.state_dict())  # the registry's loader
    assert temperatures(model) == {1.0}
    model.set_temperature(5.0)
    nn.Sequential(model).load_state_dict({f"0.{k}": v for k, v in dymn04.state_dict().items()})  # nested
    assert model.temperature == 1.0 and temperatures(model) == {1.0}
    with pytest.raises(ValueError):
        model.set_temperature(0.0)


def test_temperature_schedule_follows_upstream() -> None:
    assert [temperature_schedule(e) for e in (0, 10, 28, 29, 40)] == [30.0, 20.0, 2.0, 1.0, 1.0]
    model = build("dymn04", num_classes=3)
    assert model.update_temperature(5) == 25.0 and temperatures(model) == {25.0}


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    model = build("dymn04", num_classes=10).train()
    loss = nn.functional.cross_entropy(model(torch.randn(3, 1, 128, 32)), torch.tensor([0, 4, 9]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_upstream_options() -> None:
    plain = build("dymn04", num_classes=5, no_dyconv=True, no_dyrelu=True, no_ca=True)
    keys = plain.state_dict()
    assert "layers.1.exp_conv.module.weight" in keys and "layers.1.depth_act.lambdas" not in keys
    assert not temperatures(plain)
    narrow = build("dymn04", num_classes=5, strides=[2, 1, 2, 1], dyconv_k=3)
    with torch.no_grad():
        assert narrow.forward_until(torch.randn(1, 1, 128, 64), "layer14").shape == (1, 64, 16, 8)
    assert narrow.state_dict()["layers.1.exp_conv.weight"].shape[2] == 3
    with pytest.raises(ValueError, match="strides"):
        build("dymn04", num_classes=5, strides=[2, 2, 2])


def test_pipeline_on_waveforms_with_the_efficientat_front_end() -> None:
    if "efficientat_mel" not in available_frontends():
        pytest.skip("the efficientat_mel front end is not registered yet")
    pipeline = build_pipeline("dymn04", num_classes=5).eval()
    assert pipeline.sample_rate == 32000
    with torch.no_grad():
        assert pipeline(torch.randn(2, 16000)).shape == (2, 5)
