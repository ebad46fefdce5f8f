"""Store-level RSA: targets, blockwise correlations against direct ones, bootstrap, residuals, the command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from audiointerp.analysis import ActivationStore
from audiointerp.analysis.rsa import (
    EuclideanBlocks,
    FactorTarget,
    MatrixTarget,
    MeanTarget,
    ResponsesTarget,
    RSASettings,
    _weights,
    correlate,
    correlations,
    pair_sums,
    rsa,
    symmetric_kl,
)
from audiointerp.cli import main
from audiointerp.datasets.store import write_store
from audiointerp.evaluation.rdm import rdm, upper


def cosine_model(x: np.ndarray):
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    return lambda rows, cols: 1.0 - unit[rows] @ unit[cols].T


def data(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.normal(size=(n, 10)) + 1.5 * rng.normal(size=(3, 10))[labels], labels


def test_symmetric_kl_of_known_distributions() -> None:
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    expected = float(np.sum((p - q) * (np.log(p) - np.log(q))))  # KL(p||q) + KL(q||p)
    assert symmetric_kl(p, q) == pytest.approx(expected, rel=1e-4)
    assert symmetric_kl(p, p) == pytest.approx(0.0, abs=1e-9)
    target = ResponsesTarget("r", np.array([[5, 5, 0], [9, 1, 0], [0, 2, 8]]), "mode")
    np.testing.assert_array_equal(target.block(np.arange(3), np.arange(3)), [[0, 0, 1], [0, 0, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="at least one response"):
        ResponsesTarget("r", np.array([[1, 0], [0, 0]]))


def test_blockwise_correlations_equal_the_direct_ones_and_blocks_do_not_matter() -> None:
    x, labels = data()
    direct_x, direct_y = upper(rdm(x)), upper((labels[:, None] != labels[None, :]).astype(float))
    target = FactorTarget("f", labels)
    small = correlate(cosine_model(x), target, len(x), RSASettings(block_size=7, bootstrap=50))
    whole = correlate(cosine_model(x), target, len(x), RSASettings(block_size=1000, bootstrap=50))
    assert small["pairs"] == len(direct_x) == 60 * 59 // 2
    assert small["pearson"] == pytest.approx(stats.pearsonr(direct_x, direct_y)[0], abs=1e-10)
    assert small["spearman"] == pytest.approx(stats.spearmanr(direct_x, direct_y)[0], abs=1e-4)
    for key in ("pearson", "spearman", "pearson_low", "pearson_high", "spearman_low", "spearman_high"):
        assert small[key] == pytest.approx(whole[key], abs=1e-10), key
    assert small["pearson_low"] < small["pearson"] < small["pearson_high"]


def test_a_bootstrap_replicate_is_the_correlation_of_the_resampled_sounds() -> None:
    x, labels = data(n=30, seed=1)
    settings = RSASettings(block_size=8, bootstrap=3, seed=5)
    idx = np.random.default_rng(5).integers(0, 30, 30)  # the first resample _weights draws
    assert (np.bincount(idx, minlength=30) == _weights(30, 3, 5)[1]).all()
    d, t = rdm(x), (labels[:, None] != labels[None, :]).astype(float)
    k, m = np.triu_indices(30, 1)
    keep = idx[k] != idx[m]  # pairs of a sound with its own copy are left out
    expected = stats.pearsonr(d[idx[k], idx[m]][keep], t[idx[k], idx[m]][keep])[0]
    replicates = correlations(pair_sums(cosine_model(x), FactorTarget("f", labels), 30, settings))["pearson"]
    assert len(replicates) == 4 and replicates[1] == pytest.approx(expected, abs=1e-10)


def test_residual_correlation_after_regressing_out_spectrogram_distances() -> None:
    x, labels = data(n=40, seed=2)
    spectra = np.random.default_rng(3).normal(size=(40, 6))
    result = correlate(cosine_model(x), FactorTarget("f", labels), 40, RSASettings(block_size=9, bootstrap=0),
                       EuclideanBlocks(spectra))
    d, s, t = upper(rdm(x)), upper(rdm(spectra, "euclidean")), upper((labels[:, None] != labels[None, :]).astype(float))
    design = np.stack([np.ones_like(s), s], 1)
    residual = d - design @ np.linalg.lstsq(design, d, rcond=None)[0]
    assert result["pearson_residual"] == pytest.approx(stats.pearsonr(residual, t)[0], abs=1e-9)
    assert "pearson_low" not in result


def test_residual_spearman_is_the_rank_correlation_of_the_same_residuals() -> None:
    """`analyze rsa --spectrogram` reports Spearman's rho of the residuals (what the figure plots) beside Pearson's r:
    the residuals of the model RDM regressed on the spectrogram RDM, ranked, against the target's ranks."""
    x, labels = data(n=40, seed=4)
    spectra = x[:, :6] + 0.5 * np.random.default_rng(5).normal(size=(40, 6))  # spectra that share the model's structure
    responses = np.random.default_rng(6).integers(0, 9, size=(40, 4)) + np.eye(4, dtype=int)[labels % 4] * 6
    target = ResponsesTarget("r", responses)
    d, s = upper(rdm(x)), upper(rdm(spectra, "euclidean"))
    t = target.block(np.arange(40), np.arange(40))[np.triu_indices(40, 1)]
    design = np.stack([np.ones_like(s), s], 1)
    residual = d - design @ np.linalg.lstsq(design, d, rcond=None)[0]
    expected = stats.spearmanr(residual, t)[0]
    assert abs(expected - stats.spearmanr(d, t)[0]) > 0.01  # regressing out the spectra changes rho
    for block in (9, 64):
        result = correlate(cosine_model(x), target, 40, RSASettings(block_size=block, bootstrap=20), EuclideanBlocks(spectra))
        assert result["spearman_residual"] == pytest.approx(expected, abs=1e-4)
        assert result["pearson_residual"] == pytest.approx(stats.pearsonr(residual, t)[0], abs=1e-9)
        assert result["spearman_residual_low"] <= result["spearman_residual_high"]
    from audiointerp.analysis.rsa import rsa_figure

    rows = [{"store": "s", "model": "m", "layer": f"l{k}", "depth": k / 2, "target": "r", "spearman": 0.1 * k,
             "spearman_residual": 0.05 * k} for k in (1, 2)]
    dashed = [line for line in rsa_figure(rows).axes[0].lines if line.get_linestyle() == "--"]
    assert len(dashed) == 1 and list(dashed[0].get_ydata()) == [0.05, 0.1]  # the figure shows the residual rho


