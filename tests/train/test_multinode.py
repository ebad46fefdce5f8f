"""Two torchrun "nodes" of one process each on 127.0.0.1 (gloo on the CPU), as far as one machine allows.

`scripts/slurm/*.sbatch` run as they would under SLURM, with `srun` and `scontrol` replaced by stand-ins (`fake_slurm`):
`srun` starts its tasks at once on this machine, each "node" in its own working directory with its own
SLURM_NODEID, and `scontrol show hostnames` names 127.0.0.1. So each node is its own torchrun agent (`--nnodes 2
--nproc_per_node 1`, c10d rendezvous at 127.0.0.1:PORT under the job's id), and the nodes share only the output
folder (the shared file system). With one process per node both processes have LOCAL_RANK 0: anything keyed by
the local rank instead of the global one (the writer of a run, a store's shard) would collide here. Training must
equal the same config on two processes of one node; extraction must equal one process, and resume on a static
rendezvous (`--node_rank`, as `accelerate launch --machine_rank`). Not tested: a network between hosts, NCCL, GPUs,
SLURM itself (see docs/multinode.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.torch import load_file

from audiointerp.datasets.store import SHARD_GLOB, ActivationStore, StoreError, chunks_of
from audiointerp.train.checkpoint import CheckpointStore
from tests.train.test_distributed import torchrun

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
TIMEOUT_S = 600
RUN_LOG_LINE = "INFO audiointerp: run "  # the trainer's set-up line: only global rank 0 sets up logging

# `srun [--ntasks=N] [--option=value ...] COMMAND...`: N tasks ("nodes") at once, node i in $FAKE_SLURM_NODES/node<i>
# with SLURM_NODEID=i, output in node.log there; one failing ends the others (--kill-on-bad-exit).
FAKE_SRUN = """\
import os, subprocess, sys, time
args, ntasks = sys.argv[1:], 1
while args and args[0].startswith("-"):
    option = args.pop(0)
    if option.startswith("--ntasks="):
        ntasks = int(option.split("=", 1)[1])
processes = []
for node in range(ntasks):
    cwd = os.path.join(os.environ["FAKE_SLURM_NODES"], f"node{node}")
    os.makedirs(cwd, exist_ok=True)
    env = {**os.environ, "SLURM_NODEID": str(node), "SLURM_PROCID": str(node), "SLURM_LOCALID": "0"}
    log = open(os.path.join(cwd, "node.log"), "w")
    processes.append(subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT))
while not all(p.poll() == 0 for p in processes) and not any(p.poll() not in (None, 0) for p in processes):
    time.sleep(0.2)
for p in processes:
    if p.poll() is None:
        p.kill()
sys.exit(int(any(p.wait() != 0 for p in processes)))
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (the rendezvous binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fake_slurm(tmp_path: Path) -> dict[str, str]:
    """The environment of a two-node job of one GPU (here: one CPU process) per node, with `srun` and `scontrol`
    stand-ins first on PATH, then this interpreter's `torchrun` and `python3`."""
    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(f"#!{sys.executable}\n{FAKE_SRUN}", encoding="utf-8")
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho 127.0.0.1\n", encoding="utf-8")
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(0o755)
    job = str(free_port())  # a job id unlike any other test's, for the rendezvous id
    return {**os.environ, "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
            "SLURM_JOB_ID": job, "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[0-1]", "SLURM_GPUS_ON_NODE": "1",
            "SLURM_CPUS_PER_TASK": "1", "SLURM_SUBMIT_DIR": str(tmp_path), "FAKE_SLURM_NODES": str(tmp_path / "nodes"),
            "PYTHONHASHSEED": "0"}


def sbatch(script: str, args: list[str], env: dict[str, str], tmp_path: Path) -> list[str]:
    """Run `scripts/slurm/<script>` as the batch step of the fake job; return each node's output, node 0 first."""
    result = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=TIMEOUT_S)
    nodes = Path(env["FAKE_SLURM_NODES"])
    outputs = [(nodes / f"node{n}" / "node.log").read_text(encoding="utf-8") for n in range(2)]
    assert result.returncode == 0, "\n\n".join([result.stdout + result.stderr[-2000:],
                                                *(f"node {n}:\n{o[-3000:]}" for n, o in enumerate(outputs))])
    return outputs


