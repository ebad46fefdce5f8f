"""Issue 12.1: no poisoned checkpoints. A non-finite parameter or buffer stops the run like a non-finite loss; no
checkpoint is written with one; "last good" names a checkpoint verified finite; resume refuses a non-finite
checkpoint; fp16 updates skipped for inf gradients are errors only when 20 come in a row; non-finite evaluation
outputs stop the run with an error naming the output and the run (not sklearn's "Input contains NaN").

All runs are the tiny classifier (4-8-8-16 channels, 96 training clips) on the CPU, a few seconds each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from audiointerp.errors import CheckpointError, NonFiniteLossError
from audiointerp.train.checkpoint import INFO_FILE, CheckpointStore
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer

RECIPE = ["optim.lr=1e6", "optim.grad_clip=null", "optim.warmup_steps=0", "train.checkpoint_every_steps=1"]


def non_finite(checkpoint: Path) -> list[str]:
    """Names of the non-finite floating tensors in a checkpoint's weights."""
    tensors = load_file(str(checkpoint / "model.safetensors"))
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]


def only_run(cfg) -> Path:
    (run,) = (Path(cfg.output_dir) / "classifier").iterdir()
    return run


def last_good(message: str) -> str:
    found = re.search(r"last good checkpoint is (\S+?)(?: \(|[.;,]? )", message)
    assert found, message
    return found.group(1)


def test_the_issue_recipe_writes_only_finite_checkpoints_and_names_a_finite_last_good(tiny_overrides: list[str]) -> None:
    """lr=1e6 without clipping or warm-up, a checkpoint every update: before the fix step-3 held 7 non-finite
    BatchNorm running_var tensors, step-4 held 30, and the error called step-4 the last good checkpoint."""
    cfg = load_config("classifier", [*tiny_overrides, *RECIPE, "train.keep_last=100"])
    with pytest.raises(NonFiniteLossError) as caught:
        Trainer(cfg).fit()
    run = only_run(cfg)
    saved = CheckpointStore(run).step_dirs()
    assert {c.name: non_finite(c) for c in saved} == {c.name: [] for c in saved}
    assert all(json.loads((c / INFO_FILE).read_text())["finite"] is True for c in saved)
    named = last_good(str(caught.value))
    if saved:
        assert Path(named) == saved[-1] and non_finite(Path(named)) == []
    else:
        assert named == "none"


@pytest.mark.parametrize("every,caught_at,good", [("1", "update 3", "step-00000002"),  # before the checkpoint of update 3
                                                  ("null", "update 4", "none")])  # at the logging of update 4
