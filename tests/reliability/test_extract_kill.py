"""Issue 12.2: `audiointerp extract` SIGKILLed at a bad moment leaves a store that the same command resumes.

The kill is real (SIGKILL of a child process, no cleanup runs); the resumed store must equal a clean extraction.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.analysis import ActivationStore, ExtractSettings, StoreError, extract

LAYERS = ["block2", "embedding"]


def _settings(tiny_data: Path) -> ExtractSettings:
    return ExtractSettings(model="semdnn", data=str(tiny_data), layers=list(LAYERS), chunk_size=7, num_classes=8)


def _killed_child(code: str) -> None:
    """Run `code` in a fresh interpreter that SIGKILLs itself where the code says; it must die by SIGKILL."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def test_a_writer_killed_right_after_creating_its_shard_leaves_a_readable_empty_shard(tmp_path: Path) -> None:
    import h5py

    path = tmp_path / "shard-00000-of-00001.h5"
    _killed_child(f"""
        import os, signal
        from audiointerp.datasets.store import ShardWriter
        writer = ShardWriter({str(path)!r}, ["roi"], "float32")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    with h5py.File(path, "r") as handle:  # old code: OSError "truncated file: eof = 96"
        assert int(handle.attrs["rows"]) == 0 and handle.attrs["done"] == "[]"


@pytest.mark.timeout(900)
def test_extract_killed_before_its_first_chunk_is_complete_resumes_to_a_clean_store(tiny_data: Path,
                                                                                    tmp_path: Path) -> None:
    out = tmp_path / "killed"
    _killed_child(f"""
        import os, signal, torch
        import audiointerp.datasets.store as store
        from audiointerp.analysis import ExtractSettings, extract

        def killed(self, chunk, index, activations):  # the process dies with the first chunk computed, unwritten
            os.kill(os.getpid(), signal.SIGKILL)

        store.ShardWriter.write_chunk = killed
        torch.manual_seed(0)
        extract(ExtractSettings(model="semdnn", data={str(tiny_data)!r}, layers={LAYERS!r}, chunk_size=7, num_classes=8),
                {str(out)!r}, progress=False)
    """)
    with pytest.raises(StoreError, match="incomplete"):  # readable, and says what to do
        ActivationStore(out)
    torch.manual_seed(0)
    extract(_settings(tiny_data), out, progress=False)  # the same command again
    torch.manual_seed(0)
    clean = extract(_settings(tiny_data), tmp_path / "clean", progress=False)
    resumed, reference = ActivationStore(out), ActivationStore(clean)
    assert resumed.clips == reference.clips and resumed.meta == reference.meta
    for layer in LAYERS:
        np.testing.assert_array_equal(resumed.load(layer), reference.load(layer))
