"""Issue 15: the GPU benchmark `benchmarks/gpu.py` in its `--smoke` sizes on the CPU.

The script runs as its own process (Accelerate's state is per process) with gensim and wandb unimportable, as on
the GPU machine: esc50_mn10 and the flow, float32 and bf16, must each train and write their figures to the JSON,
and neither module may be imported. The quick tests check how the steady state is read from the trainer's
perf.jsonl (no training); the smoke run takes about 30 s on 2 idle cores, the 2-process run (`--ddp always`)
about 20 s.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.py"

# runs the script as __main__ with gensim and wandb blocked (an import of either raises ImportError)
BLOCKED = ("import runpy, sys; sys.modules['gensim'] = None; sys.modules['wandb'] = None; "
           f"sys.path.insert(0, {str(SCRIPT.parent)!r}); sys.argv = [{str(SCRIPT)!r}, *sys.argv[1:]]; "
           f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')")


def gpu_module() -> ModuleType:
    """benchmarks/gpu.py as a module."""
    return benchmark_module("gpu")


def run_smoke(tmp_path: Path, threads: int, *options: str) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    """The script at `--smoke` sizes on the CPU with `options`, as its own process (gensim and wandb blocked):
    the finished process (it must succeed) and the JSON it wrote."""
    out = tmp_path / "gpu.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", BLOCKED, "--smoke", *options, "--out", str(out),
                           "--work-dir", str(tmp_path / "work")], capture_output=True, text=True, env=env, timeout=600,
                          cwd=ROOT)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    return done, json.loads(out.read_text())


def window(step: int, seconds_per_update: float, wait: float, examples_per_second: float) -> dict[str, Any]:
    """A record of the trainer's perf.jsonl."""
    return {"step": step, "epoch": 0.1, "perf/seconds_per_update": seconds_per_update, "perf/data_wait_fraction": wait,
            "perf/examples_per_second": examples_per_second}


def test_steady_state_is_the_trainers_figures_after_the_warm_up() -> None:
    gpu = gpu_module()
    records = [window(5, 9.0, 0.9, 1.0), window(10, 0.2, 0.5, 640.0), window(15, 0.2, 0.1, 640.0), window(20, 0.4, 0.4, 320.0)]
    measured = gpu.steady_state(records, warmup=5)
    assert measured["steady_updates"] == 15
    assert measured["seconds_per_update"] == pytest.approx(4.0 / 15)  # windows of 1 s, 1 s and 2 s
    assert measured["data_wait_fraction"] == pytest.approx((0.5 * 1 + 0.1 * 1 + 0.4 * 2) / 4)
    assert measured["examples_per_second"] == pytest.approx((640 + 640 + 320 * 2) / 4)
    assert [w["step"] for w in measured["windows"]] == [10, 15, 20]
    assert measured["windows"][2]["seconds_per_update"] == pytest.approx(0.4)


def test_steady_state_needs_two_windows_after_the_warm_up() -> None:
    gpu = gpu_module()
    records = [window(5, 1.0, 0.1, 10.0), window(10, 1.0, 0.1, 10.0), window(15, 1.0, 0.1, 10.0)]
    assert gpu.steady_state(records, warmup=5)["steady_updates"] == 10
    with pytest.raises(RuntimeError, match="at least 2"):
        gpu.steady_state(records, warmup=6)


def test_smoke_run_on_the_cpu_writes_every_figure(tmp_path: Path) -> None:
    done, results = run_smoke(tmp_path, 2, "--configs", "esc50_mn10,flow", "--precisions", "no,bf16",
                              "--override", "flow:data.num_workers=1")
    rows = {(r["config"], r["precision"]): r for r in results["results"]}
    assert sorted(rows) == [("esc50_mn10", "bf16"), ("esc50_mn10", "no"), ("flow", "bf16"), ("flow", "no")]
    for (config, precision), row in rows.items():
        assert row["status"] == "ok" and row["error"] is None, row
        assert row["unit"] == ("pairs" if config == "flow" else "clips")
        assert row["updates"] == 3 and row["steady_updates"] == 2, row
        for key in ("seconds_per_update", "examples_per_second", "fit_seconds"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert 0 <= row["data_wait_fraction"] < 1, row
        assert row["examples_per_second"] == pytest.approx(row["examples_per_update"] / row["seconds_per_update"])
        assert row["peak_gpu_memory_mib"] is None  # no CUDA here
        assert len(row["windows"]) == 2
    assert results["ddp"] is None and results["overrides"] == ["flow:data.num_workers=1"]
    assert rows[("flow", "no")]["num_workers"] == 1 and rows[("esc50_mn10", "no")]["num_workers"] == 0
    assert results["environment"]["device"] == "cpu"
    imported = set(results["imported_third_party"])
    assert not imported & {"wandb", "gensim"}, sorted(imported)
    assert {"torch", "accelerate", "omegaconf", "soundfile", "h5py"} <= imported
    table = done.stdout[done.stdout.index("config "):]
    assert "esc50_mn10" in table and "flow (pairs)" in table and "bf16/fp32" in table


def test_the_two_process_path_runs_on_cpu_processes_with_ddp_always(tmp_path: Path) -> None:
    """`--ddp always`: esc50_mn10 on 2 processes (torch.distributed.run, gloo) as on 2 GPUs; its row counts both
    processes' clips per update and is compared with the 1-process fit."""
    done, results = run_smoke(tmp_path, 1, "--configs", "esc50_mn10", "--precisions", "no", "--ddp", "always")
    ddp, single = results["ddp"], results["results"][0]
    assert ddp["processes"] == 2 and ddp["result"]["status"] == "ok", ddp
    assert ddp["result"]["processes"] == 2 and ddp["result"]["updates"] == 3 and ddp["result"]["steady_updates"] == 2
    assert ddp["result"]["examples_per_update"] == 2 * single["examples_per_update"]  # both processes' batches
    assert ddp["one_process_clips_per_second"] == single["examples_per_second"]
    assert ddp["speedup"] == pytest.approx(ddp["result"]["examples_per_second"] / single["examples_per_second"])
    assert ddp["devices"] == "cpu (gloo)" and "on 2 processes (cpu (gloo))" in done.stdout


def test_with_fewer_gpus_than_processes_the_launch_sees_no_gpu(tmp_path: Path, monkeypatch) -> None:
    """`--ddp always` on a 1-GPU machine: both processes would take GPU 0 (NCCL refuses) or ask for a GPU 1 that is
    not there, so the launch hides the GPUs and runs on the CPU over gloo; with a GPU each it sees them."""
    gpu = gpu_module()
    launched: list[Any] = []
    monkeypatch.setattr(gpu.subprocess, "run", lambda command, **options: launched.append(options)
                        or subprocess.CompletedProcess(command, 1))
    for on_cpu in (True, False):
        row = gpu.run_ddp("esc50_mn10", "no", [], 1, tmp_path, 5.0, on_cpu)
        assert row.status == "error" and "wrote no result" in row.error
    assert launched[0]["env"]["CUDA_VISIBLE_DEVICES"] == "" and launched[1]["env"] is None


def test_overrides_apply_to_every_config_or_to_the_one_they_name() -> None:
    pick = gpu_module().user_overrides
    given = ["train.compile=true", "flow:data.num_workers=1", "esc50_mn10:data.batch_size=8", "a:b=c=d"]
    assert pick("flow", given) == ["train.compile=true", "data.num_workers=1"]
    assert pick("esc50_mn10", given) == ["train.compile=true", "data.batch_size=8"]
    assert pick("a", given) == ["train.compile=true", "b=c=d"]
