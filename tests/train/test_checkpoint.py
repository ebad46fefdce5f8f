from __future__ import annotations

from pathlib import Path

import pytest

from audiointerp.errors import CheckpointError
from audiointerp.train.checkpoint import INFO_FILE, CheckpointStore, TrainState


def fake_save(store: CheckpointStore, step: int, is_best: bool = False) -> Path:
    temp = store.temp_dir(step)
    temp.mkdir(parents=True)
    (temp / "model.safetensors").write_bytes(b"w" * step)
    return store.commit(temp, step, {"step": step}, is_best)


def test_commit_keeps_the_last_n_and_the_best(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_last=2)
    fake_save(store, 1)
    fake_save(store, 2, is_best=True)
    for step in (3, 4, 5):
        fake_save(store, step)
    assert [p.name for p in store.step_dirs()] == ["step-00000002", "step-00000004", "step-00000005"]
    assert store.best().name == "step-00000002"
    assert store.resolve("best").name == "step-00000002"
    assert store.resolve("last").name == "step-00000005"
    assert store.resolve("4").name == "step-00000004"
    assert not list(store.dir.glob(".tmp-*"))


def test_a_half_written_checkpoint_is_invisible_and_cleaned(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    fake_save(store, 1)
    half = store.temp_dir(2)
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    half_named = store.dir / "step-00000003"  # renamed but without its info file: not complete
    half_named.mkdir()
    assert store.latest().name == "step-00000001"
    store.clean_temp()
    assert not half.exists()


def test_saving_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    fake_save(store, 3)
    temp = store.temp_dir(3)
    temp.mkdir()
    (temp / "model.safetensors").write_bytes(b"new")
    final = store.commit(temp, 3, {"step": 3}, is_best=True)
    assert (final / "model.safetensors").read_bytes() == b"new" and (final / INFO_FILE).is_file()


def test_unknown_checkpoint_lists_what_exists(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    fake_save(store, 7)
    with pytest.raises(CheckpointError, match="step-00000007"):
        store.resolve("8")


def test_train_state_round_trip() -> None:
    state = TrainState(epoch=2, step=9, batches_in_epoch=3, best_value=0.5, best_step=6, log_window={"loss": 1.5})
    other = TrainState()
    other.load_state_dict(state.state_dict())
    assert other == state
