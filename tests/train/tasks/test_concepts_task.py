"""The `concepts` task: unrolled ISTA equals the lasso decomposition; fine-tuning the projector recovers a label
the plain decomposition misses, while training the head alone stays at the baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from audiointerp.datasets.store import ActivationStore, write_store
from audiointerp.errors import ConfigError
from audiointerp.evaluation.sparse_coding import decompose, prepare
from audiointerp.models.concept_bottleneck import ConceptBottleneck
from audiointerp.train.config import load_config
from audiointerp.train.tasks import task_class
from audiointerp.train.trainer import Trainer

CONCEPTS = ["wood", "metal", "glass", "stone"]


def correlated_problem(seed: int, concepts: Optional[int] = None, dim: int = 50,
                       sounds: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(raw audio embeddings [sounds, dim], their training mean after normalisation, the prepared dictionary
    [concepts, dim]) of a correlated dictionary the size of the shipped vocabulary in GloVe's 50 dimensions: words
    in 40 clusters (neighbours' cosine up to ~0.95, as synonyms in word vectors), sounds = 5 random concepts with
    positive weights + noise. `concepts` defaults to the shipped vocabulary's size."""
    from audiointerp.datasets.vocabulary import audio_concepts

    concepts = concepts or len(audio_concepts())
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(40, dim))
    words = centres[rng.integers(0, 40, concepts)] + 0.35 * rng.normal(size=(concepts, dim))
    mix = np.zeros((sounds, concepts))
    for row in mix:
        row[rng.choice(concepts, 5, replace=False)] = rng.uniform(0.3, 1.0, 5)
    x = mix @ words + 0.3 * rng.normal(size=(sounds, dim))
    text, _ = prepare(words)
    return x, prepare(x)[1], text


def exact_lasso(audio: np.ndarray, text: np.ndarray, l1: float) -> np.ndarray:
    """scikit-learn's non-negative lasso on `decompose`'s scale, run to tol=1e-10 (the reference solution)."""
    import warnings

    from sklearn.linear_model import Lasso

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it must converge
        fit = Lasso(alpha=l1 / (2 * text.shape[1]), positive=True, fit_intercept=False, tol=1e-10,
                    max_iter=1_000_000).fit(text.T, audio.T)
    return np.atleast_2d(fit.coef_)


def default_bottleneck(text: np.ndarray, mean: np.ndarray) -> ConceptBottleneck:
    """The bottleneck exactly as `train concepts` builds it with the shipped config's defaults."""
    cfg = load_config("concepts", ["data.source=unused", "task.layer=output", "tracking.backend=none"])
    task = task_class(str(cfg.task.name))(cfg)
    task.build_models({"classes": ["a", "b"], "concepts": [str(k) for k in range(len(text))]},
                      {"dictionary": torch.tensor(text, dtype=torch.float32), "audio_mean": torch.tensor(mean, dtype=torch.float32)})
    return task.model


@pytest.mark.parametrize("seed", [0, 1])
def test_the_default_solver_reaches_the_exact_lasso_on_a_correlated_dictionary(seed: int) -> None:
    x, mean, text = correlated_problem(seed)
    model = default_bottleneck(text, mean)
    l1 = float(load_config("concepts", ["data.source=unused", "task.layer=output"]).task.l1)
    assert l1 == 0.05
    audio, _ = prepare(x, mean=mean)
    star = exact_lasso(audio, np.asarray(model.dictionary.double()), l1)
    assert np.abs(np.corrcoef(text)[np.triu_indices(len(text), 1)]).max() > 0.9
    with torch.no_grad():
        weights = model.concept_weights(torch.tensor(x, dtype=torch.float32)).double().numpy()
    error = np.linalg.norm(weights - star, axis=1) / np.linalg.norm(star, axis=1)
    assert (star > 0).sum(1).min() > 5  # a non-trivial support for every sound
    assert error.max() <= 1e-3, f"relative error per sound up to {error.max():.3g}"


def test_gradients_are_the_exact_lassos_derivatives() -> None:
    """The projector's gradient is the derivative of the exact solution (implicit differentiation on the support),
    checked against central differences of scikit-learn's lasso at tol=1e-10."""
    x, mean, text = correlated_problem(2, sounds=4)
    model = default_bottleneck(text, mean).double()
    l1 = model.l1
    direction = np.random.default_rng(3).normal(size=x.shape)
    probe = np.random.default_rng(4).normal(size=len(text))
    inputs = torch.tensor(x, requires_grad=True)
    (model.concept_weights(inputs) @ torch.tensor(probe)).sum().backward()
    analytic = float((inputs.grad.numpy() * direction).sum())
    eps = 1e-5
    dictionary = model.dictionary.numpy()
    solve = lambda z: exact_lasso(prepare(z, mean=model.audio_mean.numpy())[0], dictionary, l1) @ probe  # noqa: E731
    numeric = float((solve(x + eps * direction) - solve(x - eps * direction)).sum() / (2 * eps))
    assert analytic == pytest.approx(numeric, rel=1e-3)