def test_a_non_finite_buffer_with_a_finite_loss_stops_the_run(tiny_overrides: list[str], monkeypatch, every: str,
                                                               caught_at: str, good: str) -> None:
    """A BatchNorm running_var turned NaN during update 3 leaves the training loss finite (training uses batch
    statistics). Before the fix the run went on, saved it, and died at evaluation with sklearn's bare
    "Input contains NaN"; a rerun resumed the poisoned checkpoint."""
    from audiointerp.train.tasks.classifier_task import ClassifierTask

    original = ClassifierTask.step
    calls = {"n": 0}

    def step(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # the forward pass keeps it NaN: running_var = (1 - momentum) * NaN + ...
            norm = next(m for m in self.modules() if isinstance(m, torch.nn.BatchNorm2d))
            with torch.no_grad():
                norm.running_var.fill_(float("nan"))
        return original(self, batch)

    monkeypatch.setattr(ClassifierTask, "step", step)
    cfg = load_config("classifier", [*tiny_overrides, f"train.checkpoint_every_steps={every}", "run_id=r"])
    with pytest.raises(NonFiniteLossError, match=rf"non-finite.*running_var.*{caught_at}") as caught:
        Trainer(cfg).fit()
    assert last_good(str(caught.value)).endswith(good)
    run = only_run(cfg)
    for checkpoint in CheckpointStore(run).step_dirs():
        assert non_finite(checkpoint) == [], checkpoint.name
    monkeypatch.setattr(ClassifierTask, "step", original)
    Trainer(load_config("classifier", [*tiny_overrides, f"train.checkpoint_every_steps={every}", "run_id=r"])).fit()
    assert json.loads((run / "summary.json").read_text())["steps"] == 12  # the rerun resumed a finite state


def test_resume_refuses_a_non_finite_checkpoint_and_names_the_last_finite_one(tiny_overrides: list[str]) -> None:
    """step-4 is poisoned though its checkpoint.json says finite (a file damaged afterwards); step-3 is poisoned
    and, like a checkpoint from before the fix, has no `finite` flag; step-2 has no flag either but is finite.
    Before the fix the resume loaded step-4 and trained on from it without a word."""
    common = [*tiny_overrides, "train.checkpoint_every_steps=1", "train.keep_last=10", "run_id=r"]
    run = Trainer(load_config("classifier", [*common, "train.max_steps=4"])).fit().run_dir
    (run / "summary.json").unlink()
    store = CheckpointStore(run)
    assert [p.name for p in store.step_dirs()] == [f"step-0000000{i}" for i in (1, 2, 3, 4)]
    for name in ("step-00000003", "step-00000004"):
        weights = store.dir / name / "model.safetensors"
        tensors = load_file(str(weights))
        key = next(k for k in tensors if k.endswith("running_var"))
        tensors[key] = torch.full_like(tensors[key], float("inf"))
        save_file(tensors, str(weights))
    for name in ("step-00000002", "step-00000003"):
        info = json.loads((store.dir / name / INFO_FILE).read_text())
        info.pop("finite", None)
        (store.dir / name / INFO_FILE).write_text(json.dumps(info))
    metrics_before = (run / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"step-00000004.*non-finite.*running_var.*last finite checkpoint is "
                                              r"\S*step-00000002.*train.resume=") as caught:
        Trainer(load_config("classifier", [*common, "train.max_steps=6"])).fit()
    assert "step-00000003" not in str(caught.value).split("last finite")[1]
    assert (run / "metrics.jsonl").read_text() == metrics_before  # a refused resume changes nothing
    assert store.last_finite(verify=True) == store.dir / "step-00000002"  # weights read, flags not trusted
    assert store.last_finite(before=store.dir / "step-00000004") == store.dir / "step-00000002"  # unflagged: read


def test_non_finite_evaluation_outputs_name_the_output_and_the_run(tiny_overrides: list[str], monkeypatch) -> None:
    """Before the fix the validation died in sklearn with "Input contains NaN", naming neither the metric nor the run."""
    from audiointerp.train.tasks.classifier_task import ClassifierTask

    original = ClassifierTask.eval_step

    def eval_step(self, batch):
        outputs = original(self, batch)
        return {**outputs, "logits": outputs["logits"] * float("nan")}

    monkeypatch.setattr(ClassifierTask, "eval_step", eval_step)
    cfg = load_config("classifier", [*tiny_overrides, "train.max_steps=2"])
    with pytest.raises(NonFiniteLossError, match=r"validat.*output 'logits'.*non-finite") as caught:
        Trainer(cfg).fit()
    message = str(caught.value)
    assert str(only_run(cfg)) in message and "accuracy" in message
    assert "Input contains NaN" not in message


@pytest.mark.parametrize("pattern,fails", [("19 skipped, 1 kept, then skipped", False), ("always skipped", True)])
def test_fp16_updates_skipped_for_inf_gradients_fail_only_when_20_come_in_a_row(tiny_overrides: list[str], monkeypatch,
                                                                                 pattern: str, fails: bool) -> None:
    """The gradient scaler skips an update whose gradients overflowed (Accelerate's `optimizer_step_was_skipped`);
    the CPU has no fp16 scaler, so the flag is simulated. Before the fix a run of only skipped updates went on."""
    from accelerate import Accelerator

    updates = {"n": 0}

    def skipped(self) -> bool:
        updates["n"] += 1
        return fails or updates["n"] != 20

    monkeypatch.setattr(Accelerator, "optimizer_step_was_skipped", property(skipped))
    cfg = load_config("classifier", [*tiny_overrides, "data.batch_size=4", "train.max_steps=24", "train.epochs=1"])
    if fails:
        with pytest.raises(NonFiniteLossError, match=r"20 optimizer updates in a row.*skipped.*update 20"):
            Trainer(cfg).fit()
    else:
        result = Trainer(cfg).fit()
        assert json.loads((result.run_dir / "summary.json").read_text())["steps"] == 24


TWO_PROCESS_RUNNER = """
import os, sys, torch
from audiointerp.train.config import load_config
from audiointerp.train.tasks.classifier_task import ClassifierTask
from audiointerp.train.trainer import Trainer

original, calls = ClassifierTask.step, {"n": 0}
def step(self, batch):
    calls["n"] += 1
    if calls["n"] == 2 and os.environ["RANK"] == "1":  # only process 1 is poisoned, during update 2
        norm = next(m for m in self.modules() if isinstance(m, torch.nn.BatchNorm2d))
        with torch.no_grad():
            norm.running_var.fill_(float("inf"))
    return original(self, batch)
ClassifierTask.step = step
Trainer(load_config("classifier", sys.argv[1:])).fit()
"""


@pytest.mark.timeout(600)
def test_a_non_finite_buffer_on_one_process_stops_every_process_before_the_checkpoint(tiny_overrides: list[str],
                                                                                     tmp_path: Path) -> None:
    """Two CPU processes (torchrun, gloo): the finiteness flag is all-reduced, so both stop together at the
    checkpoint of update 2 (no hang in a collective, no checkpoint of the poisoned state)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "run.py"
    script.write_text(TWO_PROCESS_RUNNER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), *tiny_overrides, "train.checkpoint_every_steps=1", "run_id=r"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=500)
    assert result.returncode != 0
    assert "NonFiniteStateError" in result.stderr, result.stderr[-4000:]
    assert re.search(r"non-finite parameter\(s\) or buffer\(s\) \(model\.\S+running_var\) on process 1 after update 2",
                     result.stderr), result.stderr[-4000:]
    events = (Path(tmp_path / "runs" / "classifier" / "r") / "events.log").read_text()  # process 0's log
    assert re.search(r"non-finite parameters or buffers on another process after update 2.*step-00000001 "
                     r"\(verified finite\)", events), events[-3000:]
    assert [p.name for p in CheckpointStore(tmp_path / "runs" / "classifier" / "r").step_dirs()] == ["step-00000001"]
