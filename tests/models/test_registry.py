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


def _export_folder(folder: Path, manifest: bool = True) -> torch.nn.Module:
    """An export-like folder: a pipeline's `network.`/`frontend.` weights in model.safetensors (+ manifest.json)."""
    import hashlib
    import json

    folder.mkdir(parents=True, exist_ok=True)
    pipe = build_pipeline("small_cnn", num_classes=4, params={"widths": [4, 8, 8, 16]}).eval()
    save_file(pipe.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.yaml").write_text("model:\n  name: small_cnn\n")
    if manifest:
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
        (folder / "manifest.json").write_text(json.dumps({"files": files}))
    return pipe


@pytest.mark.parametrize("manifest", [True, False])
def test_an_export_folder_is_accepted_as_a_checkpoint(tmp_path: Path, manifest: bool) -> None:
    pipe = _export_folder(tmp_path / "export", manifest=manifest)
    net = build("small_cnn", num_classes=4, widths=[4, 8, 8, 16], checkpoint=tmp_path / "export").eval()
    x = torch.randn(1, 1, 64, 40)
    torch.testing.assert_close(net(x), pipe.network(x))
    assert set(read_state_dict(tmp_path / "export")) == set(pipe.network.state_dict())
    net = build("small_cnn", widths=[4, 8, 8, 16], checkpoint=str(tmp_path / "export"))  # class count read from it
    assert net.head.weight.shape[0] == 4


def test_an_export_folder_whose_weights_do_not_match_the_manifest_or_that_holds_none_is_refused(tmp_path: Path) -> None:
    _export_folder(tmp_path / "export")
    with open(tmp_path / "export" / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match=r"export.*model\.safetensors does not match its sha256 in manifest\.json"):
        read_state_dict(tmp_path / "export")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"empty.*is a folder without model\.safetensors"):
        build("small_cnn", num_classes=4, checkpoint=tmp_path / "empty")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"widths": [8, 16, "abc", 16]}, r"parameter 'widths' is \[8, 16, 'abc', 16\], expected a sequence of int "
                                         r"\(item 2 'abc' is not int\)"),
        ({"widths": 8}, r"parameter 'widths' is 8, expected a sequence of int"),
        ({"widths": "8,16"}, r"parameter 'widths' is '8,16', expected a sequence of int"),
        ({"widths": [8, 16, 16.5, 16]}, r"parameter 'widths' is .*, expected a sequence of int \(item 2 16\.5 is not int\)"),
        ({"widths": [8, True, 16, 16]}, r"parameter 'widths' is .*, expected a sequence of int \(item 1 True is not int\)"),
        ({"dropout": "abc"}, r"parameter 'dropout' is 'abc', expected float"),
        ({"dropout": None}, r"parameter 'dropout' is None, expected float"),
    ],
)
def test_parameters_are_checked_against_the_builders_annotations(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"model 'small_cnn' {message}"):
        build("small_cnn", num_classes=3, **params)


def test_parameters_of_the_annotated_types_are_accepted() -> None:
    from omegaconf import OmegaConf

    widths = OmegaConf.create({"w": [4, 8, 8, 16]}).w  # a ListConfig, as model.params gives it
    for params in ({"widths": widths, "dropout": 0}, {"widths": (4, 8, 8, 16), "dropout": 0.5}):
        assert build("small_cnn", num_classes=3, **params).head.weight.shape == (3, 16)


def test_front_end_parameters_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"front end 'logmel' parameter 'n_mels' is 'many', expected int"):
        build_frontend("small_cnn", n_mels="many")
