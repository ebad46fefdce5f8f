from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from audiointerp.errors import NonFiniteLossError
from audiointerp.train.checkpoint import CheckpointStore
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_training_writes_the_run_directory_and_learns(tiny_overrides: list[str]) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "train.epochs=3", "optim.lr=0.01", "train.keep_last=1"])
    result = Trainer(cfg).fit()
    run = result.run_dir
    assert run.parent.name == "classifier"
    for name in ("config.yaml", "metrics.jsonl", "events.log", "metadata.json", "summary.json", "figures/learning_curves.png",
                 "figures/confusion_matrix.png"):
        assert (run / name).is_file(), name
    assert OmegaConf.load(run / "config.yaml").train.epochs == 3  # fully resolved config
    records = read_jsonl(run / "metrics.jsonl")
    train_losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert train_losses[-1] < train_losses[0]
    assert [r["step"] for r in records] == sorted(r["step"] for r in records)
    assert sum("valid/accuracy" in r for r in records) == 3  # one evaluation per epoch
    # 96 training clips (folds 2-5), batch 16: 6 updates an epoch
    assert json.loads((run / "summary.json").read_text())["steps"] == 18
    store = CheckpointStore(run)
    assert [p.name for p in store.step_dirs()][-1] == "step-00000018"
    assert len(store.step_dirs()) <= 2  # keep_last=1, plus best
    assert store.best() is not None and (run / "checkpoints" / "best").is_symlink()
    assert result.metrics["valid/examples"] == 24


def test_gradient_accumulation_counts_optimizer_updates(tiny_overrides: list[str]) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "train.epochs=1", "train.gradient_accumulation_steps=2"])
    run = Trainer(cfg).fit().run_dir
    # 6 batches with accumulation 2: 3 updates
    assert json.loads((run / "summary.json").read_text())["steps"] == 3


def test_max_steps_stops_mid_epoch_and_still_evaluates(tiny_overrides: list[str]) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "train.max_steps=3"])
    result = Trainer(cfg).fit()
    assert json.loads((result.run_dir / "summary.json").read_text())["steps"] == 3
    assert "valid/accuracy" in result.metrics


def test_non_finite_loss_stops_without_overwriting_the_last_checkpoint(tiny_overrides: list[str], monkeypatch) -> None:
    from audiointerp.train.tasks.classifier_task import ClassifierTask

    original = ClassifierTask.step
    calls = {"n": 0}

    def step(self, batch):
        calls["n"] += 1
        loss, logs = original(self, batch)
        return (loss * float("nan") if calls["n"] == 7 else loss), logs

    monkeypatch.setattr(ClassifierTask, "step", step)
    cfg = load_config("classifier", tiny_overrides)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss.*epoch 1, update 6.*step-00000006"):
        Trainer(cfg).fit()
    run = next((Path(cfg.output_dir) / "classifier").iterdir())
    assert [p.name for p in CheckpointStore(run).step_dirs()] == ["step-00000006"]
    assert not (run / "summary.json").exists()


RUNNER = """
import os, signal, sys
from audiointerp.train.config import load_config
from audiointerp.train import trainer

kill_at = int(sys.argv[1])
if kill_at:
    original = trainer._Loop.after_update
    def after_update(self):
        original(self)
        if self.state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a hard kill: no cleanup, no flush
    trainer._Loop.after_update = after_update
trainer.Trainer(load_config("classifier", sys.argv[2:])).fit()
"""


