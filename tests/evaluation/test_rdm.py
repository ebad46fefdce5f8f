from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist, squareform

from audiointerp.errors import DatasetError
from audiointerp.evaluation import rdm as rsa


def test_rdm_matches_scipy_for_each_metric() -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((7, 3, 4))  # flattened per item
    flat = features.reshape(7, -1)
    for metric in rsa.METRICS:
        expected = squareform(pdist(flat, metric=metric))
        got = rsa.rdm(features, metric=metric)
        np.testing.assert_allclose(got, expected, atol=1e-12)
        np.testing.assert_array_equal(np.diag(got), 0.0)
        np.testing.assert_allclose(rsa.upper(got), pdist(flat, metric=metric), atol=1e-12)
    with pytest.raises(ValueError, match="zero"):
        rsa.rdm(np.vstack([flat, np.zeros(12)]))
    with pytest.raises(ValueError):
        rsa.rdm(flat, metric="manhattan")


def test_category_rdm() -> None:
    got = rsa.category_rdm(["a", "b", "a", "c"])
    expected = np.array([[0, 1, 0, 1], [1, 0, 1, 1], [0, 1, 0, 1], [1, 1, 1, 0]], dtype=float)
    np.testing.assert_array_equal(got, expected)


def test_rdm_correlation() -> None:
    rng = np.random.default_rng(1)
    a = rsa.rdm(rng.standard_normal((10, 5)))
    b = rsa.rdm(rng.standard_normal((10, 5)))
    for method in rsa.CORRELATIONS:
        assert rsa.rdm_correlation(a, a, method) == pytest.approx(1.0)
    assert rsa.rdm_correlation(a, b, "spearman") == pytest.approx(stats.spearmanr(rsa.upper(a), rsa.upper(b))[0])
    assert rsa.rdm_correlation(a, b, "kendall") == pytest.approx(stats.kendalltau(rsa.upper(a), rsa.upper(b))[0])
    assert rsa.rdm_correlation(rsa.upper(a), b, "pearson") == pytest.approx(np.corrcoef(rsa.upper(a), rsa.upper(b))[0, 1])
    with pytest.raises(ValueError, match="constant"):
        rsa.rdm_correlation(a, np.ones_like(a))


def test_macro_class_rdm_correlation_is_high_for_clustered_features() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), 8)
    centres = rng.standard_normal((5, 16)) * 3
    clustered = centres[labels] + 0.3 * rng.standard_normal((40, 16))
    high = rsa.macro_class_rdm_correlation(clustered, labels)
    low = rsa.macro_class_rdm_correlation(rng.standard_normal((40, 16)), labels)
    assert high > 0.5  # a 0/1 RDM caps the rank correlation well below 1
    assert abs(low) < 0.15


def test_folds_never_mix_training_and_held_out_sounds() -> None:
    n = 23
    rows, cols = np.triu_indices(n, k=1)
    seen = 0
    for repeat, fold, train, test in rsa.cv_pair_splits(n, n_folds=4, repeats=3, seed=5):
        test_items = set(rows[test]) | set(cols[test])
        train_items = set(rows[train]) | set(cols[train])
        assert test_items and train_items
        assert not test_items & train_items
        assert not (train & test).any()
        # every pair among the held-out items is tested, every pair among the others trains
        assert test.sum() == len(test_items) * (len(test_items) - 1) // 2
        assert train.sum() == (n - len(test_items)) * (n - len(test_items) - 1) // 2
        seen += 1
    assert seen == 12


def _noisy_target(rng: np.random.Generator, n: int, r2: float) -> tuple[np.ndarray, np.ndarray]:
    model = rsa.upper(rsa.rdm(rng.standard_normal((n, 20))))
    signal = 2.0 * model + 1.0
    noise_sd = np.sqrt(signal.var() * (1 - r2) / r2)
    return model, signal + noise_sd * rng.standard_normal(model.size)


