"""Word clustering and semantically balanced sampling (audiointerp.datasets.sampling)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from sklearn.metrics import adjusted_rand_score
from torch.utils.data import DataLoader

from audiointerp.datasets.sampling import (
    ClusterBalancedSampler,
    SharedEpoch,
    clip_clusters,
    cluster_coverage,
    cluster_words,
    sampling_weights,
)

# --- cluster_words ------------------------------------------------------------------------------


def _clustered_vectors(sizes: list[int], dim: int = 30, spread: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Directions around random centres, with random lengths (clusters are defined by angle, not norm)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    parts = []
    for c, n in zip(centres, sizes):
        d = c + spread * rng.normal(size=(n, dim)) / np.sqrt(dim)
        parts.append(d * rng.uniform(0.2, 5.0, size=(n, 1)))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(len(truth))
    return np.concatenate(parts)[order], truth[order]


def test_cluster_words_recovers_clusters() -> None:
    x, truth = _clustered_vectors([4, 30, 12, 60, 7, 25, 2, 40])
    labels = cluster_words(x, k=8)
    assert labels.dtype == np.int64 and labels.shape == (len(x),)
    assert sorted(set(labels.tolist())) == list(range(8))
    assert adjusted_rand_score(truth, labels) > 0.9
    # numbered by first word, deterministic
    firsts = [int(np.flatnonzero(labels == c)[0]) for c in range(8)]
    assert firsts == sorted(firsts)
    assert np.array_equal(cluster_words(x, k=8), labels)


def test_cluster_words_uses_cosine_not_length() -> None:
    # two directions; lengths differ wildly within each: cosine clustering ignores the length
    a = np.array([[1.0, 0.05], [10.0, 0.2], [0.1, 0.0]])
    b = np.array([[0.02, 1.0], [0.5, 20.0], [0.0, 0.3]])
    labels = cluster_words(np.concatenate([a, b]), k=2)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_cluster_words_exact_k_and_edges() -> None:
    x, _ = _clustered_vectors([5, 5, 5], seed=1)
    for k in (1, 2, 3, 7, 15):
        assert len(set(cluster_words(x, k=k).tolist())) == k
    with pytest.warns(UserWarning, match="k=20"):
        labels = cluster_words(x, k=20)
    assert labels.tolist() == list(range(15))
    assert cluster_words(x[:1], k=1).tolist() == [0]
    with pytest.raises(ValueError, match="zero"):
        cluster_words(np.array([[1.0, 0.0], [0.0, 0.0]]), k=1)
    with pytest.raises(ValueError, match="k must"):
        cluster_words(x, k=0)
    with pytest.raises(ValueError, match="shape"):
        cluster_words(np.zeros(5), k=1)


def test_clip_clusters() -> None:
    word_labels = np.array([2, 0, 2, 1])
    assert clip_clusters([[0, 2], [3], [], [1, 0, 3]], word_labels) == [[2], [1], [], [0, 2, 1]]


# --- sampler ------------------------------------------------------------------------------------


def _unbalanced() -> list[list[int]]:
    """One-cluster clips with very different cluster sizes: 1, 5, 40 and 400 clips."""
    sizes = {0: 1, 1: 5, 2: 40, 3: 400}
    clips = [[c] for c, n in sizes.items() for _ in range(n)]
    random.Random(0).shuffle(clips)
    return clips


def test_clusters_sampled_uniformly() -> None:
    clips = _unbalanced()
    sampler = ClusterBalancedSampler(clips, num_samples=40_000, seed=0)
    idx = np.array(list(sampler))
    clusters = np.array([clips[i][0] for i in idx])
    freq = np.bincount(clusters, minlength=4)
    assert np.abs(freq / len(idx) - 0.25).max() < 0.01
    assert chisquare(freq).pvalue > 1e-3
    # within the big cluster, clips are drawn uniformly too
    big = [i for i, c in enumerate(clips) if c == [3]]
    counts = np.bincount(idx, minlength=len(clips))[big]
    assert chisquare(counts).pvalue > 1e-3
    # the single clip of cluster 0 is drawn about a quarter of the time
    assert abs(np.mean(idx == clips.index([0])) - 0.25) < 0.01


def test_multi_cluster_clips_match_weights() -> None:
    clips = [[0], [0], [0, 1], [1], [2, 0], [], [2, 2]]
    w = sampling_weights(clips)
    assert w.sum() == pytest.approx(1.0) and w[5] == 0
    # 3 clusters; cluster 0 has clips {0,1,2,4}, cluster 1 {2,3}, cluster 2 {4,6}
    assert w[2] == pytest.approx(1 / 12 + 1 / 6) and w[6] == pytest.approx(1 / 6)
    sampler = ClusterBalancedSampler(clips, num_samples=60_000, seed=5)
    np.testing.assert_allclose(sampler.weights(), w)
    assert sampler.unassigned == [5] and sampler.n_clusters == 3
    idx, drawn_for = sampler.draw()
    emp = np.bincount(idx, minlength=len(clips)) / len(idx)
    assert np.abs(emp - w).max() < 0.01
    assert all(drawn_for[j] in clips[idx[j]] for j in range(200))


def test_sampler_determinism_and_epochs() -> None:
    clips = _unbalanced()
    a = ClusterBalancedSampler(clips, seed=7)
    b = ClusterBalancedSampler(clips, seed=7)
    assert len(a) == len(clips)
    first = list(a)
    assert first == list(a) == list(b)  # same (seed, epoch) → same sequence, across instances
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    assert a.indices(0).tolist() == first
    assert list(ClusterBalancedSampler(clips, seed=8)) != first
    with pytest.raises(ValueError):
        a.set_epoch(-1)


def test_sampler_leaves_global_rngs_alone() -> None:
    sampler = ClusterBalancedSampler(_unbalanced(), num_samples=100, seed=0)
    np.random.seed(123)
    torch.manual_seed(123)
    random.seed(123)
    list(sampler)
    sampler.set_epoch(4)
    list(sampler)
    assert np.random.rand() == np.random.RandomState(123).rand()
    assert torch.equal(torch.rand(3), torch.rand(3, generator=torch.Generator().manual_seed(123)))
    assert random.random() == random.Random(123).random()


def test_sampler_with_accelerate_sharding() -> None:
    """Two processes prepare the same loader; Accelerate hands each every other batch of the one shared sequence."""
    from accelerate.data_loader import prepare_data_loader

    clips = _unbalanced()
    dataset = list(range(len(clips)))
    per_rank = []
    for rank in range(2):
        sampler = ClusterBalancedSampler(clips, num_samples=64, seed=3)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler)
        prepared = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False, use_seedable_sampler=True)
        epochs = []
        for epoch in range(2):
            prepared.set_epoch(epoch)
            epochs.append([batch.tolist() for batch in prepared])
        assert sampler.epoch == 1  # set_epoch reached the sampler
        per_rank.append(epochs)
    reference = ClusterBalancedSampler(clips, num_samples=64, seed=3)
    for epoch in range(2):
        full = reference.indices(epoch).tolist()
        batches = [full[i : i + 8] for i in range(0, 64, 8)]
        assert per_rank[0][epoch] == batches[0::2]
        assert per_rank[1][epoch] == batches[1::2]
    assert per_rank[0][0] != per_rank[0][1]


def test_sampler_input_checks() -> None:
    with pytest.raises(ValueError, match="none of the 2 clips"):
        ClusterBalancedSampler([[], []])
    with pytest.raises(ValueError, match="num_samples"):
        ClusterBalancedSampler([[0]], num_samples=0)
    with pytest.raises(ValueError, match="not an integer"):
        ClusterBalancedSampler([[0.5]])
    with pytest.raises(TypeError):
        ClusterBalancedSampler([0, 1])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        sampling_weights([[], []])


def test_cluster_coverage() -> None:
    cov = cluster_coverage([[0], [0, 2], [], [2], [4]], n_clusters=6)
    assert (cov.n_clusters, cov.covered, cov.empty, cov.unassigned_clips) == (6, 3, (1, 3, 5), 1)
    assert cov.clips_per_cluster.tolist() == [2, 0, 2, 0, 1, 0]
    assert cov.fraction == pytest.approx(0.5)
    assert "3 of 6 clusters have clips" in cov.summary() and "1 clips have no cluster" in cov.summary()
    assert cov.to_dict()["empty"] == [1, 3, 5]
    assert cluster_coverage([[1], [3]]).n_clusters == 4
    with pytest.raises(ValueError, match="0..2"):
        cluster_coverage([[5]], n_clusters=3)


class _EpochEcho(torch.utils.data.Dataset):
    """Returns the epoch it sees, for each of 8 items."""

    epoch = SharedEpoch()

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> int:
        return self.epoch


def test_persistent_workers_see_each_new_epoch() -> None:
    """Known answer: DataLoader workers that persist over epochs hold a copy of the dataset made at their start;
    with the epoch in shared memory they return the epoch set afterwards (a plain attribute would give 0 forever)."""
    dataset = _EpochEcho()
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in range(3):
        dataset.epoch = epoch
        seen.append(sorted(int(v) for batch in loader for v in batch))
    assert seen == [[0] * 8, [1] * 8, [2] * 8]
    assert _EpochEcho().epoch == 0 and dataset.epoch == 2
