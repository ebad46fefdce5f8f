"""Issue 12.5: an output, store, export or cache disk that is full, read-only or not writable stops the command
with one line naming the path and the cause (not `OSError: [Errno 30]`, "basic_ios::clear: iostream error", a
W&B UsageError or a cascade of logging errors); the W&B run is marked failed once; the checkpoints written before
stay complete and finite; the same command resumes once space is freed and ends as an uninterrupted run.

Failures are injected in-process (an OSError with EROFS or ENOSPC, and torch's errno-less RuntimeError at a
checkpoint write) and, where the test runs as root, produced for real on a small tmpfs.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import accelerate
import pytest
import torch
from safetensors.torch import load_file

from audiointerp.errors import StorageError, write_failure_cause, writing
from audiointerp.train.checkpoint import CheckpointStore
from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer

CHECKPOINT_EVERY = ["train.checkpoint_every_steps=1", "train.keep_last=2", "train.epochs=1"]
TORCH_WRITE_FAILURE = "[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed"


def full_disk(*_: object) -> SimpleNamespace:
    """os.statvfs of a full device."""
    return SimpleNamespace(f_bavail=0, f_frsize=4096, f_flag=0)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(CheckpointStore(run).latest() / "model.safetensors"))


def only_run(output_dir: Path) -> Path:
    (run,) = (output_dir / "classifier").iterdir()
    return run


# --- naming the cause -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("code,cause", [(errno.ENOSPC, "no space left on the device"),
                                        (errno.EROFS, "the file system is read-only"),
                                        (errno.EDQUOT, "the disk quota is exceeded"),
                                        (errno.EACCES, "permission denied")])
def test_an_os_error_names_what_was_written_the_file_and_the_cause(tmp_path: Path, code: int, cause: str) -> None:
    with pytest.raises(StorageError) as caught:
        with writing("checkpoint", tmp_path):
            raise OSError(code, os.strerror(code), str(tmp_path / "model.safetensors"))
    assert str(caught.value) == f"cannot write the checkpoint {tmp_path / 'model.safetensors'}: {cause}"
    assert isinstance(caught.value, OSError)


def test_an_errno_less_writer_failure_is_diagnosed_from_the_device(tmp_path: Path, monkeypatch) -> None:
    """torch.save's C++ stream loses the errno: on a full device the failure is named from the free space; on a
    device with room it is not a storage failure and passes through unchanged."""
    failure = RuntimeError(TORCH_WRITE_FAILURE)
    assert write_failure_cause(failure, tmp_path / "a" / "b.bin") is None
    with pytest.raises(RuntimeError) as untouched:
        with writing("checkpoint", tmp_path):
            raise failure
    assert untouched.value is failure
    monkeypatch.setattr(os, "statvfs", full_disk)
    assert write_failure_cause(failure, tmp_path / "a" / "b.bin") == "no space left on the device"
    assert write_failure_cause(ValueError("no"), tmp_path) is None  # never a bad value


# --- training ------------------------------------------------------------------------------------------------
def test_a_read_only_output_dir_is_one_error_naming_it(tiny_overrides: list[str], monkeypatch) -> None:
    cfg = load_config("classifier", tiny_overrides)
    output = Path(cfg.output_dir)
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs):
        if self == output or output in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(StorageError, match=r"cannot write the output folder .*: the file system is read-only") as caught:
        Trainer(cfg).fit()
    assert str(output) in str(caught.value)
    assert not output.exists()


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_resumes_to_the_uninterrupted_result(
        tiny_overrides: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    """The 3rd checkpoint write fails as torch's does on a full disk (no errno). The error names the checkpoint
    folder and the cause; steps 1 and 2 stay complete and finite; no "Logging error" is printed; once space is
    back the same config resumes from step 2 and ends with the weights of an uninterrupted run."""
    reference_cfg = load_config("classifier", [*tiny_overrides, *CHECKPOINT_EVERY, f"output_dir={tmp_path / 'reference'}"])
    Trainer(reference_cfg).fit()
    expected = weights(only_run(tmp_path / "reference"))

    cfg = load_config("classifier", [*tiny_overrides, *CHECKPOINT_EVERY])
    real_save_state = accelerate.Accelerator.save_state
    calls = {"n": 0}

    def save_state(self, output_dir=None, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"half")  # what the full disk let through
            monkeypatch.setattr(os, "statvfs", full_disk)
            raise RuntimeError(TORCH_WRITE_FAILURE)
        return real_save_state(self, output_dir, **kwargs)

    monkeypatch.setattr(accelerate.Accelerator, "save_state", save_state)
    capsys.readouterr()
    with pytest.raises(StorageError) as caught:
        Trainer(cfg).fit()
    run = only_run(Path(cfg.output_dir))
    assert str(caught.value) == f"cannot write the checkpoint {run / 'checkpoints' / '.tmp-step-00000003'}: no space left on the device"
    assert "Logging error" not in capsys.readouterr().err
    store = CheckpointStore(run)
    assert [c.name for c in store.step_dirs()] == ["step-00000001", "step-00000002"]
    assert all(bool(v.isfinite().all()) for v in weights(run).values() if v.is_floating_point())

    monkeypatch.undo()  # space is freed
    Trainer(cfg).fit()
    assert not (run / "checkpoints" / ".tmp-step-00000003").exists()
    resumed = weights(run)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_a_failed_run_marks_its_wandb_run_failed_once_and_never_hides_the_error() -> None:
    """W&B's own failure to close (its files are in the full run folder) is a warning: the run's error goes on."""
    from audiointerp.train.tracking import Tracking

    finished: list[int] = []

    class Run:
        def finish(self, exit_code: int = 0) -> None:
            finished.append(exit_code)
            raise RuntimeError("wandb.errors.UsageError: run directory is not writable")

    tracking = Tracking.__new__(Tracking)
    tracking._run = Run()
    tracking.accelerator = SimpleNamespace(end_training=lambda: None)
    tracking.finish(failed=True)
    tracking.finish(failed=True)
    assert finished == [1]


# --- real devices: a small tmpfs (root only, as CI runs) ------------------------------------------------------
@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file leaving about `leave` bytes free on `disk`."""
    stats = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * max(0, stats.f_bavail * stats.f_frsize - leave))
    return filler


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "audiointerp", *args], capture_output=True, text=True, env=env, timeout=300)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "Logging error" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, stderr
    return errors[0]


