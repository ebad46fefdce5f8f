"""`flow`: the disentangling invertible flow of Esser et al. 2020 on one layer of an activation store (Dick et al.).

The store's layer goes through an invertible scaler -> PCA -> scaler pipeline; the flow sees the first D
components (the rest pass through unchanged, see `models/pca.py`). Its code splits into `[residual, factor 1,
...]` blocks of `factor_dims`. Two losses (`losses/factor.py`):

- `task.loss=pairs` (Esser et al.'s IIN): pairs of clips that share one drawn factor's value (`FactorPairs`); the
  shared factor's block is correlated by rho within a pair.
- `task.loss=supervised` (LatentAudio's final code; the paper's "clusters along the material dimension for
  sounds of same material"): independently drawn pairs (`IndependentPairs`) that share every factor whose values
  agree; each factor's first axis is a mixture of normals at the factor's class centres.

Pairs are drawn afresh every epoch. `task.rho` is the within-pair correlation (LatentAudio's `sigma`); a
`task.sigma` is refused. Evaluation: NLL in bits per dimension, KNN accuracy of every factor from every block of
the code (the factor's own block should decode it, the others should not) and from the factor's coordinate, and
the paper's Fig. 1 scatter of the factor coordinates coloured by each factor. A block's coordinate axis is fitted
on training clips and applied to validation clips (`factor_axis`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from omegaconf import MISSING
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from audiointerp.datasets.sampling import SharedEpoch
from audiointerp.datasets.store import ActivationStore, StoreError
from audiointerp.errors import ConfigError, closest
from audiointerp.evaluation.plots import factor_scatter
from audiointerp.evaluation.results import EvalResult
from audiointerp.losses import FactorLoss, SupervisedFactorLoss, estimate_factor_dims
from audiointerp.models.flow import Flow
from audiointerp.models.pca import InvertiblePCA
from audiointerp.train.tasks.base import Task, TaskConfig, TaskData, register_task

log = logging.getLogger("audiointerp")

PCA_PREFIX = "pca."  # the PCA pipeline's arrays, saved with the run and its export
INIT_SAMPLE = 2048  # training clips that initialise the ActNorm layers (the same on every process)
AXIS_SAMPLE = 4096  # training clips whose codes fit each factor's coordinate axis at evaluation
LOSSES = ("pairs", "supervised")


@dataclass
class FlowConfig(TaskConfig):
    name: str = "flow"
    layer: str = MISSING  # the store layer the flow reads (e.g. layer9, block3); `audiointerp analyze decode` finds the best
    factors: list[str] = field(default_factory=lambda: ["material", "action"])  # clip-table columns, one code block each
    factor_dims: list[int] = field(default_factory=lambda: [62, 1, 1])  # [residual, factor 1, ...]: sums to components
    components: int = 64  # D: PCA components the flow sees; the rest pass through unchanged
    loss: str = "pairs"  # pairs (Esser et al.: pairs share one drawn factor) | supervised (LatentAudio: class centres)
    rho: float = 0.975  # correlation of a shared factor's codes within a pair (LatentAudio's code calls it sigma)
    sigma: Optional[float] = None  # refused: LatentAudio's sigma is rho here; sqrt(1 - rho^2) is derived
    centre_spacing: float = 4.0  # supervised: distance between adjacent class centres on a factor's first axis
    centre_scale: float = 1.0  # supervised: standard deviation of each class's normal around its centre
    pairs_per_epoch: Optional[int] = None  # pairs drawn per epoch (null: one per training clip)
    pca_clips: int = 10000  # random training clips the PCA is fitted on
    knn_neighbors: int = 10  # k of the KNN accuracy of each code block
    knn_folds: int = 10  # cross-validation folds of that accuracy
    scatter_points: int = 2000  # validation clips in the factor-coordinate scatter


def uniforms(seed: int, epoch: int, items: np.ndarray, stream: int) -> np.ndarray:
    """Uniform numbers in [0, 1), one per item, a pure function of (seed, epoch, item, stream): a counter-based
    generator (splitmix64's finaliser over the four numbers), so a batch of items is drawn in a few vectorised
    operations and each item's draw is the same whichever batch or worker asks for it."""
    with np.errstate(over="ignore"):
        z = (np.asarray(items, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ np.uint64((int(seed) * 0xBF58476D1CE4E5B9 + int(epoch) * 0x94D049BB133111EB + int(stream) * 0x2545F4914F6CDD1D)
                         % 2**64))
        for shift, multiplier in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z = (z ^ (z >> np.uint64(shift))) * np.uint64(multiplier)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(2**53)


def collate_batch(batch: Any) -> Any:
    """A pair dataset's collate: its `__getitems__` already returns the whole batch as one dict."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class _Pairs(Dataset, metaclass=ABCMeta):
    """Pairs of clips drawn per item, redrawn each epoch (`set_epoch`), reproducibly; a batch is drawn at once
    (`__getitems__`, which the DataLoader calls with the batch's indices), so a batch of 2,048 pairs costs a few
    array operations instead of 2,048 Python calls."""

    epoch = SharedEpoch()  # the epoch of the draw; seen by persistent workers
    collate_fn = staticmethod(collate_batch)

    def __init__(self, x: torch.Tensor, codes: np.ndarray, seed: int, length: Optional[int] = None) -> None:
        self.x, self.codes, self.seed = x, np.asarray(codes), int(seed)
        self.length = int(length or len(x))
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @abstractmethod
    def draw(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a, b, shared) of `items`: clip indices and [items, factors] booleans."""

    def __getitems__(self, items: list[int]) -> dict[str, torch.Tensor]:
        a, b, shared = self.draw(np.asarray(items, dtype=np.int64))
        a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
        batch = {"x_a": self.x[a_t], "x_b": self.x[b_t], "shared": torch.from_numpy(shared), "index": a_t}
        return self._extra(batch, shared)

    def _extra(self, batch: dict[str, torch.Tensor], shared: np.ndarray) -> dict[str, torch.Tensor]:
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([int(i)]).items()}


class FactorPairs(_Pairs):
    """Pairs (a, b) that share one factor's value: a runs over the clips, the shared factor is drawn uniformly,
    and b uniformly among the other clips with a's value of it. Redrawn each epoch (`set_epoch`), reproducibly."""

    def __init__(self, x: torch.Tensor, codes: np.ndarray, seed: int, length: Optional[int] = None) -> None:
        super().__init__(x, codes, seed, length)
        # per factor: clips sorted by value, where each value's run starts, its size, and each clip's rank in it
        self.order, self.starts, self.sizes, self.rank = [], [], [], []
        for f in range(self.codes.shape[1]):
            column = self.codes[:, f]
            order = np.argsort(column, kind="stable")
            sizes = np.bincount(column, minlength=column.max() + 1)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            rank = np.empty(len(column), dtype=np.int64)
            rank[order] = np.arange(len(column)) - starts[column[order]]
            self.order.append(order), self.starts.append(starts), self.sizes.append(sizes), self.rank.append(rank)

    def draw(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_factors = self.codes.shape[1]
        a = items % len(self.x)
        factor = np.minimum((uniforms(self.seed, self.epoch, items, 0) * n_factors).astype(np.int64), n_factors - 1)
        b = np.empty_like(a)
        for f in range(n_factors):
            chosen = factor == f
            clips = a[chosen]
            value = self.codes[clips, f]
            size, start, own = self.sizes[f][value], self.starts[f][value], self.rank[f][clips]
            others = np.maximum(size - 1, 1)  # a clip alone with its value pairs with itself
            k = np.minimum((uniforms(self.seed, self.epoch, items[chosen], 1) * others).astype(np.int64), others - 1)
            k = np.where((size > 1) & (k >= own), k + 1, np.where(size > 1, k, own))  # skip a itself
            b[chosen] = self.order[f][start + k]
        shared = np.zeros((len(items), n_factors), dtype=bool)
        shared[np.arange(len(items)), factor] = True
        return a, b, shared

    def pair(self, i: int) -> tuple[int, int, int]:
        """(a, b, shared factor) of item i (factor 0-based)."""
        a, b, shared = self.draw(np.array([int(i)]))
        return int(a[0]), int(b[0]), int(shared[0].argmax())

    def _extra(self, batch: dict[str, torch.Tensor], shared: np.ndarray) -> dict[str, torch.Tensor]:
        batch["factor"] = torch.from_numpy(shared.argmax(1) + 1)  # 1-based, as the loss's blocks
        return batch


class IndependentPairs(_Pairs):
    """LatentAudio's pairs: a runs over the clips, b is drawn uniformly from all clips independently of a, and
    the pair shares every factor whose values agree (`shared`, [factors] booleans; possibly none). Redrawn each
    epoch (`set_epoch`), reproducibly."""

    def draw(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = items % len(self.x)
        b = np.minimum((uniforms(self.seed, self.epoch, items, 0) * len(self.x)).astype(np.int64), len(self.x) - 1)
        return a, b, self.codes[a] == self.codes[b]

    def pair(self, i: int) -> tuple[int, int]:
        """(a, b) of item i."""
        a, b, _ = self.draw(np.array([int(i)]))
        return int(a[0]), int(b[0])


def clips_digest(store: ActivationStore) -> str:
    """sha256 of a store's clip table (every column, in clip order): identifies the clips behind store indices."""
    text = json.dumps([list(row.items()) for row in store.clips], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def factor_axis(block: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The unit axis along which the class means of `block` [N, d] spread most (the first principal axis of the
    means; [1.0] for a 1-D block). Fitted on training clips, then applied to any clips as `block @ axis`."""
    block = np.asarray(block, dtype=np.float64)
    if block.shape[1] == 1:
        return np.ones(1)
    means = np.stack([block[labels == value].mean(0) for value in np.unique(labels)])
    axis = np.linalg.svd(means - means.mean(0), full_matrices=False)[2][0]
    return axis if axis[np.argmax(np.abs(axis))] > 0 else -axis  # a fixed sign


def encode_codes(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Sorted distinct values and each clip's index among them."""
    classes = sorted(set(values.tolist()))
    lookup = {value: i for i, value in enumerate(classes)}
    return classes, np.array([lookup[v] for v in values], dtype=np.int64)


@register_task
class FlowTask(Task):
    """Train the disentangling flow on a store layer; encode and decode activations through PCA and flow."""

    name = "flow"
    family = "flow"
    Config = FlowConfig

    # --- building -------------------------------------------------------------------------------------
    def _split(self, store: ActivationStore) -> tuple[np.ndarray, np.ndarray]:
        """Training and validation clip indices: the configured folds, or a seeded 80/20 split without folds."""
        folds = store.column("fold")
        if not any(folds):
            order = np.random.default_rng(int(self.cfg.train.seed)).permutation(len(store))
            cut = len(order) // 5
            log.info("the store's clips have no folds: validating on a random fifth (%d clips)", cut)
            return np.sort(order[cut:]), np.sort(order[:cut])
        train = np.flatnonzero(np.isin(folds, [str(f) for f in self.cfg.data.train_folds]))
        valid = np.flatnonzero(np.isin(folds, [str(f) for f in self.cfg.data.valid_folds]))
        for name, split in (("train_folds", train), ("valid_folds", valid)):
            if not len(split):
                raise ConfigError(f"data.{name} selects no clips of the store; its folds: {', '.join(sorted(set(folds)))}")
        return train, valid

    def build_data(self) -> TaskData:
        cfg, task = self.cfg, self.cfg.task
        store = ActivationStore(str(cfg.data.source))
        layer = str(task.layer)
        if layer not in store.layers:
            raise ConfigError(f"task.layer={layer!r} is not in the store {store.folder}{closest(layer, store.layers)}; "
                              f"its layers: {', '.join(store.layers)}")
        factor_values, codes = {}, []
        for factor in task.factors:
            factor_values[factor], code = encode_codes(store.column(str(factor)))
            if len(factor_values[factor]) < 2:
                raise StoreError(f"factor {factor!r} has a single value in the store: nothing to disentangle")
            codes.append(code)
        codes = np.stack(codes, 1)
        train, valid = self._split(store)
        if str(task.loss) not in LOSSES:
            raise ConfigError(f"task.loss={task.loss!r}{closest(str(task.loss), LOSSES)}; choose one of {', '.join(LOSSES)}")
        seed = int(cfg.train.seed)
        rng = np.random.default_rng(seed)
        fit = np.sort(rng.choice(train, size=min(int(task.pca_clips), len(train)), replace=False))
        log.info("fitting the PCA pipeline on %d clips of %s (%d values each)", len(fit), layer,
                 int(np.prod(store.shape(layer))))
        pca = InvertiblePCA(int(task.components), seed=seed).fit(store.load(layer, fit).reshape(len(fit), -1))
        x_train, x_valid = (torch.from_numpy(self._components(store, layer, pca, split)) for split in (train, valid))
        self.init_sample = x_train[torch.from_numpy(rng.permutation(len(train))[:INIT_SAMPLE])]
        self.axis_sample = (x_train, codes[train])  # fits the coordinate axes at evaluation
        pair_type = FactorPairs if str(task.loss) == "pairs" else IndependentPairs
        train_pairs = pair_type(x_train, codes[train], seed, task.pairs_per_epoch)
        valid_pairs = pair_type(x_valid, codes[valid], seed + 1)
        estimate_pairs = FactorPairs(x_train, codes[train], seed)  # iin's estimate needs pairs sharing one factor
        a, b, shared = estimate_pairs.draw(np.arange(min(len(estimate_pairs), 4096)))  # the pairs of items 0..4095
        a, b, factor = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(shared.argmax(1))
        estimate = estimate_factor_dims(x_train[a], x_train[b], factor + 1, len(task.factors))
        log.info("estimated factor dimensions [residual, %s]: %s (configured: %s)", ", ".join(task.factors), estimate,
                 list(task.factor_dims))
        self.estimated_dims = dict(zip(["residual", *task.factors], estimate))
        metadata = {
            "store": str(store.folder.resolve()), "layer": layer, "layer_shape": list(store.shape(layer)),
            "store_model": store.meta.get("model"), "store_identity": store.model_identity(),
            "factors": list(task.factors), "factor_values": factor_values, "components": int(task.components),
            "estimated_factor_dims": estimate, "train_clips": len(train), "valid_clips": len(valid),
            # the clips the flow trained on (its PCA: `pca_indices`, a subset): `manipulate` uses only the others
            "train_indices": train.tolist(), "pca_indices": fit.tolist(), "valid_indices": valid.tolist(),
            "store_clips": len(store), "store_clips_sha256": clips_digest(store),
        }
        arrays = {PCA_PREFIX + key: torch.from_numpy(value) for key, value in pca.state().items()}
        return TaskData(train_pairs, valid_pairs, metadata, arrays)

    def build_eval_data(self, source: str, format: str = "auto", folds: Optional[Sequence[str]] = None) -> Dataset:
        """Pairs over the clips of `folds` (None: every clip) of the store `source`, through the run's PCA, drawn as
        its validation pairs are (e.g. `data.test_folds`). The store must hold the run's layer, shape and factor
        values."""
        store = ActivationStore(str(source))
        layer = str(self.layer)
        if layer not in store.layers or tuple(store.shape(layer)) != tuple(self.layer_shape):
            raise ConfigError(f"{source} does not hold the flow's layer {layer!r} of shape {tuple(self.layer_shape)} "
                              f"(its layers: {', '.join(store.layers)})")
        codes = self._store_codes(store)
        clip_folds = store.column("fold")
        clips = np.flatnonzero(np.isin(clip_folds, [str(f) for f in folds])) if folds else np.arange(len(store))
        if not len(clips):
            raise ConfigError(f"folds {list(folds or [])} select no clips of {source}; its folds: {sorted(set(clip_folds))}")
        x = torch.from_numpy(self._components(store, layer, self.pca, clips))
        pair_type = FactorPairs if str(self.cfg.task.loss) == "pairs" else IndependentPairs
        return pair_type(x, codes[clips], int(self.cfg.train.seed) + 2)

    def _store_codes(self, store: ActivationStore) -> np.ndarray:
        """[clips, factors] codes of a store's clips under the flow's factor values (a value it never saw is a
        StoreError naming it)."""
        codes = []
        for factor in self.factors:
            values, known = store.column(str(factor)), self.factor_values[factor]
            unknown = sorted(set(values.tolist()) - set(known))
            if unknown:
                raise StoreError(f"{store.folder}: {factor} values {unknown} are not among the flow's {known}")
            codes.append(np.array([known.index(v) for v in values], dtype=np.int64))
        return np.stack(codes, 1)

    def _components(self, store: ActivationStore, layer: str, pca: InvertiblePCA, clips: np.ndarray,
                    chunk: int = 2048) -> np.ndarray:
        """The first D standardised components of `clips`, read chunk by chunk (memory stays bounded)."""
        out = np.empty((len(clips), pca.num_components), dtype=np.float32)
        for start in tqdm(range(0, len(clips), chunk), desc="PCA components", unit="chunk",
                          disable=not bool(self.cfg.train.progress), leave=False):
            indices = clips[start:start + chunk]
            out[start:start + len(indices)] = pca.transform(store.load(layer, indices).reshape(len(indices), -1))[0]
        return out

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        cfg, task = self.cfg, self.cfg.task
        if str(cfg.model.name) != "flow":
            raise ConfigError(f"task flow trains model.name=flow (its params are the Flow's), not {cfg.model.name!r}")
        params = dict(cfg.model.params)
        valid = [name for name in inspect.signature(Flow).parameters if name != "dim"]
        for key in params:
            if key not in valid:
                raise ConfigError(f"model.params.{key}: the flow has no such parameter{closest(key, valid)}; "
                                  f"its parameters: {', '.join(valid)}")
        if task.sigma is not None:
            raise ConfigError(f"task.sigma={task.sigma} is not accepted: LatentAudio's `sigma` is the within-pair "
                              f"correlation of the shared factor's codes, which is task.rho here (set task.rho={task.sigma}; "
                              "the conditional standard deviation sqrt(1 - rho^2) is derived)")
        if str(task.loss) not in LOSSES:
            raise ConfigError(f"task.loss={task.loss!r}{closest(str(task.loss), LOSSES)}; choose one of {', '.join(LOSSES)}")
        dims = [int(d) for d in task.factor_dims]
        if len(dims) != len(task.factors) + 1 or sum(dims) != int(task.components):
            raise ConfigError(f"task.factor_dims={dims} must be [residual, one size per factor of {list(task.factors)}] "
                              f"summing to task.components={task.components}")
        self.factors = list(metadata["factors"])
        self.factor_values: dict[str, list[str]] = metadata["factor_values"]
        self.layer = str(metadata["layer"])
        self.layer_shape = tuple(metadata["layer_shape"])
        self.run_metadata = metadata  # the store and training clips, for the coordinate axes without build_data
        self.pca = InvertiblePCA.from_state({key[len(PCA_PREFIX):]: value.numpy() for key, value in (arrays or {}).items()
                                             if key.startswith(PCA_PREFIX)})
        self.flow = Flow(int(task.components), **params)
        try:
            if str(task.loss) == "supervised":
                self.loss_fn: FactorLoss = SupervisedFactorLoss(
                    dims, [len(self.factor_values[f]) for f in self.factors], rho=float(task.rho),
                    spacing=float(task.centre_spacing), scale=float(task.centre_scale))
            else:
                self.loss_fn = FactorLoss(dims, rho=float(task.rho))
        except ValueError as err:
            raise ConfigError(f"task.loss={task.loss}: {err}") from err
        sample = getattr(self, "init_sample", None)
        if sample is not None:  # data-initialise the ActNorms on the same clips in every process
            with torch.no_grad():
                self.flow.train()(sample)

    def metric_names(self) -> list[str]:
        blocks = ["residual", *self.cfg.task.factors]
        knn = [f"knn_{factor}@{block}" for factor in self.cfg.task.factors for block in [*blocks, f"{factor}_coordinate"]]
        return ["loss", "nll_a", "nll_b", "bits_per_dim", "examples", *knn,
                *(f"chance_{factor}" for factor in self.cfg.task.factors),
                *(f"estimated_dims_{block}" for block in blocks)]

    def tags(self) -> list[str]:
        return [self.family, "flow", Path(str(self.cfg.data.source)).name, str(self.cfg.task.layer)]

    # --- the maps -------------------------------------------------------------------------------------
    def blocks(self) -> dict[str, slice]:
        """The code's blocks by name: `residual` and each factor."""
        bounds = np.cumsum([0, *self.loss_fn.factor_dims])
        return {name: slice(int(bounds[i]), int(bounds[i + 1])) for i, name in enumerate(["residual", *self.factors])}

    @torch.no_grad()
    def encode(self, activations: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Layer activations [N, ...] -> (flow codes [N, D], the PCA remainder that passes through)."""
        components, remainder = self.pca.transform(np.asarray(activations).reshape(len(activations), -1))
        z, _ = self.flow(torch.as_tensor(components, dtype=torch.float32))
        return z, remainder

    @torch.no_grad()
    def decode(self, z: torch.Tensor, remainder: np.ndarray) -> np.ndarray:
        """Codes and remainder back to layer activations [N, *layer_shape] (the exact inverse of `encode`)."""
        components = self.flow.inverse(z.float()).double().numpy()
        return self.pca.inverse(components, remainder).reshape(len(z), *self.layer_shape)

    # --- training and evaluation ----------------------------------------------------------------------
    def _pair_nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, logdet = self.flow(torch.cat([batch["x_a"], batch["x_b"]]))
        (z_a, z_b), (logdet_a, logdet_b) = z.chunk(2), logdet.chunk(2)
        nll_a, nll_b = self.loss_fn.pair_nll(z_a, logdet_a, z_b, logdet_b, batch["shared"])
        return z_a, nll_a, nll_b

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        z_a, nll_a, nll_b = self._pair_nll(batch)
        loss = (nll_a + nll_b).mean()
        return loss, {"loss": loss.detach(), "nll_a": nll_a.mean().detach(), "nll_b": nll_b.mean().detach(),
                      "bits_per_dim": self.loss_fn.bits_per_dim(nll_a.mean()).detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z_a, nll_a, nll_b = self._pair_nll(batch)
        return {"z": z_a.float(), "nll_a": nll_a.float(), "nll_b": nll_b.float(), "index": batch["index"]}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        order = outputs["index"].argsort()
        z = outputs["z"][order].numpy()
        codes = dataset.codes[outputs["index"][order].numpy()]
        nll_a, nll_b = outputs["nll_a"], outputs["nll_b"]
        metrics = {"loss": float((nll_a + nll_b).mean()), "nll_a": float(nll_a.mean()), "nll_b": float(nll_b.mean()),
                   "bits_per_dim": float(self.loss_fn.bits_per_dim(nll_a.mean())), "examples": float(len(z))}
        axes = self.coordinate_axes()
        coordinates = {factor: self.coordinate(z, factor, axes[factor]) for factor in self.factors}
        metrics.update(self.block_accuracies(z, codes, coordinates))
        metrics.update({f"estimated_dims_{block}": float(n) for block, n in getattr(self, "estimated_dims", {}).items()})
        figures = {"factor_coordinates": self.scatter(coordinates, codes, z)}
        return EvalResult(metrics, figures)

    @torch.no_grad()
    def coordinate_axes(self) -> dict[str, np.ndarray]:
        """Each factor's coordinate axis (`factor_axis`), fitted on the codes of up to AXIS_SAMPLE training clips
        under the current flow, never on the clips it is applied to."""
        x, codes = self.axis_clips()
        parameter = next(self.flow.parameters())
        was_training = self.flow.training
        z = self.flow.eval()(x.to(parameter.device, parameter.dtype))[0].float().cpu().numpy()
        self.flow.train(was_training)
        return {factor: factor_axis(z[:, self.blocks()[factor]], codes[:, f]) for f, factor in enumerate(self.factors)}

    def axis_clips(self) -> tuple[torch.Tensor, np.ndarray]:
        """Components [n, D] and codes [n, factors] of the (up to AXIS_SAMPLE, seeded) training clips that fit the
        coordinate axes: from the training data when `build_data` ran, else (a checkpoint or an export evaluated
        later) the same clips read from the run's store, whose clip table must be the one it trained on."""
        def chosen(n: int) -> np.ndarray:  # the same seeded choice whichever way the clips are found
            return np.random.default_rng(int(self.cfg.train.seed)).permutation(n)[:AXIS_SAMPLE]

        x, codes = getattr(self, "axis_sample", (None, None))
        if x is not None:
            picked = chosen(len(x))
            return x[torch.from_numpy(picked)], codes[picked]
        if getattr(self, "stored_axis_clips", None) is None:
            meta = getattr(self, "run_metadata", {})
            train = np.asarray(meta.get("train_indices", []), dtype=np.int64)
            if "store" not in meta or not len(train):
                raise ConfigError("the flow's coordinate axes are fitted on its training clips, but neither were they "
                                  "loaded (build_data) nor does the run's metadata name its store and training clips")
            store = ActivationStore(str(meta["store"]))
            if clips_digest(store) != meta.get("store_clips_sha256"):
                raise StoreError(f"{store.folder}: its clip table is not the one the flow trained on, so its training "
                                 "clips (which fit the factor coordinates' axes) cannot be found there")
            clips = train[chosen(len(train))]
            self.stored_axis_clips = (torch.from_numpy(self._components(store, self.layer, self.pca, clips)),
                                      self._store_codes(store)[clips])
        return self.stored_axis_clips

    def coordinate(self, z: np.ndarray, factor: str, axis: np.ndarray) -> np.ndarray:
        """A factor's coordinate: its block projected on `axis` (from `coordinate_axes`; a 1-D block is its own)."""
        return z[:, self.blocks()[factor]] @ axis

    def block_accuracies(self, z: np.ndarray, codes: np.ndarray, coordinates: dict[str, np.ndarray]) -> dict[str, float]:
        """KNN accuracy (cross-validated) of every factor from every block of the code and from its own coordinate
        (`knn_<factor>@<factor>_coordinate`, the scatter's axis), and chance (the majority class)."""
        task = self.cfg.task
        out = {}
        for f, factor in enumerate(self.factors):
            labels = codes[:, f]
            counts = np.bincount(labels)
            out[f"chance_{factor}"] = float(counts.max() / len(labels))
            folds = min(int(task.knn_folds), int(counts[counts > 0].min()))
            if folds < 2:
                continue  # too few clips of some value to cross-validate
            split = StratifiedKFold(folds, shuffle=True, random_state=int(self.cfg.train.seed))
            neighbours = min(int(task.knn_neighbors), len(labels) - len(labels) // folds - 1)
            features = {block: z[:, columns] for block, columns in self.blocks().items()}
            features[f"{factor}_coordinate"] = coordinates[factor][:, None]
            for name, x in features.items():
                scores = cross_val_score(KNeighborsClassifier(neighbours), x, labels, cv=split)
                out[f"knn_{factor}@{name}"] = float(scores.mean())
        return out

    def scatter(self, coordinates: dict[str, np.ndarray], codes: np.ndarray, z: np.ndarray) -> Any:
        """The paper's Fig. 1: the first two factors' coordinates (one factor: against the residual's first
        dimension), coloured by each factor."""
        shown = np.random.default_rng(0).permutation(len(codes))[: int(self.cfg.task.scatter_points)]
        axes = [(f"{name} coordinate", coordinates[name][shown]) for name in list(coordinates)[:2]]
        if len(axes) < 2:
            axes.append(("residual dimension 1", z[shown, 0]))
        colourings = [(factor, [self.factor_values[factor][c] for c in codes[shown, f]])
                      for f, factor in enumerate(self.factors)]
        return factor_scatter(axes, colourings,
                              title=f"flow code of {self.layer} (validation clips; axes fitted on training clips)")

    # --- export ---------------------------------------------------------------------------------------
    def export_module(self) -> nn.Module:
        return self.flow

    def write_export_files(self, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        path = out_dir / "factors.txt"
        path.write_text("".join(f"{factor}: {', '.join(values)}\n" for factor, values in metadata["factor_values"].items()),
                        encoding="utf-8")
        return [path]

