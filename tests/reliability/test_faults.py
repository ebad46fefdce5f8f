"""Issue 12: the fault-injection script `benchmarks/faults.py`, a few trials of each fault, must find no violation.

The slow tests call the script's `main` in this process with `--launcher spawn` (each command a fresh
interpreter: this test process may have run torch code, after which forking it is unsafe); the quick one runs the
script as its own process with the default fork launcher, one divergence trial (about 10 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import benchmark_module

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "faults.py"


def _faults_module() -> ModuleType:
    """benchmarks/faults.py as a module."""
    return benchmark_module("faults")


def _check(results: dict, fault: str, repeats: int) -> None:
    counts = results["faults"][fault]
    assert counts["trials"] == repeats, counts
    assert counts["failures"] == 0, json.dumps(counts["failed"], indent=1)[:6000]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", ["train_kill", "extract_kill", "export_kill", "divergence", "concurrent"])
def test_two_trials_of_each_fault_violate_no_invariant(fault: str, tmp_path: Path) -> None:
    results = _faults_module().main(["--repeats", "2", "--faults", fault, "--seed", "1", "--launcher", "spawn",
                                     "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "faults.json")])
    _check(results, fault, 2)
    assert json.loads((tmp_path / "faults.json").read_text())["faults"][fault]["trials"] == 2


@pytest.mark.timeout(300)
def test_one_divergence_trial_violates_no_invariant(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "faults.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--repeats", "1", "--faults", "divergence", "--seed", "3",
                           "--workdir", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=280)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    _check(json.loads(out.read_text()), "divergence", 1)
