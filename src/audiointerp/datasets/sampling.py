"""Semantically balanced sampling: cluster the dictionary's word vectors, then sample clusters uniformly.

As in Esposito et al. (ICASSP 2023), the word vectors of the dictionary are grouped by Ward clustering on
cosine distance into K clusters (K = 300 in the paper). Each training draw picks a cluster uniformly among the
clusters that have clips, then a clip uniformly among the clips that have a word in that cluster, so frequent
concepts (many near-synonymous words, many clips) do not dominate training.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = [
    "ClusterBalancedSampler",
    "ClusterCoverage",
    "SharedEpoch",
    "clip_clusters",
    "cluster_coverage",
    "cluster_words",
    "sampling_weights",
]

_SAMPLER_SALT = 0x5A3D1  # keeps the sampler's random stream apart from other users of (seed, epoch)


class SharedEpoch:
    """A dataset's `epoch` attribute kept in shared memory, so that DataLoader workers that persist over epochs
    see each new epoch set in the main process (`set_epoch`), and draw that epoch's crops or pairs.

    A data descriptor: declare `epoch = SharedEpoch()` in the class; `self.epoch = 3` and `self.epoch` then work
    as for a plain int (0 before the first assignment). The value lives in a one-element int64 tensor in shared
    memory, which workers inherit (fork) or receive as a handle to the same memory (spawn). A loader reads
    `set_epoch` before it starts the epoch's iterator, so every batch of an epoch sees that epoch.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_shared_{name}"

    def __get__(self, obj: object, owner: type | None = None) -> int:
        if obj is None:
            return self  # type: ignore[return-value]
        cell = obj.__dict__.get(self.key)
        return 0 if cell is None else int(cell[0])

    def __set__(self, obj: object, value: int) -> None:
        cell = obj.__dict__.get(self.key)
        if cell is None:
            cell = obj.__dict__[self.key] = torch.zeros(1, dtype=torch.int64).share_memory_()
        cell[0] = int(value)


