"""Classification metrics on gathered outputs: accuracy, mAP, confusion matrix, per-class accuracy."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 accuracy of single-label predictions."""
    if len(target) == 0:
        raise ValueError("accuracy of an empty set")
    return float((logits.argmax(dim=-1) == target).float().mean())


def top_k_accuracy(logits: torch.Tensor, target: torch.Tensor, k: int) -> float:
    """Fraction of examples whose target is among the k highest scores."""
    k = min(k, logits.shape[-1])
    topk = logits.topk(k, dim=-1).indices
    return float((topk == target.unsqueeze(-1)).any(dim=-1).float().mean())


def mean_average_precision(scores: torch.Tensor, multi_hot: torch.Tensor) -> float:
    """Macro mAP over the classes that have at least one positive (as AudioSet/FSD50K report it)."""
    y_true = multi_hot.detach().cpu().numpy().astype(bool)
    y_score = scores.detach().float().cpu().numpy()
    present = y_true.any(axis=0)
    if not present.any():
        raise ValueError("mAP needs at least one positive label")
    return float(average_precision_score(y_true[:, present], y_score[:, present], average="macro"))


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(target.long(), num_classes).float()


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    index = target.long() * num_classes + predicted.long()
    counts = torch.bincount(index.cpu(), minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy()


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix (NaN for a class with no examples)."""
    totals = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(matrix) / totals, np.nan)
