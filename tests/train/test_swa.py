"""`train.swa`: stochastic weight averaging of the weights after chosen epochs (PaSST's ESC-50 recipe).

Known answers: the mean a run keeps equals the arithmetic mean of its epoch-end checkpoints' weights; a resumed run
keeps the same mean; the averaged weights' logged validation accuracy is what its `--swa` export scores; the live
weights come back unchanged after each evaluation of the mean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.train.config import load_config
from audiointerp.train.evaluate import evaluate
from audiointerp.train.export import export_run
from audiointerp.train.swa import SWA_FILE, WeightAverage, read_average
from audiointerp.train.trainer import Trainer

FLAT = ["optim.scheduler=constant", "optim.warmup_steps=0", "train.keep_last=5"]  # every epoch's checkpoint kept


def network_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The export module's (the classifier's pipeline) floating tensors in a checkpoint, by export name."""
    state = load_file(str(checkpoint / "model.safetensors"))
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.") and v.is_floating_point()}


def test_the_mean_counts_only_the_chosen_epochs_and_swapping_restores_the_live_weights() -> None:
    module = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    average = WeightAverage(module, start_epoch=2, end_epoch=3)
    assert [average.wants(e) for e in range(1, 5)] == [False, True, True, False]
    values = []
    for value in (1.0, 4.0, 10.0):
        with torch.no_grad():
            for p in module.parameters():
                p.fill_(value)
        average.update()
        values.append(value)
    assert average.count == 3 and all(torch.allclose(m, torch.full_like(m, 5.0)) for m in average.mean.values())
    live = {k: v.clone() for k, v in module.state_dict().items()}
    with average.swapped_in():
        assert all(torch.allclose(p, torch.full_like(p, 5.0)) for p in module.parameters())
    assert all(torch.equal(live[k], v) for k, v in module.state_dict().items())


def test_a_run_averages_its_epoch_end_weights_and_exports_the_mean(tiny_overrides: list[str], tmp_path: Path) -> None:
    """Epochs 2 and 3 of 4 averaged: the last checkpoint's mean is the mean of the step-12 and step-18 (epochs 2
    and 3) weights; valid/swa_* is logged from epoch 2 on; the `--swa` export holds the mean, and evaluating it gives
    the logged valid/swa_accuracy; a checkpoint from before epoch 2 has no mean to export."""
    cfg = load_config("classifier", [*tiny_overrides, *FLAT, "train.epochs=4", "train.swa=true",
                                     "train.swa_start_epoch=2", "train.swa_end_epoch=3", "run_id=swa"])
    result = Trainer(cfg).fit()
    checkpoints = result.run_dir / "checkpoints"
    epoch2, epoch3 = network_weights(checkpoints / "step-00000012"), network_weights(checkpoints / "step-00000018")
    mean, count = read_average(checkpoints / "step-00000024")
    assert count == 2 and set(mean) < set(epoch2) and not any("running_" in name for name in mean)  # parameters only
    for name in mean:
        torch.testing.assert_close(mean[name], (epoch2[name] + epoch3[name]) / 2, rtol=1e-6, atol=1e-7)
    assert all(not torch.equal(epoch2[name], epoch3[name]) for name in mean if name.endswith("weight"))
    assert read_average(checkpoints / "step-00000006")[1] == 0  # epoch 1: nothing averaged yet
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    swa_steps = [r["step"] for r in records if "valid/swa_accuracy" in r]
    assert swa_steps == [12, 18, 24] and "valid/swa_accuracy" in result.metrics
    with pytest.raises(CheckpointError, match="before the first averaged epoch"):
        export_run(result.run_dir, tmp_path / "early", checkpoint="6", swa=True)
    export = export_run(result.run_dir, tmp_path / "swa-export", checkpoint="last", swa=True)
    exported = load_file(str(export / "model.safetensors"))
    assert all(torch.equal(exported[name], mean[name]) for name in mean)
    assert json.loads((export / "manifest.json").read_text())["swa_epochs"] == 2
    scored = evaluate(export, progress=False, out_dir=tmp_path / "eval").metrics
    assert scored["accuracy"] == pytest.approx(result.metrics["valid/swa_accuracy"], abs=1e-9)
    assert scored["loss"] == pytest.approx(result.metrics["valid/swa_loss"], rel=1e-5)
    live = export_run(result.run_dir, tmp_path / "live", checkpoint="last")  # without --swa: the live weights
    assert all(torch.equal(load_file(str(live / "model.safetensors"))[k], v)
               for k, v in network_weights(checkpoints / "step-00000024").items())