def cluster_words(vectors: np.ndarray, k: int = 300) -> np.ndarray:
    """Cluster labels ``0..k-1`` of word vectors ``[n, dim]``: Ward linkage on cosine distance, cut into ``k`` clusters.

    Rows are L2-normalised first; for unit vectors the squared Euclidean distance is ``2 - 2 cos``, a monotone
    function of the cosine distance, which gives Ward's criterion (defined for Euclidean distances) a cosine
    geometry. The tree is cut after its first ``n - k`` merges, so there are exactly ``k`` clusters, numbered in
    order of their first word. Ward linkage is deterministic (no seed). ``k > n`` becomes ``k = n`` with a
    warning. Memory grows as ``n²`` (about 400 MB for 10,000 words).
    """
    from scipy.cluster.hierarchy import linkage

    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"vectors must be a non-empty [n, dim] matrix, got shape {x.shape}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    n = x.shape[0]
    k = int(k)
    if k > n:
        warnings.warn(f"k={k} clusters requested for {n} words; using k={n} (one word per cluster)", UserWarning, stacklevel=2)
        k = n
    if not np.isfinite(x).all():
        raise ValueError(f"vector {int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])} is not finite")
    norms = np.linalg.norm(x, axis=1)
    if np.any(norms == 0):
        raise ValueError(f"vector {int(np.flatnonzero(norms == 0)[0])} is zero; cosine distance is undefined for it")
    if k == n:
        return np.arange(n, dtype=np.int64)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    merges = linkage(x / norms[:, None], method="ward", metric="euclidean")
    parent = np.arange(2 * n - 1)
    for step in range(n - k):
        a, b = int(merges[step, 0]), int(merges[step, 1])
        parent[a] = parent[b] = n + step
    root = parent.copy()
    for node in range(2 * n - 2, -1, -1):  # a parent always has a larger id than its children
        root[node] = root[parent[node]]
    _, first, inverse = np.unique(root[:n], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # rank of each cluster by its first word
    return order[inverse].astype(np.int64)


def clip_clusters(clip_word_ids: Sequence[Iterable[int]], word_labels: Sequence[int] | np.ndarray) -> list[list[int]]:
    """The clusters of each clip: the distinct cluster labels of its words (word ids index ``word_labels``)."""
    labels = np.asarray(word_labels)
    return [list(dict.fromkeys(int(labels[int(w)]) for w in ids)) for ids in clip_word_ids]


def _membership(clusters_per_clip: Sequence[Iterable[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cluster ids (sorted), and the clips of cluster j as ``members[starts[j]:starts[j] + sizes[j]]``."""
    pairs: list[tuple[int, int]] = []
    for clip, ids in enumerate(clusters_per_clip):
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
            raise TypeError(f"the clusters of clip {clip} must be a list of cluster ids, got {type(ids).__name__}")
        for c in dict.fromkeys(ids):
            if isinstance(c, bool) or int(c) != c:
                raise ValueError(f"cluster id {c!r} of clip {clip} is not an integer")
            pairs.append((int(c), clip))
    if not pairs:
        return (np.zeros(0, np.int64),) * 4
    arr = np.array(pairs, dtype=np.int64)
    arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
    ids, starts, sizes = np.unique(arr[:, 0], return_index=True, return_counts=True)
    return ids, starts.astype(np.int64), sizes.astype(np.int64), arr[:, 1].copy()


def sampling_weights(clusters_per_clip: Sequence[Iterable[int]]) -> np.ndarray:
    """Probability (float64, sums to 1) that one draw of :class:`ClusterBalancedSampler` picks each clip.

    ``p(clip) = sum over its clusters c of 1 / (C * |c|)``, with C the number of clusters that have clips and
    ``|c|`` the number of clips in c; a clip without a cluster has probability 0.
    """
    clusters_per_clip = [list(c) for c in clusters_per_clip]
    ids, _, sizes, members = _membership(clusters_per_clip)
    if len(ids) == 0:
        raise ValueError("no clip has a cluster; nothing can be sampled")
    return _clip_weights(sizes, members, len(clusters_per_clip))


def _clip_weights(sizes: np.ndarray, members: np.ndarray, n_clips: int) -> np.ndarray:
    per_member = np.repeat(1.0 / (len(sizes) * sizes), sizes)
    return np.bincount(members, weights=per_member, minlength=n_clips)


@dataclass(frozen=True)
class ClusterCoverage:
    """How many of ``n_clusters`` clusters have clips, the empty ones, clips per cluster and clips without cluster."""

    n_clusters: int
    covered: int
    empty: tuple[int, ...]
    clips_per_cluster: np.ndarray
    unassigned_clips: int

    @property
    def fraction(self) -> float:
        return self.covered / self.n_clusters if self.n_clusters else 0.0

    def summary(self) -> str:
        sizes = self.clips_per_cluster[self.clips_per_cluster > 0]
        spread = ""
        if len(sizes):
            spread = f"; clips per covered cluster: min {int(sizes.min())}, median {float(np.median(sizes)):g}, max {int(sizes.max())}"
        shown = f" (empty: {list(self.empty[:20])}{', ...' if len(self.empty) > 20 else ''})" if self.empty else ""
        return f"{self.covered} of {self.n_clusters} clusters have clips{shown}{spread}; {self.unassigned_clips} clips have no cluster"

    def to_dict(self) -> dict[str, object]:
        return {
            "n_clusters": self.n_clusters,
            "covered": self.covered,
            "empty": list(self.empty),
            "clips_per_cluster": self.clips_per_cluster.tolist(),
            "unassigned_clips": self.unassigned_clips,
        }


def cluster_coverage(clusters_per_clip: Sequence[Iterable[int]], n_clusters: int | None = None) -> ClusterCoverage:
    """Coverage of clusters ``0..n_clusters-1`` (default: largest id + 1) by the clips."""
    clusters_per_clip = [list(c) for c in clusters_per_clip]
    ids, _, sizes, _ = _membership(clusters_per_clip)
    if n_clusters is None:
        n_clusters = int(ids.max()) + 1 if len(ids) else 0
    if len(ids) and (ids.min() < 0 or ids.max() >= n_clusters):
        raise ValueError(f"cluster ids must lie in 0..{n_clusters - 1}, found {int(ids.min())}..{int(ids.max())}")
    counts = np.zeros(int(n_clusters), dtype=np.int64)
    counts[ids] = sizes
    unassigned = sum(1 for c in clusters_per_clip if not c)
    return ClusterCoverage(int(n_clusters), int((counts > 0).sum()), tuple(np.flatnonzero(counts == 0).tolist()), counts, unassigned)


class ClusterBalancedSampler(Sampler[int]):
    """Clip indices drawn so that clusters are equally likely: a cluster uniformly, then one of its clips uniformly.

    ``clusters_per_clip[i]`` lists the clusters of clip i's words (a clip with words in several clusters
    belongs to each; clips without a cluster are never drawn). Each epoch draws ``num_samples`` indices (default:
    the number of clips) with replacement, from a generator seeded by ``(seed, epoch)`` only: the global RNGs
    are never touched, and every process of a distributed run draws the same sequence, which Accelerate's
    batch sharding then splits between processes. Call :meth:`set_epoch` each epoch (Accelerate's prepared
    DataLoader does it).
    """

    def __init__(self, clusters_per_clip: Sequence[Iterable[int]], num_samples: int | None = None, *, seed: int = 0) -> None:
        super().__init__()
        clusters_per_clip = [list(c) for c in clusters_per_clip]
        ids, starts, sizes, members = _membership(clusters_per_clip)
        if len(ids) == 0:
            raise ValueError(f"none of the {len(clusters_per_clip)} clips has a cluster; nothing can be sampled")
        if num_samples is None:
            num_samples = len(clusters_per_clip)
        if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.cluster_ids = ids
        self._starts, self._sizes, self._members = starts, sizes, members
        self.num_clips = len(clusters_per_clip)
        self.unassigned = [i for i, c in enumerate(clusters_per_clip) if not c]
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    @property
    def n_clusters(self) -> int:
        """Number of clusters that have clips (the clusters drawn from)."""
        return len(self.cluster_ids)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draw :meth:`__iter__` yields."""
        if isinstance(epoch, bool) or int(epoch) != epoch or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        self.epoch = int(epoch)

    def draw(self, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's draw: clip indices and the cluster id each was drawn for (both int64 ``[num_samples]``)."""
        rng = np.random.default_rng([_SAMPLER_SALT, self.seed, self.epoch if epoch is None else int(epoch)])
        cluster = rng.integers(0, len(self.cluster_ids), size=self.num_samples)
        offset = rng.integers(0, self._sizes[cluster])
        return self._members[self._starts[cluster] + offset], self.cluster_ids[cluster]

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """Clip indices of the epoch's draw (default: the current epoch)."""
        return self.draw(epoch)[0]

    def weights(self) -> np.ndarray:
        """Per-clip probability of one draw (see :func:`sampling_weights`)."""
        return _clip_weights(self._sizes, self._members, self.num_clips)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples
