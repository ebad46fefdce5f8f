from __future__ import annotations

import shutil
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


def _complete_steps(store: CheckpointStore) -> list[str]:
    return [p.name for p in store.step_dirs()]


def test_a_kill_while_removing_leaves_no_step_folder_without_its_info_file(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12.4: pruning interrupted inside rmtree (a kill) must not leave `step-N` half-deleted."""
    store = CheckpointStore(tmp_path, keep_last=1)
    fake_save(store, 1)
    (store.dir / "step-00000001" / "optimizer.bin").write_bytes(b"o")
    real_rmtree = shutil.rmtree

    def killed_rmtree(path: object, *args: object, **kwargs: object) -> None:
        folder = Path(str(path))
        (folder / INFO_FILE).unlink(missing_ok=True)  # the worst order: the info file goes first
        raise KeyboardInterrupt(f"killed while removing {folder}")

    monkeypatch.setattr(shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        fake_save(store, 2)  # commits step 2, then prunes step 1
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    incomplete = [p.name for p in store.dir.glob("step-*") if not (p / INFO_FILE).is_file()]
    assert incomplete == []
    assert _complete_steps(store) == ["step-00000002"]
    CheckpointStore(tmp_path, keep_last=1).clean_temp()  # the next start removes what the kill left
    assert sorted(p.name for p in store.dir.iterdir()) == ["step-00000002"]


def test_start_cleans_half_deleted_checkpoints_but_never_complete_ones_or_best(tmp_path: Path) -> None:
    """Issue 12.4: a folder left without checkpoint.json, or a half-removed renamed one, is cleaned on start."""
    store = CheckpointStore(tmp_path, keep_last=3)
    fake_save(store, 2, is_best=True)
    fake_save(store, 5)
    fake_save(store, 6)
    half_deleted = store.dir / "step-00000004"  # what the reported kill left: no checkpoint.json
    half_deleted.mkdir()
    for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "scheduler.bin"):
        (half_deleted / name).write_bytes(b"x")
    renamed = store.dir / ".del-step-00000003"  # renamed for removal, killed inside rmtree
    renamed.mkdir()
    (renamed / "model.safetensors").write_bytes(b"x")
    (store.dir / ".tmp-best").symlink_to("step-00000005")  # killed while swapping `best`
    before_best = store.best()

    fresh = CheckpointStore(tmp_path, keep_last=3)
    fresh.clean_temp()
    assert sorted(p.name for p in fresh.dir.iterdir()) == ["best", "step-00000002", "step-00000005", "step-00000006"]
    assert fresh.latest().name == "step-00000006"
    assert fresh.best() == before_best and fresh.best().name == "step-00000002"
    assert _complete_steps(fresh) == ["step-00000002", "step-00000005", "step-00000006"]


def test_cleaning_keeps_the_folder_best_points_to_even_without_its_info_file(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    fake_save(store, 1, is_best=True)
    fake_save(store, 2)
    (store.dir / "step-00000001" / INFO_FILE).unlink()
    store.clean_temp()
    assert (store.dir / "step-00000001").is_dir() and store.best().name == "step-00000001"


def test_pruning_goes_through_a_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rmtree that pruning does is of a folder already renamed away from `step-*`."""
    store = CheckpointStore(tmp_path, keep_last=1)
    removed: list[str] = []
    real_rmtree = shutil.rmtree

    def recording_rmtree(path: object, *args: object, **kwargs: object) -> None:
        removed.append(Path(str(path)).name)
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", recording_rmtree)
    for step in (1, 2, 3):
        fake_save(store, step)
    assert removed and not [name for name in removed if name.startswith("step-")]
    assert sorted(p.name for p in store.dir.iterdir()) == ["step-00000003"]


def _weights_save(store: CheckpointStore, step: int, value: float, flag: "bool | None") -> Path:
    """A checkpoint with real weights (one tensor filled with `value`) and, unless None, a `finite` flag."""
    import torch
    from safetensors.torch import save_file

    temp = store.temp_dir(step)
    temp.mkdir(parents=True)
    save_file({"layer.weight": torch.full((3,), value), "layer.count": torch.tensor([1])}, str(temp / "model.safetensors"))
    return store.commit(temp, step, {"step": step, **({"finite": flag} if flag is not None else {})}, False)


def test_non_finite_tensors_are_named_and_an_unreadable_checkpoint_cannot_be_verified(tmp_path: Path) -> None:
    from audiointerp.train.checkpoint import is_finite, non_finite_tensors

    store = CheckpointStore(tmp_path, keep_last=10)
    good = _weights_save(store, 1, 1.0, None)
    bad = _weights_save(store, 2, float("-inf"), None)
    assert non_finite_tensors(good) == [] and is_finite(good)
    assert non_finite_tensors(bad) == ["layer.weight"] and not is_finite(bad)
    garbage = fake_save(store, 3)  # model.safetensors of random bytes
    with pytest.raises(CheckpointError, match=r"cannot read .*step-00000003/model.safetensors"):
        non_finite_tensors(garbage)
    assert not is_finite(garbage)
    (good / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no weights file"):
        non_finite_tensors(good)


def test_last_finite_trusts_the_flag_reads_unflagged_checkpoints_and_verifies_on_request(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_last=10)
    _weights_save(store, 1, 1.0, None)  # saved before the flag existed, finite
    _weights_save(store, 2, float("nan"), None)  # saved before the flag existed, poisoned
    _weights_save(store, 3, 1.0, True)
    damaged = _weights_save(store, 4, float("nan"), True)  # says finite, damaged afterwards
    assert store.last_finite() == damaged  # the flag is trusted by default
    assert store.last_finite(verify=True).name == "step-00000003"
    assert store.last_finite(before=store.dir / "step-00000003").name == "step-00000001"
    assert CheckpointStore(tmp_path / "empty").last_finite() is None