def test_a_resumed_run_continues_the_same_mean(tiny_overrides: list[str]) -> None:
    common = [*tiny_overrides, *FLAT, "train.swa=true", "train.swa_start_epoch=1"]
    whole = Trainer(load_config("classifier", [*common, "train.epochs=3", "run_id=whole"])).fit()
    Trainer(load_config("classifier", [*common, "train.epochs=2", "run_id=split"])).fit()
    split = Trainer(load_config("classifier", [*common, "train.epochs=3", "run_id=split"])).fit()
    ours, theirs = (read_average(run.run_dir / "checkpoints" / "step-00000018") for run in (split, whole))
    assert ours[1] == theirs[1] == 3 and all(torch.equal(ours[0][k], theirs[0][k]) for k in theirs[0])
    assert split.metrics["valid/swa_accuracy"] == whole.metrics["valid/swa_accuracy"]
    (split.run_dir / "summary.json").unlink()  # killed after its last checkpoint: the rerun only re-scores it
    again = Trainer(load_config("classifier", [*common, "train.epochs=3", "run_id=split"])).fit()
    assert again.metrics["valid/swa_accuracy"] == whole.metrics["valid/swa_accuracy"]
    assert json.loads((split.run_dir / "summary.json").read_text())["final"]["valid/swa_loss"] == pytest.approx(
        whole.metrics["valid/swa_loss"], rel=1e-6)


def test_the_averaged_accuracy_may_choose_the_best_checkpoint_and_bad_epochs_are_refused(tiny_overrides: list[str],
                                                                                         tmp_path: Path) -> None:
    """valid/swa_accuracy as train.best_metric: epoch 1 (nothing averaged) is never best. The test folds are scored
    with the best checkpoint's live weights and with the final mean (test/swa_*), which the `--swa` export (the
    last checkpoint's mean) reproduces."""
    cfg = load_config("classifier", [*tiny_overrides, *FLAT, "train.epochs=3", "train.swa=true",
                                     "train.swa_start_epoch=2", "train.best_metric=valid/swa_accuracy",
                                     "train.best_mode=max", "data.train_folds=[2,3,4]", "data.valid_folds=[1]",
                                     "data.test_folds=[5]", "run_id=best"])
    result = Trainer(cfg).fit()
    assert result.best_checkpoint is not None and int(result.best_checkpoint.name.split("-")[1]) >= 10  # not epoch 1
    assert (result.best_checkpoint / SWA_FILE).is_file()
    export = export_run(result.run_dir, tmp_path / "final-swa", swa=True)  # the last checkpoint's mean by default
    assert json.loads((export / "manifest.json").read_text())["swa_epochs"] == 2
    scored = evaluate(export, folds=["5"], progress=False, out_dir=tmp_path / "test-eval").metrics
    assert scored["accuracy"] == pytest.approx(result.test_metrics["test/swa_accuracy"], abs=1e-9)
    assert "test/accuracy" in result.test_metrics
    for overrides, message in ((["train.swa_start_epoch=0"], "epochs count from 1"),
                               (["train.swa_start_epoch=3", "train.swa_end_epoch=2"], "before train.swa_start_epoch"),
                               (["train.swa_start_epoch=5", "train.epochs=3"], "after the last epoch")):
        with pytest.raises(ConfigError, match=message):
            Trainer(load_config("classifier", [*tiny_overrides, "train.swa=true", *overrides, "run_id=bad"])).fit()
    with pytest.raises(ConfigError, match="ends after 6 updates, before epoch 2"):  # nothing averaged by max_steps
        Trainer(load_config("classifier", [*tiny_overrides, "train.swa=true", "train.swa_start_epoch=2",
                                           "train.max_steps=6", "train.best_metric=valid/swa_accuracy",
                                           "train.best_mode=max", "run_id=short"])).fit()
    with pytest.raises(ConfigError, match="valid/swa_accuracy"):  # a swa metric needs train.swa
        Trainer(load_config("classifier", [*tiny_overrides, "train.best_metric=valid/swa_accuracy", "run_id=no"])).fit()