def test_rsa_cv_recovers_generating_r2_and_rejects_random_models() -> None:
    rng = np.random.default_rng(3)
    model, target = _noisy_target(rng, 80, 0.5)
    result = rsa.rsa_cv(model, target, n_folds=5, repeats=10, seed=0)
    assert result["r2_cv"] == pytest.approx(0.5, abs=0.08)
    assert result["r2_cv"] <= result["r2_full"] + 0.05
    assert result["coefficients"]["model"] == pytest.approx(2.0, rel=0.15)
    assert result["noise_ceiling"] is None and "not computed" in result["noise_ceiling_note"]
    assert len(result["r2_cv_repeats"]) == 10 and np.shape(result["fold_r2"]) == (10, 5)
    random_model = rsa.upper(rsa.rdm(rng.standard_normal((80, 20))))
    assert rsa.rsa_cv(random_model, target)["r2_cv"] < 0.02
    # several predictors: adding the generating RDM next to a random one recovers the fit
    both = rsa.rsa_cv({"random": random_model, "true": model}, target, non_negative=True)
    assert both["r2_cv"] == pytest.approx(result["r2_cv"], abs=0.03)
    assert set(both["coefficients"]) == {"random", "true"}
    assert min(both["coefficients"].values()) >= 0.0


def test_rsa_cv_is_deterministic_and_accepts_square_rdms() -> None:
    rng = np.random.default_rng(4)
    model, target = _noisy_target(rng, 30, 0.6)
    a = rsa.rsa_cv(squareform(model), squareform(target), seed=7, repeats=3)
    b = rsa.rsa_cv(model, target, seed=7, repeats=3)
    assert a["r2_cv"] == b["r2_cv"]
    with pytest.raises(ValueError):
        rsa.rsa_cv(model, target[:-1])
    with pytest.raises(ValueError):
        rsa.rsa_cv(model[:10], target[:10], n_folds=5)  # 5 items cannot fill 5 folds of two


def test_rsa_cv_noise_ceiling_from_subjects() -> None:
    rng = np.random.default_rng(5)
    n = 40
    truth = rsa.upper(rsa.rdm(rng.standard_normal((n, 10))))
    subjects = np.stack([squareform(truth + 0.05 * rng.standard_normal(truth.size)) for _ in range(6)])
    for s in subjects:
        np.fill_diagonal(s, 0.0)
    result = rsa.rsa_cv(truth, None, subject_rdms=subjects, repeats=3)
    ceiling = result["noise_ceiling"]
    assert 0.0 < ceiling["lower"] <= ceiling["upper"] <= 1.0
    assert result["r2_cv_subjects"] <= ceiling["upper"] + 0.02
    assert result["r2_cv"] > result["r2_cv_subjects"]  # the group mean is less noisy than one subject


def _write_csv(path: Path, rows: list[list[object]]) -> None:
    path.write_text("\n".join(",".join(str(c) for c in row) for row in rows) + "\n", encoding="utf-8")


def _example() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(6)
    return rsa.rdm(rng.standard_normal((5, 3))), ["s1", "s2", "s3", "s4", "s5"]


def test_load_dissimilarities_csv_with_ids_and_reordering(tmp_path: Path) -> None:
    matrix, ids = _example()
    path = tmp_path / "human.csv"
    _write_csv(path, [[""] + ids] + [[i] + [repr(float(v)) for v in row] for i, row in zip(ids, matrix)])
    loaded, got_ids = rsa.load_dissimilarities(path)
    np.testing.assert_allclose(loaded, matrix)
    assert got_ids == ids
    wanted = ["s3", "s1", "s5"]
    part, part_ids = rsa.load_dissimilarities(path, ids=wanted)
    order = [2, 0, 4]
    np.testing.assert_allclose(part, matrix[np.ix_(order, order)])
    assert part_ids == wanted
    with pytest.raises(DatasetError, match="s9"):
        rsa.load_dissimilarities(path, ids=["s1", "s9"])


