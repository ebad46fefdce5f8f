"""`train.compile=true`: the task's networks are compiled in place, so checkpoints and exports hold plain
state-dict keys (no `_orig_mod.`), and a compiled run resumes into an uncompiled one and back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from audiointerp.train.checkpoint import CheckpointStore
from audiointerp.train.config import load_config
from audiointerp.train.export import WEIGHTS, export_run
from audiointerp.train.trainer import Trainer


def keys(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as handle:
        return sorted(handle.keys())


def weights(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


def config(overrides: list[str], *more: str):
    return load_config("classifier", [*overrides, "train.compile_backend=aot_eager", "train.log_every_steps=1",
                                      "optim.scheduler=constant", "optim.warmup_steps=0", *more])  # epochs change: a flat lr


def test_a_compiled_run_saves_plain_keys_and_resumes_across_compiling(tiny_overrides: list[str]) -> None:
    """Epoch 1 compiled, epoch 2 resumed uncompiled, epoch 3 resumed compiled again: every checkpoint and the
    export hold exactly the uncompiled network's keys, and the run ends where an uncompiled run of 3 epochs ends
    (aot_eager traces the same operations, so the weights agree to float rounding)."""
    plain = Trainer(config(tiny_overrides, "train.epochs=3", "run_id=plain")).fit()
    reference = weights(CheckpointStore(plain.run_dir).latest() / WEIGHTS)

    first = Trainer(config(tiny_overrides, "train.epochs=1", "train.compile=true", "run_id=r")).fit()
    expected = keys(CheckpointStore(plain.run_dir).latest() / WEIGHTS)
    assert not any("_orig_mod" in key for key in expected)
    assert keys(CheckpointStore(first.run_dir).latest() / WEIGHTS) == expected
    Trainer(config(tiny_overrides, "train.epochs=2", "train.compile=false", "run_id=r")).fit()
    last = Trainer(config(tiny_overrides, "train.epochs=3", "train.compile=true", "run_id=r")).fit()

    store = CheckpointStore(last.run_dir)
    for checkpoint in store.step_dirs():
        assert keys(checkpoint / WEIGHTS) == expected
    resumed = weights(store.latest() / WEIGHTS)
    assert json.loads((last.run_dir / "summary.json").read_text())["steps"] == int(store.latest().name.split("-")[1])
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=1e-4, atol=1e-5, msg=key)
    export = export_run(last.run_dir)
    assert keys(export / WEIGHTS) == sorted(k.removeprefix("model.") for k in expected if k.startswith("model."))


@pytest.mark.slow
def test_inductor_compiles_the_classifier_on_cpu(tiny_overrides: list[str]) -> None:
    """The default backend (inductor, C++ on the CPU) trains and scores as the uncompiled network does."""
    plain = Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=1"])).fit()
    compiled = Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=1", "train.compile=true",
                                                  "run_id=inductor"])).fit()
    assert compiled.metrics["valid/loss"] == pytest.approx(plain.metrics["valid/loss"], rel=1e-3)
