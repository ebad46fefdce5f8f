"""Value types that training and evaluation share: an evaluation's result, its tables and their audio clips."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class AudioClip:
    """A clip to listen to, in a table or a report."""

    samples: np.ndarray  # [T] or [C, T] float
    sample_rate: int
    caption: str = ""


@dataclass
class Table:
    """Rows of values; a cell may be an `AudioClip`."""

    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class EvalResult:
    """What an evaluation produces: scalars, figures (matplotlib), tables (possibly with audio)."""

    metrics: dict[str, float]
    figures: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. RDMs, saved as .npy beside the metrics
    notes: dict[str, Any] = field(default_factory=dict)  # what the figures are on and how (set, folds, tie rule...)