def test_load_dissimilarities_csv_layouts(tmp_path: Path) -> None:
    matrix, ids = _example()
    header_only = tmp_path / "header.csv"
    _write_csv(header_only, [ids] + [[repr(float(v)) for v in row] for row in matrix])
    np.testing.assert_allclose(rsa.load_dissimilarities(header_only)[0], matrix)
    column_only = tmp_path / "column.csv"
    _write_csv(column_only, [[i] + [repr(float(v)) for v in row] for i, row in zip(ids, matrix)])
    assert rsa.load_dissimilarities(column_only)[1] == ids
    plain = tmp_path / "plain.csv"
    _write_csv(plain, [[repr(float(v)) for v in row] for row in matrix])
    with pytest.raises(DatasetError, match="no sound ids"):
        rsa.load_dissimilarities(plain)
    (tmp_path / "plain.ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    assert rsa.load_dissimilarities(plain)[1] == ids
    # shuffled header columns are matched to the row ids
    shuffled = tmp_path / "shuffled.csv"
    perm = [4, 2, 0, 1, 3]
    _write_csv(shuffled, [["id"] + [ids[p] for p in perm]] + [[i] + [repr(float(row[p])) for p in perm] for i, row in zip(ids, matrix)])
    np.testing.assert_allclose(rsa.load_dissimilarities(shuffled)[0], matrix)


def test_load_dissimilarities_npy_with_ids_file(tmp_path: Path) -> None:
    matrix, ids = _example()
    path = tmp_path / "brain.npy"
    np.save(path, matrix)
    ids_path = tmp_path / "order.json"
    ids_path.write_text(json.dumps(ids), encoding="utf-8")
    loaded, got_ids = rsa.load_dissimilarities(path, ids=["s5", "s4"], ids_path=ids_path)
    np.testing.assert_allclose(loaded, matrix[np.ix_([4, 3], [4, 3])])
    assert got_ids == ["s5", "s4"]
    (tmp_path / "brain.ids.json").write_text(json.dumps({"ids": ids}), encoding="utf-8")
    assert rsa.load_dissimilarities(path)[1] == ids
    # without any ids file, a full-length ids list names the rows in file order
    bare = tmp_path / "bare.npy"
    np.save(bare, matrix)
    assert rsa.load_dissimilarities(bare, ids=ids)[1] == ids
    with pytest.raises(DatasetError, match="missing|lacks"):
        rsa.load_dissimilarities(path, ids=["nope"])


def test_load_dissimilarities_validation(tmp_path: Path) -> None:
    matrix, ids = _example()
    asymmetric = matrix.copy()
    asymmetric[0, 1] += 0.1
    path = tmp_path / "asym.npy"
    np.save(path, asymmetric)
    with pytest.warns(UserWarning, match="not symmetric"):
        loaded, _ = rsa.load_dissimilarities(path, ids=ids)
    np.testing.assert_allclose(loaded, loaded.T)
    assert loaded[0, 1] == pytest.approx(matrix[0, 1] + 0.05)
    nan_diagonal = matrix.copy()
    np.fill_diagonal(nan_diagonal, np.nan)
    np.save(tmp_path / "nan.npy", nan_diagonal)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(rsa.load_dissimilarities(tmp_path / "nan.npy", ids=ids)[0], matrix)
    np.save(tmp_path / "similarity.npy", 1.0 - matrix)
    with pytest.raises(DatasetError, match="diagonal"):
        rsa.load_dissimilarities(tmp_path / "similarity.npy", ids=ids)
    np.save(tmp_path / "rect.npy", matrix[:, :4])
    with pytest.raises(DatasetError, match="square"):
        rsa.load_dissimilarities(tmp_path / "rect.npy", ids=ids)
    with pytest.raises(DatasetError, match="not found"):
        rsa.load_dissimilarities(tmp_path / "absent.csv")
    duplicated = tmp_path / "dup.csv"
    _write_csv(duplicated, [["s1"] * 5] + [[repr(float(v)) for v in row] for row in matrix])
    with pytest.raises(DatasetError, match="duplicated"):
        rsa.load_dissimilarities(duplicated)


def test_rdm_panels_render(tmp_path: Path) -> None:
    from audiointerp.evaluation import plots

    rng = np.random.default_rng(7)
    labels = ["glass"] * 4 + ["metal"] * 3 + ["wood"] * 5
    rdms = {name: rsa.rdm(rng.standard_normal((12, 6))) for name in ("semDNN", "catDNN", "human")}
    fig = plots.rdm_panels(rdms, labels=labels)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["semDNN", "catDNN", "human"]
    assert len(fig.axes) == 4  # three panels and one shared colour bar
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["glass", "metal", "wood"]
    assert len(panels[0].get_lines()) == 4  # two boundaries, horizontal and vertical
    plots.save_figure(fig, tmp_path / "rdms.png")
    raw = plots.rdm_panels(rdms, scale="raw", columns=2)
    assert len(raw.axes) == 6  # a colour bar per panel
    unsorted = plots.rdm_panels({"x": rdms["human"]}, labels=["a", "b"] * 6)
    assert not unsorted.axes[0].get_lines()  # interleaved classes: no boundaries
    plots.save_figure(raw, tmp_path / "raw.png")
    plots.save_figure(unsorted, tmp_path / "unsorted.png")
