"""The `concepts` task: unrolled ISTA equals the lasso decomposition; fine-tuning the projector recovers a label
the plain decomposition misses, while training the head alone stays at the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.analysis.store import write_store
from audiointerp.configs import load_config
from audiointerp.evaluation.concepts import decompose, prepare
from audiointerp.train.tasks.concepts import ConceptBottleneck
from audiointerp.train.trainer import Trainer

CONCEPTS = ["wood", "metal", "glass", "stone"]


def test_unrolled_ista_reaches_the_lasso_solution() -> None:
    rng = np.random.default_rng(0)
    x, dictionary = rng.normal(size=(12, 16)), rng.normal(size=(6, 16))
    audio, mean = prepare(x)
    text, _ = prepare(dictionary)
    model = ConceptBottleneck(torch.tensor(text), torch.tensor(mean), num_classes=2, l1=0.01, steps=5000).double()
    with torch.no_grad():
        weights = model.concept_weights(torch.tensor(x)).numpy()
    np.testing.assert_allclose(weights, decompose(audio, text, 0.01, max_iter=100000), atol=2e-3)


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
                                   f"output_dir={tmp_path / 'runs'}"])
    metrics = Trainer(cfg).fit().metrics
    assert metrics["valid/baseline_accuracy"] < 0.7  # the plain decomposition hardly sees the label (chance 0.5)
    if part == "both":
        assert metrics["valid/accuracy"] > 0.9 and metrics["valid/accuracy_change"] > 0.25
    else:
        assert abs(metrics["valid/accuracy_change"]) < 0.2
    assert 0 < metrics["valid/concepts_per_sound"] <= len(CONCEPTS)