def test_matrix_and_mean_targets() -> None:
    x, labels = data(n=20, seed=4)
    behaviour = rdm(np.random.default_rng(6).normal(size=(20, 3)))
    mean = MeanTarget([MatrixTarget("b", behaviour), FactorTarget("f", labels)])
    result = correlate(cosine_model(x), mean, 20, RSASettings(block_size=6, bootstrap=0))
    expected = upper((behaviour + (labels[:, None] != labels[None, :])) / 2.0)
    assert result["pearson"] == pytest.approx(stats.pearsonr(upper(rdm(x)), expected)[0], abs=1e-10)


def test_the_command_writes_a_row_per_layer_and_target_and_the_figure(tmp_path: Path, capsys) -> None:
    x, labels = data(n=50, seed=7)
    rng = np.random.default_rng(8)
    write_store(tmp_path / "store", {"early": rng.normal(size=(50, 4, 3)), "late": x},
                {"path": [f"sounds/s{i:03d}.wav" for i in range(50)], "material": [f"m{v}" for v in labels]})
    responses = tmp_path / "responses.csv"
    responses.write_text("id,wood,metal\n" + "".join(f"s{i:03d},{1 + v},{3 - v}\n" for i, v in enumerate(labels)))
    out = tmp_path / "rsa"
    assert main(["analyze", "rsa", str(tmp_path / "store"), "--target", "factor:material", "--target",
                 f"responses:{responses}:kl", "--bootstrap", "20", "--out", str(out), "--tracking", "none",
                 "--quiet"]) == 0
    text = (out / "rsa.csv").read_text()
    assert text.count("\n") == 1 + 2 * 2 and (out / "rsa.png").is_file()
    rows = rsa(ActivationStore(tmp_path / "store"), [FactorTarget("factor:material", np.array([f"m{v}" for v in labels]))],
               np.arange(50), RSASettings(bootstrap=0), progress=False)
    assert rows[1]["layer"] == "late" and rows[1]["spearman"] > rows[0]["spearman"] + 0.3  # late holds the classes
    assert "late" in capsys.readouterr().out


def test_spectrogram_residuals_from_an_extracted_store(small_cnn_store: Path, tmp_path: Path, capsys) -> None:
    from audiointerp.analysis.rsa import spectrogram_features

    store = ActivationStore(small_cnn_store)
    features = spectrogram_features(store, np.array([0, 5, 9]))
    assert features.shape[0] == 3 and features.shape[1] % 64 == 0 and np.isfinite(features).all()
    assert not np.allclose(features[0], features[1])
    out = tmp_path / "rsa"
    assert main(["analyze", "rsa", str(small_cnn_store), "--target", "factor:material", "--target", "factor:action",
                 "--average", "--spectrogram", "--bootstrap", "0", "--layers", "block3", "--out", str(out),
                 "--tracking", "none", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("residual Spearman") == 3 and "mean(factor:material, factor:action)" in printed
    with pytest.raises(Exception, match="records no data set"):
        spectrogram_features(ActivationStore(write_store(tmp_path / "bare", {"a": np.ones((4, 2))}, {"path": list("abcd")})),
                             np.arange(4))


def test_a_random_subset_of_the_sounds() -> None:
    from audiointerp.analysis.rsa import select_sounds

    ids = [f"s{i}" for i in range(50)]
    chosen = select_sounds(["factor:material"], ids, max_sounds=10, seed=3)
    assert len(chosen) == 10 and (np.diff(chosen) > 0).all()
    assert (chosen == select_sounds(["factor:material"], ids, max_sounds=10, seed=3)).all()
    assert len(select_sounds(["factor:material"], ids)) == 50
