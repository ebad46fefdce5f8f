"""Checkpoints hold what is trained: `ae_finetune`'s frozen classifier is left out of every checkpoint (its source
and sha256 are recorded instead), a resume stays bit-exact, a changed classifier is refused, and exports are
unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from audiointerp.errors import CheckpointError
from audiointerp.train.checkpoint import INFO_FILE, CheckpointStore, load_task_weights, module_sha256
from audiointerp.train.config import load_config
from audiointerp.train.export import WEIGHTS, export_run, task_from_checkpoint
from audiointerp.train.trainer import Trainer
from tests.configs.test_shipped_configs import COMMON, OVERRIDES, small_esc50  # noqa: F401 (fixture)


def classifier_file(folder: Path, seed: int = 0) -> Path:
    """A 3-class mn10 (ESC-50 recipe, random weights) saved as a classifier checkpoint."""
    from audiointerp.models import build

    torch.manual_seed(seed)
    path = folder / f"mn10-{seed}.safetensors"
    if not path.exists():
        save_file({k: v.contiguous() for k, v in build("mn10", num_classes=3).state_dict().items()}, str(path))
    return path


def config(source: Path, out: Path, *more: str):
    _, overrides = OVERRIDES["ae_finetune_mn10"]
    return load_config("ae_finetune_mn10", [*COMMON, *overrides, "train.max_steps=null", "optim.scheduler=constant",
                                            f"task.classifier_checkpoint={classifier_file(out)}",
                                            f"data.source={source}", f"output_dir={out}", f"data.cache_dir={out / 'cache'}",
                                            *more])


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def test_checkpoints_leave_the_frozen_classifier_out_and_resume_bit_exactly(small_esc50: Path, tmp_path: Path) -> None:  # noqa: F811 (fixture)
    straight = Trainer(config(small_esc50, tmp_path, "train.epochs=3", "run_id=straight")).fit()
    Trainer(config(small_esc50, tmp_path, "train.epochs=1", "run_id=resumed")).fit()
    resumed = Trainer(config(small_esc50, tmp_path, "train.epochs=3", "run_id=resumed")).fit()

    task, *_ = task_from_checkpoint(straight.run_dir, "latest")
    classifier_keys = {f"classifier.{k}" for k in task.classifier.state_dict()}
    trained_keys = set(task.state_dict()) - classifier_keys
    for checkpoint in CheckpointStore(straight.run_dir).step_dirs():
        held = tensors(checkpoint / WEIGHTS)
        assert set(held) == trained_keys  # the autoencoder (and its buffers) only
        record = json.loads((checkpoint / INFO_FILE).read_text())["frozen"]["classifier"]
        assert record["sha256"] == module_sha256(task.classifier)
        assert record["source"] == f"zoo mn10, weights {classifier_file(tmp_path)}" and record["parameters"] > 4_000_000
    # resuming rebuilt the classifier from its source: the result is bit-identical to the uninterrupted run
    end = tensors(CheckpointStore(straight.run_dir).latest() / WEIGHTS)
    again = tensors(CheckpointStore(resumed.run_dir).latest() / WEIGHTS)
    assert end.keys() == again.keys() and all(torch.equal(end[k], again[k]) for k in end)
    assert resumed.metrics == straight.metrics
    # the export holds the autoencoder, as before
    export = export_run(straight.run_dir)
    assert set(tensors(export / WEIGHTS)) == {k.removeprefix("autoencoder.") for k in trained_keys if k.startswith("autoencoder.")}


def test_a_resume_or_export_with_another_frozen_classifier_is_refused(small_esc50: Path, tmp_path: Path) -> None:  # noqa: F811 (fixture)
    """The checkpoint's record says which classifier it was trained with; the classifier file replaced since by
    other weights cannot silently continue the run, nor be exported with it."""
    run = Trainer(config(small_esc50, tmp_path, "train.epochs=1", "run_id=r")).fit()
    other = classifier_file(tmp_path / "elsewhere", seed=1) if (tmp_path / "elsewhere").mkdir() is None else None
    classifier_file(tmp_path).write_bytes(other.read_bytes())  # same path, other weights
    with pytest.raises(CheckpointError, match=r"resume from .*frozen module 'classifier'.*zoo mn10.*not the one it was "
                                              r"trained with"):
        Trainer(config(small_esc50, tmp_path, "train.epochs=2", "run_id=r")).fit()
    with pytest.raises(CheckpointError, match=r"cannot load .*frozen module 'classifier'"):
        export_run(run.run_dir)


def test_a_classifier_at_random_initialisation_stays_in_the_checkpoints(small_esc50: Path, tmp_path: Path) -> None:  # noqa: F811 (fixture)
    """Without a file to rebuild it from, the frozen classifier's weights are saved (smoke runs, tests)."""
    run = Trainer(config(small_esc50, tmp_path, "train.epochs=1", "task.classifier_checkpoint=null")).fit()
    checkpoint = CheckpointStore(run.run_dir).latest()
    assert any(k.startswith("classifier.") for k in tensors(checkpoint / WEIGHTS))
    assert "frozen" not in json.loads((checkpoint / INFO_FILE).read_text())


def test_weights_with_or_without_the_frozen_module_load_and_others_are_refused(tmp_path: Path) -> None:
    """Older checkpoints hold the frozen weights: they load too. A trained key missing is a CheckpointError."""
    task = torch.nn.ModuleDict({"classifier": torch.nn.Linear(3, 2), "autoencoder": torch.nn.Linear(2, 2)})
    full = {k: v.clone() + 1 for k, v in task.state_dict().items()}
    save_file(full, str(tmp_path / "old.safetensors"))
    save_file({k: v for k, v in full.items() if k.startswith("autoencoder.")}, str(tmp_path / "new.safetensors"))
    save_file({k: v for k, v in full.items() if k.startswith("classifier.")}, str(tmp_path / "bad.safetensors"))
    load_task_weights(task, tmp_path / "old.safetensors", ["classifier"])
    assert torch.equal(task.classifier.weight, full["classifier.weight"])
    load_task_weights(task, tmp_path / "new.safetensors", ["classifier"])
    assert torch.equal(task.autoencoder.bias, full["autoencoder.bias"])
    with pytest.raises(CheckpointError, match=r"2 missing \(autoencoder.bias, autoencoder.weight\)"):
        load_task_weights(task, tmp_path / "bad.safetensors", ["classifier"])
