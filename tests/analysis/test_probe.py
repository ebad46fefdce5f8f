"""Linear probes with transfer: conditions, leak-free splits, chance, accuracy on a known structure, the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audiointerp.analysis import ActivationStore, StoreError
from audiointerp.analysis.probe import ProbeSettings, probe, select, splits
from audiointerp.cli import main
from audiointerp.datasets.store import write_store

MATERIALS, ACTIONS = ["wood", "metal", "glass"], ["tapping", "rubbing", "whirling", "destructing"]


def transfer_store(folder: Path, n: int = 480) -> Path:
    """`shared`: material adds the same prototype under every action (it transfers); `specific`: a material's
    prototype differs between tapping/rubbing and whirling/destructing (it does not); `noise`: nothing."""
    rng = np.random.default_rng(0)
    material, action = rng.integers(0, 3, n), rng.integers(0, 4, n)
    prototypes, other = rng.normal(size=(3, 16)), rng.normal(size=(3, 16))
    late_action = action >= 2
    layers = {"noise": rng.normal(size=(n, 16)),
              "specific": rng.normal(size=(n, 16)) + 2.5 * np.where(late_action[:, None], other[material], prototypes[material]),
              "shared": rng.normal(size=(n, 16)) + 2.5 * prototypes[material]}
    return write_store(folder, layers, {"path": [f"{i}.wav" for i in range(n)],
                                        "material": [MATERIALS[m] for m in material],
                                        "action": [ACTIONS[a] for a in action]})


def test_conditions_select_the_right_sounds_and_transfer_splits_never_leak(tmp_path: Path) -> None:
    store = ActivationStore(transfer_store(tmp_path / "s"))
    action = store.column("action")
    train = select(store, "action in tapping,rubbing")
    assert set(action[train]) == {"tapping", "rubbing"} and len(train) == np.isin(action, ["tapping", "rubbing"]).sum()
    assert set(action[select(store, "action not in tapping,rubbing & material!=wood")]) == {"whirling", "destructing"}
    settings = ProbeSettings("material", train_where="action in tapping,rubbing", test_where="action in whirling,destructing")
    parts = splits(store, settings)
    for train, test in parts.values():
        assert not np.intersect1d(train, test).size  # no sound is both trained and tested on
    assert [len(p) for p in parts["transfer"]] == [len(p) for p in parts["no transfer"]]  # same sizes
    small = splits(store, ProbeSettings("material", train_where="action in tapping,rubbing",
                                        test_where="action in whirling,destructing", max_sounds=100))
    assert len(np.union1d(*small["transfer"])) <= 100 and not np.intersect1d(*small["no transfer"]).size
    with pytest.raises(StoreError, match="must not test on training sounds"):
        splits(store, ProbeSettings("material", train_where="action!=tapping", test_where="action!=rubbing"))
    with pytest.raises(StoreError, match="write column==value"):
        select(store, "action ~ tapping")


def test_probes_find_the_layer_that_holds_the_factor_and_transfer_shows_where_it_does_not(tmp_path: Path) -> None:
    store = ActivationStore(transfer_store(tmp_path / "s"))
    settings = ProbeSettings("material", train_where="action in tapping,rubbing",
                             test_where="action in whirling,destructing", cs=5, bootstrap=200)
    rows = {(row["layer"], row["split"]): row for row in probe(store, settings, progress=False)}
    assert rows[("shared", "transfer")]["accuracy"] > 0.9 and rows[("shared", "no transfer")]["accuracy"] > 0.9
    assert rows[("noise", "transfer")]["accuracy"] < 0.5  # chance is about 1/3
    assert rows[("specific", "no transfer")]["accuracy"] > rows[("specific", "transfer")]["accuracy"] + 0.3
    chance = rows[("noise", "transfer")]["chance"]
    test_materials = store.column("material")[select(store, "action in whirling,destructing")]
    train_materials = store.column("material")[select(store, "action in tapping,rubbing")]
    values, counts = np.unique(train_materials, return_counts=True)
    assert chance == pytest.approx(np.mean(test_materials == values[counts.argmax()]))  # training majority class
    row = rows[("shared", "transfer")]
    assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]


def test_the_command_writes_the_table_and_figure(tmp_path: Path, capsys) -> None:
    folder = transfer_store(tmp_path / "s", n=240)
    out = tmp_path / "probe"
    assert main(["analyze", "probe", str(folder), "--factor", "material", "--train-where", "action in tapping,rubbing",
                 "--test-where", "action in whirling,destructing", "--cs", "3", "--bootstrap", "50", "--out", str(out),
                 "--tracking", "none", "--quiet"]) == 0
    assert (out / "probe.csv").read_text().count("\n") == 1 + 3 * 2 and (out / "probe.png").is_file()
    assert "shared transfer: accuracy" in capsys.readouterr().out


def test_the_row_space_basis_leaves_an_l2_logistic_regression_unchanged() -> None:
    from sklearn.linear_model import LogisticRegression

    from audiointerp.analysis.probe import row_space

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    x = rng.normal(size=(60, 300)) + rng.normal(size=(3, 300))[np.r_[labels, rng.integers(0, 3, 20)]]
    train, test = x[:40], x[40:]
    small_train, small_test = row_space(train, test)
    assert small_train.shape == (40, 40) and small_test.shape == (20, 40)
    wide = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(train, labels)
    narrow = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(small_train, labels)
    np.testing.assert_allclose(narrow.predict_proba(small_test), wide.predict_proba(test), atol=1e-5)