def test_a_killed_run_resumes_to_the_same_weights_and_metrics(tiny_overrides: list[str], tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    common = [*tiny_overrides, "train.epochs=3", "train.checkpoint_every_steps=4", "data.seconds=0.6",
              "model.params.dropout=0.3"]

    def run(kill_at: int, run_id: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        return subprocess.run([sys.executable, str(script), str(kill_at), *common, f"run_id={run_id}"],
                              capture_output=True, text=True, env=env, timeout=600)

    straight = run(0, "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run(17, "killed")  # update 17 is mid-epoch 3; the latest checkpoint is update 16 (mid-epoch)
    assert killed.returncode == -9, killed.stderr[-3000:]
    runs = Path(tmp_path / "runs" / "classifier")
    assert CheckpointStore(runs / "killed").latest().name == "step-00000016"
    resumed = run(0, "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in (runs / "killed" / "events.log").read_text()

    final_a = load_file(str(CheckpointStore(runs / "straight").latest() / "model.safetensors"))
    final_b = load_file(str(CheckpointStore(runs / "killed").latest() / "model.safetensors"))
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key

    def without_time(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "time"} for r in read_jsonl(path)]

    assert without_time(runs / "straight" / "metrics.jsonl") == without_time(runs / "killed" / "metrics.jsonl")


def test_resume_auto_continues_the_latest_unfinished_run_of_the_same_config(tiny_overrides: list[str]) -> None:
    from audiointerp.train.rundir import plan_run

    cfg = load_config("classifier", [*tiny_overrides, "train.max_steps=2"])
    run = Trainer(cfg).fit().run_dir
    (run / "summary.json").unlink()  # as if it had been killed after its last checkpoint
    plan = plan_run(load_config("classifier", [*tiny_overrides, "train.max_steps=4"]))
    assert plan.run_dir == run and plan.resume_from == CheckpointStore(run).latest()
    other = plan_run(load_config("classifier", [*tiny_overrides, "optim.lr=0.5"]))
    assert other.run_dir != run and other.resume_from is None
    never = plan_run(load_config("classifier", [*tiny_overrides, "train.resume=never"]))
    assert never.run_dir != run and never.resume_from is None


def test_zero_epochs_evaluates_and_saves_the_untrained_network(tiny_overrides: list[str]) -> None:
    result = Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=0"])).fit()
    assert [p.name for p in CheckpointStore(result.run_dir).step_dirs()] == ["step-00000000"]
    assert CheckpointStore(result.run_dir).best().name == "step-00000000"
    assert 0.0 <= result.metrics["valid/accuracy"] <= 1.0


def test_resuming_with_another_config_is_refused_and_changes_nothing(tiny_overrides: list[str]) -> None:
    from audiointerp.errors import ConfigError

    run = Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=1", "run_id=r"])).fit().run_dir
    (run / "summary.json").unlink()
    saved = (run / "config.yaml").read_text()
    other = load_config("classifier", [*tiny_overrides, "train.epochs=1", "run_id=r", "model.params.widths=[4,8,8,8]"])
    with pytest.raises(ConfigError, match=r"cannot resume .* changed: model.params.widths"):
        Trainer(other).fit()
    assert (run / "config.yaml").read_text() == saved


def test_a_bad_best_metric_fails_before_training_and_leaves_no_run_folder(tiny_overrides: list[str]) -> None:
    from audiointerp.errors import ConfigError

    cfg = load_config("classifier", [*tiny_overrides, "train.best_metric=valid/acuracy"])
    with pytest.raises(ConfigError, match=r"valid/acuracy.*did you mean 'valid/accuracy'"):
        Trainer(cfg).fit()
    assert not list((Path(cfg.output_dir) / "classifier").iterdir())


def test_a_half_written_metrics_line_from_a_kill_does_not_break_resume(tmp_path: Path) -> None:
    from audiointerp.train.tracking import MetricsLog

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a": 3}\n{"epoch": 1.3, "step": 4, "train/lo')
    MetricsLog(path).truncate_after(2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_efficientat_augmentations_train_and_leave_evaluation_alone(tiny_overrides: list[str]) -> None:
    from audiointerp.train.tasks import task_class

    cfg = load_config("classifier", [*tiny_overrides, "task.mixup_alpha=0.3", "task.roll_samples=4000", "task.gain_db=12"])
    task = task_class("classifier")(cfg)
    data = task.build_data()
    task.build_models(data.metadata)
    batch = {k: torch.stack([data.train[i][k] for i in range(4)]) for k in ("audio", "target", "index")}
    plain = task_class("classifier")(load_config("classifier", tiny_overrides))
    plain.build_models(data.metadata)
    plain.load_state_dict(task.state_dict())
    task.eval(), plain.eval()  # evaluation does not augment
    torch.testing.assert_close(task.eval_step(batch)["logits"], plain.eval_step(batch)["logits"])
    task.train(), plain.train()
    torch.manual_seed(0)
    augmented, _ = task.step(batch)
    torch.manual_seed(0)
    reference, _ = plain.step(batch)
    assert torch.isfinite(augmented) and not torch.isclose(augmented, reference)


def test_esc50_recipe_fine_tunes_an_audioset_checkpoint_with_a_new_head(esc50_tree: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from audiointerp.models import build

    save_file(build("mn04", num_classes=527).state_dict(), str(tmp_path / "mn04_as.safetensors"))  # real key layout
    cfg = load_config("esc50_mn10", [
        f"data.source={esc50_tree}", f"model.checkpoint={tmp_path / 'mn04_as.safetensors'}", "model.name=mn04",
        "data.seconds=1.0", "data.batch_size=4", "data.num_workers=0", "train.max_steps=2", "train.progress=false",
        f"output_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}", "tracking.backend=none"])
    with pytest.warns(UserWarning, match="head not loaded"):
        result = Trainer(cfg).fit()
    assert json.loads((result.run_dir / "metadata.json").read_text())["classes"] == ["glass_breaking", "door_wood_knock",
                                                                                      "can_opening"]
    assert 0.0 <= result.metrics["valid/accuracy"] <= 1.0


def test_test_folds_are_scored_with_the_best_checkpoint_and_named(tiny_overrides: list[str]) -> None:
    """data.test_folds: after training, the best checkpoint (chosen on the validation folds) is also scored on the
    test folds. Known answer: best_mode=max on valid/loss picks the worse first epoch, so the test figures must equal
    `evaluate` of checkpoint `best` on fold 5, and its 24 clips; summary.json names both sets."""
    from audiointerp.train.evaluate import evaluate

    cfg = load_config("classifier", [*tiny_overrides, "data.train_folds=[2,3,4]", "data.valid_folds=[1]",
                                     "data.test_folds=[5]", "train.best_mode=max", "optim.lr=0.01"])
    result = Trainer(cfg).fit()
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["best_step"] < summary["steps"]  # the best is not the last checkpoint
    assert summary["sets"] == {"valid": {"source": cfg.data.source, "folds": ["1"]},
                               "test": {"source": cfg.data.source, "folds": ["5"]}}
    test = summary["test"]
    assert test["test/examples"] == 24
    best = evaluate(result.run_dir, folds=["5"], progress=False, out_dir=result.run_dir / "eval-test")
    assert test == pytest.approx({f"test/{k}": v for k, v in best.metrics.items()})
    last = evaluate(result.run_dir, folds=["5"], checkpoint="last", progress=False, out_dir=result.run_dir / "eval-last")
    assert test["test/loss"] != pytest.approx(last.metrics["loss"])
    records = read_jsonl(result.run_dir / "metrics.jsonl")
    assert any(r.get("test/loss") == pytest.approx(test["test/loss"]) for r in records)


@pytest.mark.parametrize("folds,pattern", [(["data.test_folds=[1]"], "fold.*1.*both data.valid_folds and data.test_folds"),
                                           (["data.test_folds=[2]"], "fold.*2.*both data.train_folds and data.test_folds")])
def test_a_test_fold_used_for_training_or_validation_is_a_config_error(tiny_overrides: list[str], folds: list[str], pattern: str) -> None:
    from audiointerp.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern):
        Trainer(load_config("classifier", [*tiny_overrides, *folds])).fit()
