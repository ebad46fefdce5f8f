"""The training loop reads nothing from the device on each step for its bookkeeping: losses, logs and finiteness
flags are read in one synchronisation per logging window (and before each checkpoint). On the CPU every read
is free, so the test counts the calls that would synchronise a GPU (`item`, `tolist`, `float`, `bool`, `int`,
`cpu`, `numpy`) made by the trainer's own code."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

import audiointerp.train.trainer as trainer_module
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer

READS = ("item", "tolist", "__float__", "__bool__", "__int__", "cpu", "numpy")
PER_STEP = {"run_epoch", "_note_loss", "_accumulate_logs", "after_update", "_timed", "_count_skipped_update"}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """(function of trainer.py, read) -> calls, while the fixture is active."""
    counts: Counter = Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename == trainer_module.__file__:
                counts[(caller.co_name, _name)] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def test_one_device_read_per_logging_window_and_none_per_step(tiny_overrides: list[str], reads: Counter) -> None:
    """24 updates, a window every 4: exactly one read in `_reduced_window` per window and per checkpoint, none in
    the per-step code (the old loop read the loss flag, every log and the progress bar's loss on every batch)."""
    cfg = load_config("classifier", [*tiny_overrides, "train.log_every_steps=4", "train.epochs=2"])
    result = Trainer(cfg).fit()
    per_step = {key: n for key, n in reads.items() if key[0] in PER_STEP}
    assert per_step == {}
    windows = sum(1 for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if '"train/loss"' in line)
    checkpoints = 2  # one per epoch
    assert reads[("_reduced_window", "tolist")] == windows + checkpoints
    assert {key for key in reads if key[0] == "_reduced_window"} == {("_reduced_window", "tolist")}


def test_a_non_finite_loss_is_still_named_at_its_batch_and_nothing_is_saved(tiny_overrides: list[str],
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Read at the window's end, the first non-finite loss of the window is named with its own epoch, update and
    batch, and the run stops before the checkpoint that would have followed."""
    from audiointerp.errors import NonFiniteLossError
    from audiointerp.train.tasks.classifier_task import ClassifierTask

    step, calls = ClassifierTask.step, {"n": 0}

    def poisoned(self, batch):
        loss, logs = step(self, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] == 3 else loss), logs

    monkeypatch.setattr(ClassifierTask, "step", poisoned)
    cfg = load_config("classifier", [*tiny_overrides, "train.log_every_steps=5", "train.checkpoint_every_steps=4"])
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss \(nan .*epoch 0, update 2, batch 2 of the "
                                                 r"epoch.*the last good checkpoint is none"):
        Trainer(cfg).fit()
