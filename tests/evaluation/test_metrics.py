from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from audiointerp.evaluation import metrics as M


def test_accuracy_top_k_and_confusion() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]])
    target = torch.tensor([0, 2, 2, 1])
    assert M.accuracy(logits, target) == 0.5
    assert M.top_k_accuracy(logits, target, 2) == 0.75
    matrix = M.confusion_matrix(logits.argmax(-1), target, 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 0, 0], [0, 1, 1]])
    np.testing.assert_allclose(M.per_class_accuracy(matrix), [1.0, 0.0, 0.5])


def test_map_ignores_classes_without_positives_and_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    scores = torch.tensor(rng.random((30, 5)))
    labels = torch.tensor(rng.random((30, 5)) > 0.6).float()
    labels[:, 4] = 0
    expected = average_precision_score(labels[:, :4].numpy(), scores[:, :4].numpy(), average="macro")
    assert M.mean_average_precision(scores, labels) == pytest.approx(expected)
    with pytest.raises(ValueError):
        M.mean_average_precision(scores, torch.zeros(30, 5))