def train_args(overrides: list[str], output: Path) -> list[str]:
    return ["train", "classifier", *[o for o in overrides if not o.startswith("output_dir=")], *CHECKPOINT_EVERY,
            f"output_dir={output}"]


def test_a_real_full_disk_stops_training_with_one_line_and_the_run_resumes_after_space_is_freed(
        tiny_overrides: list[str], tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert cli(*train_args(tiny_overrides, reference)).returncode == 0
    checkpoint = sum(f.stat().st_size for f in CheckpointStore(only_run(reference)).latest().iterdir())
    with tmpfs(tmp_path / "disk", "4m") as disk:
        filler = fill(disk, leave=checkpoint + checkpoint // 2 + 64 * 1024)  # room for one checkpoint, not two
        output = disk / "runs"
        failed = cli(*train_args(tiny_overrides, output))
        assert failed.returncode == 2
        line = one_error_line(failed.stderr)
        run = only_run(output)
        assert f"cannot write the checkpoint {run / 'checkpoints'}" in line and line.endswith("no space left on the device"), line
        kept = CheckpointStore(run).step_dirs()
        assert len(kept) >= 1 and all(bool(v.isfinite().all()) for v in weights(run).values() if v.is_floating_point())

        filler.unlink()  # space is freed: the same command resumes the run and ends as the uninterrupted one
        resumed = cli(*train_args(tiny_overrides, output))
        assert resumed.returncode == 0, resumed.stderr
        assert f"resumed from {run / 'checkpoints' / 'step-'}" in resumed.stderr
        expected, got = weights(only_run(reference)), weights(run)
        assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_a_real_read_only_output_disk_is_one_line(tiny_overrides: list[str], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        failed = cli(*train_args(tiny_overrides, disk / "runs"))
        assert failed.returncode == 2
        line = one_error_line(failed.stderr)
        assert f"cannot write the output folder {disk / 'runs'}" in line and line.endswith("the file system is read-only"), line


def test_a_real_full_cache_disk_names_the_cache(tiny_overrides: list[str], tmp_path: Path) -> None:
    with tmpfs(tmp_path / "cache_disk", "1m") as disk:
        fill(disk, leave=0)
        args = [o for o in train_args(tiny_overrides, tmp_path / "runs") if not o.startswith("data.cache_dir=")]
        failed = cli(*args, f"data.cache_dir={disk / 'cache'}")
        assert failed.returncode == 2
        line = one_error_line(failed.stderr)
        assert f"cannot write the audio cache (data.cache_dir) {disk / 'cache'}" in line, line
        assert line.endswith("no space left on the device"), line
        assert not [p for p in (disk / "cache").iterdir() if p.suffix != ".lock"]  # nothing half-written is kept


def test_a_real_full_disk_stops_export_and_extract_with_one_line_and_extract_resumes(
        tiny_data: Path, tiny_overrides: list[str], tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert cli(*train_args(tiny_overrides, reference)).returncode == 0
    export = tmp_path / "export"
    assert cli("export", str(only_run(reference)), "--out", str(export)).returncode == 0
    extract = ["extract", "--model", str(export), "--data", str(tiny_data), "--layers", "block1,logits",
               "--chunk-size", "16", "--quiet"]
    clean = tmp_path / "clean"
    assert cli(*extract, "--out", str(clean)).returncode == 0
    with tmpfs(tmp_path / "disk", "16m") as disk:
        filler = fill(disk, leave=0)
        exported = cli("export", str(only_run(reference)), "--out", str(disk / "export"))
        assert exported.returncode == 2
        line = one_error_line(exported.stderr)
        assert f"cannot write the export {disk / 'export'}" in line or f"{disk}/.export-" in line, line
        assert line.endswith("no space left on the device"), line
        assert [p.name for p in disk.iterdir()] == ["filler"]  # no half export is left

        filler.unlink()
        fill(disk, leave=1200 * 1024)  # the header and an empty shard fit, not twice a chunk and 1 MiB
        failed = cli(*extract, "--out", str(disk / "store"))
        assert failed.returncode == 2
        line = one_error_line(failed.stderr)
        assert f"cannot write the activation store shard {disk / 'store'}" in line, line
        assert "no space left on the device (chunk 0 needs about" in line, line

        (disk / "filler").unlink()
        assert cli(*extract, "--out", str(disk / "store")).returncode == 0  # the same command finishes the store
        from audiointerp.analysis import ActivationStore

        got, want = ActivationStore(disk / "store"), ActivationStore(clean)
        for layer in ("block1", "logits"):
            assert torch.equal(torch.as_tensor(got.load(layer)), torch.as_tensor(want.load(layer)))
