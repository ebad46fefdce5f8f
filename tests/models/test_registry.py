from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.models import available_models, build, build_frontend, build_pipeline, load_weights, read_state_dict


def test_build_small_cnn_and_its_pipeline() -> None:
    assert "small_cnn" in available_models()
    net = build("small_cnn", num_classes=5, widths=[4, 8, 8, 16])
    assert net(torch.randn(2, 1, 64, 101)).shape == (2, 5)
    pipe = build_pipeline("small_cnn", num_classes=5, params={"widths": [4, 8, 8, 16]})
    assert pipe.sample_rate == 16000
    assert pipe(torch.randn(3, 16000)).shape == (3, 5)
    assert pipe(torch.randn(3, 2, 16000)).shape == (3, 5)  # stereo is averaged by the front end


def test_frontend_by_model_name_gives_log_mel_patches() -> None:
    front = build_frontend("small_cnn")
    feats = front(torch.randn(2, 16000))
    assert feats.shape == (2, 1, 64, 101)  # 16 kHz, hop 160, centred frames
    assert torch.isfinite(feats).all()


def test_unknown_model_and_bad_parameter_are_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'smal_cnn'.*did you mean 'small_cnn'"):
        build("smal_cnn", num_classes=3)
    with pytest.raises(ConfigError, match=r"no parameter 'width'.*did you mean 'widths'"):
        build("small_cnn", num_classes=3, width=[1])


def test_checkpoint_round_trip_in_safetensors_and_pt(tmp_path: Path) -> None:
    source = build("small_cnn", num_classes=4, widths=[4, 8, 8, 16]).eval()
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.pt")
    x = torch.randn(2, 1, 64, 50)
    for name in ("w.safetensors", "w.pt"):
        loaded = build("small_cnn", num_classes=4, widths=[4, 8, 8, 16], checkpoint=tmp_path / name).eval()
        torch.testing.assert_close(loaded(x), source(x))


def test_checkpoint_with_another_class_count_loads_all_but_the_head(tmp_path: Path) -> None:
    source = build("small_cnn", num_classes=527, widths=[4, 8, 8, 16])
    save_file(source.state_dict(), str(tmp_path / "as.safetensors"))
    with pytest.warns(UserWarning, match="head not loaded"):
        model = build("small_cnn", num_classes=50, widths=[4, 8, 8, 16], checkpoint=tmp_path / "as.safetensors")
    torch.testing.assert_close(model.blocks[0][0].weight, source.blocks[0][0].weight)
    assert model.head.weight.shape == (50, 16)


def test_checkpoint_of_another_architecture_is_refused_with_the_keys(tmp_path: Path) -> None:
    other = build("small_cnn", num_classes=4, widths=[4, 8, 16, 16])
    save_file(other.state_dict(), str(tmp_path / "other.safetensors"))
    model = build("small_cnn", num_classes=4, widths=[4, 8, 8, 16])
    with pytest.raises(CheckpointError, match=r"(?s)does not fit SmallCNN.*blocks\.2\.0\.weight"):
        load_weights(model, tmp_path / "other.safetensors")


def test_missing_or_corrupt_checkpoint_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nowhere.pt.*does not exist"):
        read_state_dict(tmp_path / "nowhere.pt", hint="the releases page")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        read_state_dict(bad)


def test_an_exported_pipeline_loads_as_a_network_checkpoint(tmp_path: Path) -> None:
    pipe = build_pipeline("small_cnn", num_classes=4, params={"widths": [4, 8, 8, 16]}).eval()
    save_file(pipe.state_dict(), str(tmp_path / "model.safetensors"))
    net = build("small_cnn", num_classes=4, widths=[4, 8, 8, 16], checkpoint=tmp_path / "model.safetensors").eval()
    x = torch.randn(1, 1, 64, 40)
    torch.testing.assert_close(net(x), pipe.network(x))
