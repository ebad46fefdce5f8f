"""Two CPU processes (torchrun, gloo): sharded training, one writer, the same evaluation as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audiointerp.train.checkpoint import CheckpointStore


def torchrun(args: list[str], nproc: int, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "audiointerp", *args] if nproc > 1 else [sys.executable, "-m", "audiointerp", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.timeout(900)
def test_two_processes_shard_the_data_write_once_and_evaluate_like_one(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides if not o.startswith("tracking.")]
    torchrun(["train", "classifier", *overrides, "tracking.backend=wandb", "tracking.mode=offline", "train.epochs=2"],
              2, tmp_path)
    runs = list((tmp_path / "runs" / "classifier").iterdir())
    assert len(runs) == 1  # both processes agreed on one run directory
    run = runs[0]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6  # 96 clips / (16 per process x 2 processes) = 3 updates an epoch
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run
    assert [p.name for p in CheckpointStore(run).step_dirs()] == ["step-00000003", "step-00000006"]
    ckpt = CheckpointStore(run).latest()
    assert sorted(p.name for p in ckpt.glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "valid/accuracy" in r]) == 2  # written once per evaluation, not per process
    assert summary["final"]["valid/examples"] == 24  # the padded duplicates of the uneven last batch are dropped

    one = tmp_path / "eval-1"
    two = tmp_path / "eval-2"
    torchrun(["evaluate", str(run), "--checkpoint", "last", "--out", str(one), "--batch-size", "7"], 1, tmp_path)
    torchrun(["evaluate", str(run), "--checkpoint", "last", "--out", str(two), "--batch-size", "7"], 2, tmp_path)
    metrics_one = json.loads((one / "metrics.json").read_text())
    metrics_two = json.loads((two / "metrics.json").read_text())
    assert metrics_one["examples"] == metrics_two["examples"] == 24
    assert metrics_one == pytest.approx(metrics_two, rel=1e-5, abs=1e-6)


@pytest.mark.timeout(900)
def test_two_process_ae_finetune_run(tiny_data: Path, tmp_path: Path) -> None:
    tiny_ae = ["model.params.channels=8", "model.params.num_blocks=[1,1,1,1,1,1]", "task.ae_rate=16000", "task.start=random",
               "task.classifier=small_cnn", "task.classifier_checkpoint=null", "task.classifier_params.widths=[4,8,8,16]",
               "data.format=manifest", "data.sample_rate=16000", "data.seconds=1.0", "data.batch_size=8", "data.eval_batch_size=8",
               "data.num_workers=0", "model.checkpoint=null", "tracking.backend=none", "train.progress=false",
               "tracking.audio_examples=2", "train.max_steps=2", f"data.source={tiny_data}", f"output_dir={tmp_path / 'runs'}",
               f"data.cache_dir={tmp_path / 'cache'}"]
    torchrun(["train", "ae_finetune_mn10", *tiny_ae], 2, tmp_path)
    run = next((tmp_path / "runs" / "ae_finetune_mn10").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["final"]["valid/examples"] == 24
    assert sorted(p.name for p in CheckpointStore(run).latest().glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                                                "random_states_1.pkl"]


@pytest.mark.timeout(900)
def test_two_process_flow_run(small_cnn_store: Path, tmp_path: Path) -> None:
    """The flow's ActNorms are data-initialised before `prepare` on the same clips in both processes, so the DDP
    replicas start (and stay) equal; the run trains, evaluates once per epoch and exports an exact inverse."""
    import numpy as np

    from audiointerp.analysis import ActivationStore
    from audiointerp.train.export import export_run, load_export_task
    from tests.train.tasks.test_flow_task import FLOW_TINY

    torchrun(["train", "flow", *FLOW_TINY, f"data.source={small_cnn_store}", "task.layer=block3",
              f"output_dir={tmp_path / 'runs'}"], 2, tmp_path)
    run = next((tmp_path / "runs" / "flow").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4  # 96 pairs / (32 per process x 2) = 2 updates an epoch, 2 epochs
    assert summary["final"]["valid/examples"] == 24
    task, _ = load_export_task(export_run(run, checkpoint="last"))
    x = ActivationStore(small_cnn_store).load("block3", np.arange(10))
    assert np.linalg.norm(task.decode(*task.encode(x)) - x) / np.linalg.norm(x) < 1e-4
