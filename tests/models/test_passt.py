"""PaSST through hear21passt: registration, quiet construction, 5 s input, taps and checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from audiointerp.errors import CheckpointError
from audiointerp.models import passt as passt_module  # noqa: F401  (registers the models)
from audiointerp.models.efficientat import EfficientATMel
from audiointerp.models.passt import DEFAULT_ARCH, PaSSTNet
from audiointerp.models.registry import build, build_frontend, load_weights, model_spec

PARAMETERS_527 = 86_153_758  # PaSST-S with a 527-class head (the LayerNorm + Linear head and the distillation head)


@pytest.fixture(scope="module")
def model() -> PaSSTNet:
    torch.manual_seed(0)
    net = build("passt", num_classes=527)
    assert isinstance(net, PaSSTNet)
    return net.eval()


@pytest.fixture(scope="module")
def checkpoint(model: PaSSTNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("passt") / "passt_527.pt"
    torch.save(model.state_dict(), path)
    return path


def mel(frames: int = 500, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, 128, frames, generator=torch.Generator().manual_seed(1))


def test_both_names_are_registered_with_the_efficientat_front_end() -> None:
    for name in (DEFAULT_ARCH, "passt"):
        spec = model_spec(name)
        assert spec.frontend == "efficientat_mel"
        assert "esc50-passt-s-n-f128-p16-s10-fold1-acc.967.pt" in spec.weights_hint
    assert model_spec("passt").builder is model_spec(DEFAULT_ARCH).builder
    assert isinstance(build_frontend("passt"), EfficientATMel)


def test_builds_and_runs_without_printing_or_warning(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import hear21passt.models.passt as upstream

    monkeypatch.setattr(upstream, "first_RUN", True)  # hear21passt prints shapes on its first forward only
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = build(DEFAULT_ARCH, num_classes=10).eval()
        with torch.no_grad():
            out = net(mel())
    assert out.shape == (1, 10)
    assert capsys.readouterr().out == ""
    assert sum(p.numel() for p in net.parameters()) == PARAMETERS_527 - 517 * 768 * 2 - 517 * 2


def test_five_second_input_gives_logits_and_embedding_as_hear21passt(model: PaSSTNet) -> None:
    x = mel(500, batch=2)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS_527
    assert model.net.time_new_pos_embed.shape[-1] == 99  # sized for input_tdim=998, cropped to 49 columns here
    with torch.no_grad(), passt_module.quiet():
        logits, embedding = model.forward_with_embedding(x)
        expected_logits, expected_embedding = model.net(x)
        out = model(x)
    assert logits.shape == (2, 527) and embedding.shape == (2, 768)
    assert torch.equal(out, logits)
    assert torch.equal(logits, expected_logits) and torch.equal(embedding, expected_embedding)
    with pytest.raises(ValueError, match="input_tdim"):
        model(mel(999))


def test_taps_reproduce_the_forward(model: PaSSTNet) -> None:
    names = model.layer_names()
    assert names == ["patch_embed", *(f"blocks.{i}" for i in range(12)), "embedding", "logits"]
    x = mel(200)
    with torch.no_grad():
        expected = model(x)
        assert model.forward_until(mel(500), "patch_embed").shape == (1, 2 + 12 * 49, 768)
        assert model.forward_until(x, "embedding").shape == (1, 768)
        for layer in ("patch_embed", "blocks.5", "embedding"):
            torch.testing.assert_close(model.forward_from(model.forward_until(x, layer), layer), expected, rtol=0, atol=0)


def test_checkpoint_round_trip_strict_and_from_plain_hear21passt(
    model: PaSSTNet, checkpoint: Path, tmp_path: Path
) -> None:
    x = mel(100)
    loaded = build("passt", num_classes=527, checkpoint=checkpoint).eval()
    plain = tmp_path / "plain.pt"
    torch.save(model.net.state_dict(), plain)  # keys without the wrapper's `net.` prefix
    report = load_weights(build("passt", num_classes=527), plain)
    assert report.skipped_head == []
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_527_class_checkpoint_into_50_classes_skips_only_the_head(model: PaSSTNet, checkpoint: Path) -> None:
    with pytest.warns(UserWarning, match="head not loaded"):
        net = build("passt", num_classes=50, checkpoint=checkpoint)
    assert set(net.state_dict()) == set(model.state_dict())
    own, source = net.state_dict(), model.state_dict()
    differing = sorted(k for k in own if own[k].shape != source[k].shape or not torch.equal(own[k], source[k]))
    assert differing == ["net.head.1.bias", "net.head.1.weight", "net.head_dist.bias", "net.head_dist.weight"]
    with torch.no_grad():
        assert net.eval()(mel(100)).shape == (1, 50)


def test_checkpoint_with_another_input_tdim_is_refused(checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="time_new_pos_embed"):
        build("passt", num_classes=527, input_tdim=500, checkpoint=checkpoint)


def test_patchout_longer_than_the_clip_is_refused_in_training() -> None:
    """s_patchout_t=10 on a 1 s clip (9 time patches): hear21passt's randperm(9)[:-1] would keep 8 columns silently."""
    from audiointerp.errors import ConfigError

    net = build(DEFAULT_ARCH, num_classes=3, s_patchout_t=10).train()
    with pytest.raises(ConfigError, match=r"drops 10 time patches .* only 9"):
        net(mel(frames=100))
    net.eval()
    assert net(mel(frames=100)).shape == (1, 3)  # no patchout at evaluation
    net.train()
    assert net(mel(frames=200)).shape == (1, 3)  # 19 patches: 9 kept
