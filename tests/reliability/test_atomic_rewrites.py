"""Files a resumed run or a repeated export rewrites are replaced atomically (found by benchmarks/faults.py).

- A kill while a resume rewrote `config.yaml` left it empty: the next `resume=auto` no longer matched the run and
  silently started a new one from step 0, abandoning its checkpoints.
- A kill while `export` replaced an existing export (rmtree, then rename) left a folder without `manifest.json`
  that the same command then refused ("not an audiointerp export").
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest

from audiointerp.train.checkpoint import CheckpointStore
from audiointerp.train.config import load_config
from audiointerp.train.export import export_run, load_export
from audiointerp.train.trainer import Trainer


class Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs (not even `except Exception` handlers)."""


def only_run(cfg) -> Path:
    (run,) = (Path(cfg.output_dir) / "classifier").iterdir()
    return run


def test_a_kill_while_a_resume_rewrites_config_yaml_keeps_the_run_resumable(tiny_overrides: list[str], monkeypatch) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "train.checkpoint_every_steps=2", "train.max_steps=4"])
    Trainer(cfg).fit()
    run = only_run(cfg)
    (run / "summary.json").unlink()  # as if killed after its last checkpoint
    real_open = builtins.open

    def killing_open(file, mode="r", *args, **kwargs):
        if str(file).endswith("config.yaml") and "w" in mode:
            real_open(file, "w").close()  # opening for writing has truncated it, then the kill
            raise Killed
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", killing_open)
    with pytest.raises(Killed):
        Trainer(cfg).fit()
    monkeypatch.undo()
    assert (run / "config.yaml").read_text().strip()  # the old file, whole
    result = Trainer(cfg).fit()
    assert result.run_dir == run  # resumed, not started over in another folder
    assert [p.name for p in (Path(cfg.output_dir) / "classifier").iterdir()] == [run.name]
    assert CheckpointStore(run).latest().name == "step-00000004"


def test_a_kill_while_an_export_is_replaced_leaves_a_folder_the_same_command_rewrites(tiny_overrides: list[str],
                                                                                      monkeypatch) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "train.max_steps=2"])
    run = Trainer(cfg).fit().run_dir
    out = export_run(run)
    real_unlink = os.unlink

    def killing_unlink(path, *args, **kwargs):
        real_unlink(path, *args, **kwargs)
        if str(path).endswith("manifest.json"):  # the old export is being removed: killed right there
            raise Killed

    monkeypatch.setattr(os, "unlink", killing_unlink)
    with pytest.raises(Killed):
        export_run(run)
    monkeypatch.undo()
    assert not out.exists() or (out / "manifest.json").is_file()  # never a half-deleted export
    assert export_run(run) == out  # the same command again
    load_export(out)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".export")) == []  # leftovers removed
