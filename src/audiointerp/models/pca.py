"""The flow's input: an invertible scaler -> PCA -> scaler pipeline (Dick et al.).

`InvertiblePCA.fit(X)` standardises each feature, rotates onto the principal components, and standardises the
components. `transform` returns the components [N, k] and the part of the standardised input outside their span
[N, dim]; `inverse` puts both back, so `inverse(*transform(x)) == x` up to float rounding, whatever k.

With `num_components=None` the PCA is full rank (as many components as the data allow). Keeping only the first
k components loses nothing: the remainder carries exactly what the other components would (their span, rotated
back), so a flow on the first k components with the rest passed through unchanged is the same map either way,
and the k-component fit is far cheaper for wide layers.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

STATE_KEYS = ("input_mean", "input_scale", "mean", "components", "output_mean", "output_scale")


class InvertiblePCA:
    """StandardScaler -> PCA (full rank, or the first `num_components`) -> StandardScaler, with an exact inverse."""

    def __init__(self, num_components: Optional[int] = None, seed: int = 0) -> None:
        self.requested = num_components
        self.seed = seed

    def fit(self, x: np.ndarray) -> "InvertiblePCA":
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        scaler = StandardScaler().fit(x)
        standardised = scaler.transform(x)
        rank = min(x.shape)
        count = rank if self.requested is None else int(self.requested)
        if not 1 <= count <= rank:
            raise ValueError(f"{count} PCA components asked of {x.shape[0]} samples of {x.shape[1]} features "
                             f"(at most {rank})")
        solver = "full" if count == rank else "auto"
        pca = PCA(n_components=count, svd_solver=solver, random_state=self.seed).fit(standardised)
        keep = pca.explained_variance_ > pca.explained_variance_.max() * 1e-12  # drop exactly-null directions
        if self.requested is not None and not keep.all():
            raise ValueError(f"the data span only {int(keep.sum())} directions, fewer than the {count} components asked")
        self.input_mean, self.input_scale = scaler.mean_, scaler.scale_
        self.mean, self.components = pca.mean_, pca.components_[keep]
        rotated = self._rotate(standardised)
        self.output_mean, self.output_scale = rotated.mean(0), rotated.std(0)
        return self

    def _rotate(self, standardised: np.ndarray) -> np.ndarray:
        return (standardised - self.mean) @ self.components.T

    @property
    def num_components(self) -> int:
        return len(self.components)

    @property
    def dim(self) -> int:
        return self.components.shape[1]

    def transform(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(standardised components [N, k], the standardised input's remainder outside their span [N, dim])."""
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"the PCA was fitted on {self.dim} features, got {x.shape[1]}")
        standardised = (x - self.input_mean) / self.input_scale
        rotated = self._rotate(standardised)
        remainder = standardised - self.mean - rotated @ self.components
        return (rotated - self.output_mean) / self.output_scale, remainder

    def inverse(self, components: np.ndarray, remainder: np.ndarray) -> np.ndarray:
        rotated = np.asarray(components, dtype=np.float64) * self.output_scale + self.output_mean
        return (rotated @ self.components + self.mean + remainder) * self.input_scale + self.input_mean

    def state(self) -> dict[str, np.ndarray]:
        """Everything the pipeline needs, as arrays (saved with a run and its export)."""
        return {key: np.asarray(getattr(self, key)) for key in STATE_KEYS}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> "InvertiblePCA":
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"a saved PCA pipeline lacks {', '.join(missing)}")
        pca = cls(num_components=len(state["components"]))
        for key in STATE_KEYS:
            setattr(pca, key, np.asarray(state[key], dtype=np.float64))
        return pca