def test_the_solver_equals_decompose_and_warm_starts_change_nothing_but_the_steps() -> None:
    rng = np.random.default_rng(0)
    x, dictionary = rng.normal(size=(12, 16)), rng.normal(size=(6, 16))
    audio, mean = prepare(x)
    text, _ = prepare(dictionary)
    model = ConceptBottleneck(torch.tensor(text), torch.tensor(mean), num_classes=2, l1=0.01).double()
    with torch.no_grad():
        weights = model.concept_weights(torch.tensor(x)).numpy()
        cold = model.last_steps
        assert model.unsolved == 0 and cold > 0
        index = torch.arange(12)
        model.concept_weights(torch.tensor(x), index)
        again = model.concept_weights(torch.tensor(x), index).numpy()  # from the previous solutions
        assert model.last_steps == 0
    np.testing.assert_allclose(weights, decompose(audio, text, 0.01, max_iter=100000), atol=1e-6)
    np.testing.assert_allclose(again, weights, atol=1e-12)
    with pytest.raises(ConfigError, match="must be >= 0"):
        ConceptBottleneck(torch.tensor(text), torch.tensor(mean), num_classes=2, l1=-0.1)


def hidden_label_store(folder: Path) -> tuple[Path, Path]:
    """Embeddings = a label-independent mix of the concepts' vectors + a label direction outside their span."""
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(len(CONCEPTS), 12))
    (folder / "vectors.txt").write_text(f"{len(CONCEPTS)} 12\n" + "".join(
        " ".join([word, *(f"{v:.6f}" for v in row)]) + "\n" for word, row in zip(CONCEPTS, vectors)))
    basis = np.linalg.qr(np.concatenate([vectors.T, rng.normal(size=(12, 8))], 1))[0]
    outside = basis[:, len(CONCEPTS):len(CONCEPTS) + 2].T  # two directions orthogonal to every concept vector
    n = 300
    label = rng.integers(0, 2, n)
    x = rng.uniform(0.2, 1.0, size=(n, len(CONCEPTS))) @ vectors + 1.5 * np.where(label[:, None] == 1, outside[0], outside[1])
    store = write_store(folder / "store", {"output": x}, {"path": [f"{i}.wav" for i in range(n)],
                                                         "fold": [str(1 + i % 5) for i in range(n)],
                                                         "label": [f"c{v}" for v in label]})
    (folder / "vocabulary.txt").write_text("\n".join(CONCEPTS) + "\n")
    return store, folder / "vectors.txt"


@pytest.mark.parametrize("part", ["head", "both"])
def test_fine_tuning_the_projector_recovers_what_the_decomposition_missed(tmp_path: Path, part: str) -> None:
    store, vectors = hidden_label_store(tmp_path)
    torch.manual_seed(0)
    cfg = load_config("concepts", [f"data.source={store}", "task.layer=output", "task.factor=label",
                                   f"task.vectors={vectors}", f"task.vocabulary={tmp_path / 'vocabulary.txt'}",
                                   "task.l1=0.01", f"task.train_part={part}", "train.epochs=40", "train.eval_every_epochs=40",
                                   "train.progress=false", "tracking.backend=none", "optim.lr=0.01",
                                   f"output_dir={tmp_path / 'runs'}",
                                   *(["data.train_folds=[2,3,4]", "data.test_folds=[5]"] if part == "both" else [])])
    result = Trainer(cfg).fit()
    metrics = result.metrics
    assert metrics["valid/baseline_accuracy"] < 0.7  # the plain decomposition hardly sees the label (chance 0.5)
    if part == "both":
        assert metrics["valid/accuracy"] > 0.9 and metrics["valid/accuracy_change"] > 0.25
        # the held-out fold is scored with its own baseline: the probe on fold 5's plain decomposition
        test = json.loads((result.run_dir / "summary.json").read_text())["test"]
        folds = np.array([str(1 + i % 5) for i in range(300)])
        x, labels = ActivationStore(store).load("output"), ActivationStore(store).column("label")
        text = prepare(np.loadtxt(vectors, skiprows=1, usecols=range(1, 13)))[0]
        train, held = np.isin(folds, ["2", "3", "4"]), folds == "5"
        mean = prepare(x[train])[1]
        probe = LogisticRegression(max_iter=2000).fit(decompose(prepare(x[train], mean=mean)[0], text, 0.01), labels[train])
        expected = probe.score(decompose(prepare(x[held], mean=mean)[0], text, 0.01), labels[held])
        assert test["test/baseline_accuracy"] == pytest.approx(expected, abs=1e-9)
        assert test["test/examples"] == 60 and test["test/accuracy"] > 0.9
    else:
        assert abs(metrics["valid/accuracy_change"]) < 0.2
    assert 0 < metrics["valid/concepts_per_sound"] <= len(CONCEPTS)