def launch_static(args: list[str], tmp_path: Path) -> None:
    """`python -m audiointerp ARGS` as two torchrun nodes of one process each on a static rendezvous
    (`--node_rank {0,1} --master_addr 127.0.0.1 --master_port PORT`), started at once; both must exit 0."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    processes = []
    for node in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                   f"--node_rank={node}", "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "audiointerp", *args]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env=env, cwd=tmp_path))
    try:
        outputs = [process.communicate(timeout=TIMEOUT_S)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:  # a node hung (its peer failed): do not leave it waiting
                process.kill()
                process.wait()
    assert [p.returncode for p in processes] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)


def only_run(output_dir: Path, experiment: str) -> Path:
    runs = list((output_dir / experiment).iterdir())
    assert len(runs) == 1, runs  # every process agreed on one run folder
    return runs[0]


@pytest.mark.timeout(900)
def test_two_nodes_train_like_two_processes_of_one_node(tiny_overrides: list[str], tmp_path: Path) -> None:
    """train_multinode.sbatch: one run folder (the job's run id), written by global rank 0 alone, whose weights
    and metrics equal the same config trained by `torchrun --nproc_per_node 2` on one node."""
    overrides = [o for o in tiny_overrides if not o.startswith(("tracking.", "output_dir="))]
    env = fake_slurm(tmp_path)
    shared, one_node = tmp_path / "shared" / "runs", tmp_path / "one-node" / "runs"
    outputs = sbatch("train_multinode.sbatch", ["classifier", *overrides, "tracking.backend=wandb",
                                                "tracking.mode=offline"], {**env, "OUTPUT_DIR": str(shared)}, tmp_path)
    torchrun(["train", "classifier", *overrides, f"output_dir={one_node}", "tracking.backend=none"], 2, tmp_path)

    run, reference = only_run(shared, "classifier"), only_run(one_node, "classifier")
    assert run.name == f"slurm-{env['SLURM_JOB_ID']}"
    assert sum(RUN_LOG_LINE in output for output in outputs) == 1  # one node holds global rank 0 and logs
    assert all(f"run directory: {run}" in output for output in outputs)  # both were told the same folder
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # one W&B run for the job
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "valid/accuracy" in r]) == 2  # written once per evaluation, not per node
    steps = [p.name for p in CheckpointStore(run).step_dirs()]
    assert steps == [p.name for p in CheckpointStore(reference).step_dirs()] == ["step-00000003", "step-00000006"]
    last = CheckpointStore(run).latest()
    assert sorted(p.name for p in last.glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]

    summary, expected = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert summary["steps"] == expected["steps"] == 6
    assert summary["final"] == pytest.approx(expected["final"], rel=1e-6, abs=1e-7)
    weights = load_file(last / "model.safetensors")
    reference_weights = load_file(CheckpointStore(reference).latest() / "model.safetensors")
    assert weights.keys() == reference_weights.keys()
    for key, value in weights.items():
        np.testing.assert_allclose(value.numpy(), reference_weights[key].numpy(), rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.timeout(900)
def test_two_nodes_extract_one_shard_each_like_one_process(tiny_data: Path, tmp_path: Path) -> None:
    """extract_multinode.sbatch: each node writes the shard of its global rank, chunk c going to rank c mod 2;
    the store equals a one-process extraction. A lost shard is redone by its rank alone on a static rendezvous."""
    args = ["--model", "small_cnn", "--data", str(tiny_data), "--layers", "block2,block3", "--chunk-size", "16",
            "--seed", "3"]
    shared, single = tmp_path / "shared" / "store", tmp_path / "one-process" / "store"
    sbatch("extract_multinode.sbatch", [*args, "--out", str(shared)], fake_slurm(tmp_path), tmp_path)
    torchrun(["extract", *args, "--quiet", "--out", str(single)], 1, tmp_path)

    def check_shards() -> None:
        shards = sorted(p.name for p in shared.glob(SHARD_GLOB))
        assert shards == ["shard-00000-of-00002.h5", "shard-00001-of-00002.h5"]  # one per global rank, none shared
        assert not list(shared.glob("*.lock"))  # both writers released their shard's lock
        chunks = chunks_of(120, 16)
        for rank, name in enumerate(shards):
            with h5py.File(shared / name, "r") as handle:
                done = sorted(json.loads(handle.attrs["done"]))
                index = sorted(int(i) for i in handle["index"][: int(handle.attrs["rows"])])
            mine = [c for c in range(len(chunks)) if c % 2 == rank]
            assert done == mine
            assert index == [i for c in mine for i in chunks[c]]
        store, expected = ActivationStore(shared), ActivationStore(single)
        assert store.meta == expected.meta
        assert store.clips == expected.clips
        for layer in ("block2", "block3"):
            np.testing.assert_allclose(store.load(layer), expected.load(layer), rtol=1e-5, atol=1e-6, err_msg=layer)

    check_shards()
    (shared / "shard-00001-of-00002.h5").unlink()  # node 1's work lost: the store is incomplete
    with pytest.raises(StoreError, match="incomplete"):
        ActivationStore(shared)
    launch_static(["extract", *args, "--quiet", "--out", str(shared)], tmp_path)
    check_shards()  # rank 1 redid its chunks into its shard; rank 0 had none left to do
