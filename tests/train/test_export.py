from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audiointerp import load_export
from audiointerp.errors import CheckpointError
from audiointerp.train.config import load_config
from audiointerp.train.export import export_run, task_from_checkpoint, verify_export
from audiointerp.train.trainer import Trainer


@pytest.fixture
def trained_run(tiny_overrides: list[str]) -> Path:
    return Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=1"])).fit().run_dir


def test_export_writes_weights_config_labels_metrics_and_sha256_manifest(trained_run: Path) -> None:
    out = export_run(trained_run)
    assert out == trained_run / "export"
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.yaml", "labels.txt", "metrics.json", "metadata.json", "manifest.json"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == 6 and manifest["task"] == "classifier" and manifest["model"] == "small_cnn"
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert len((out / "labels.txt").read_text().split()) == 24
    assert "valid/accuracy" in json.loads((out / "metrics.json").read_text())
    assert manifest["audiointerp_version"]


def test_load_export_gives_the_checkpoint_network_in_eval_mode(trained_run: Path) -> None:
    out = export_run(trained_run, out=trained_run.parent / "exported", checkpoint="last")
    model = load_export(out)
    assert not model.training
    task, *_ = task_from_checkpoint(trained_run, "last")
    audio = torch.randn(3, 16000)
    with torch.no_grad():
        torch.testing.assert_close(model(audio), task.model(audio))


def test_a_modified_export_file_is_refused(trained_run: Path) -> None:
    out = export_run(trained_run)
    verify_export(out)
    with open(out / "model.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(CheckpointError, match="model.safetensors does not match its sha256"):
        load_export(out)


def test_export_of_a_non_run_or_missing_checkpoint_is_a_clear_error(tmp_path: Path, trained_run: Path) -> None:
    with pytest.raises(CheckpointError, match="not a run directory"):
        export_run(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint '99'"):
        export_run(trained_run, checkpoint="99")
    with pytest.raises(CheckpointError, match="not an export: manifest.json is missing"):
        load_export(tmp_path)


def test_export_never_overwrites_a_foreign_folder_and_evaluation_never_writes_into_an_export(
    trained_run: Path, tmp_path: Path
) -> None:
    from audiointerp.train.evaluate import evaluate

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an audiointerp export"):
        export_run(trained_run, out=precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    out = export_run(trained_run)
    evaluate(out, progress=False)
    assert not (out / "eval").exists() and (trained_run / "eval").is_dir()
    export_run(trained_run)  # re-exporting replaces the export
    verify_export(out)


def test_an_export_whose_manifest_drops_the_weights_entry_is_refused(trained_run: Path) -> None:
    out = export_run(trained_run)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["files"]["model.safetensors"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="does not list model.safetensors"):
        load_export(out)


def test_an_export_without_its_manifest_is_named_as_such_and_an_export_is_a_model_checkpoint(
    trained_run: Path, tiny_overrides: list[str]
) -> None:
    """evaluate / export on an export whose manifest.json is gone say so (not "no checkpoint 'best'"), and
    `model.checkpoint=<export folder>` loads the export's network weights."""
    from audiointerp.models import build
    from audiointerp.train.evaluate import evaluate

    out = export_run(trained_run)
    task, *_ = task_from_checkpoint(trained_run)
    cfg = load_config("classifier", [*tiny_overrides, f"model.checkpoint={out}"])
    net = build(str(cfg.model.name), num_classes=24, checkpoint=cfg.model.checkpoint, **cfg.model.params).eval()
    for key, value in task.model.network.state_dict().items():
        torch.testing.assert_close(net.state_dict()[key], value)

    (out / "manifest.json").unlink()
    for call in (lambda: evaluate(out, progress=False), lambda: export_run(out), lambda: load_export(out)):
        with pytest.raises(CheckpointError, match=r"export.* is not an export: manifest\.json is missing"):
            call()
