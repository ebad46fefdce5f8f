"""`concepts`: fine-tune a concept representation for a downstream label (Zhang, Thomaz & Lu 2025).

The data are a store layer's audio embeddings and a concept vocabulary's text embeddings (word vectors, a semDNN
run's dictionary, or CLAP's text tower), both prepared as SpLiCE does. The model (`ConceptBottleneck`) maps an
embedding through a linear projector (initialised to the identity), prepares it, decomposes it over the fixed
concept dictionary by the non-negative lasso (the objective of `evaluation.concepts.decompose`), and classifies the
non-negative concept weights with a linear head.

The lasso is solved, not approximated: `nonnegative_lasso` runs FISTA with adaptive restarts (warm-started from
each training example's previous solution) until the exact minimiser on the iterate's support passes the KKT
conditions to `task.solver_tol`, so the weights are the lasso's (tested against scikit-learn at tol=1e-10 on a
correlated 402-concept dictionary). Gradients reach the projector by implicit differentiation on the support
(`support_solution`: w_S = G_SS^-1 ((D a)_S - l1/2), the derivative of the solution wherever its support is locally
constant), not through the iterations, so memory and backward time do not grow with the iterations run.

`task.train_part`: `head` (the concept weights stay those of the plain decomposition) or `both` (the projector
learns too). The baseline is a logistic regression on the plain decomposition's weights (`decompose`, scikit-learn
at tol=1e-7, within ~1e-5 of the same lasso; fitted once); validation reports accuracy, that baseline, their difference and the concepts used per sound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.utils.data import Dataset

from audiointerp.analysis.concepts import clip_embeddings, run_vectors, word_vector_dictionary
from audiointerp.analysis.store import ActivationStore
from audiointerp.errors import ConfigError
from audiointerp.evaluation.concepts import decompose, prepare
from audiointerp.train.tasks.base import EvalResult, Task, TaskConfig, TaskData
from audiointerp.train.tasks.registry import register_task

log = logging.getLogger("audiointerp")

PARTS = ("head", "both")


@dataclass
class ConceptsConfig(TaskConfig):
    name: str = "concepts"
    layer: str = MISSING  # the store layer of audio embeddings (in the concepts' embedding space)
    factor: str = "material"  # the clip-table column to predict
    vocabulary: Optional[str] = None  # concepts file (null: the shipped audio vocabulary)
    encoder: str = "word-vectors"  # word-vectors | clap
    vectors: str = "glove-6b-50d"  # word vectors: glove-6b-50d, a vectors file, or a semDNN run/export folder
    clap: Optional[str] = None  # encoder clap: a local CLAP folder (model and processor)
    l1: float = 0.05  # sparsity penalty of the decomposition
    solver_tol: float = 1e-9  # KKT tolerance of the lasso solver, relative to each sound's largest |D a|
    solver_max_steps: int = 5000  # FISTA iterations at most (a sound not solved by then keeps its last iterate)
    ista_steps: Optional[int] = None  # obsolete (the unrolled ISTA before the exact solver): ignored; older runs load
    train_part: str = "both"  # head | both (projector and head)


def support_solution(a: torch.Tensor, dictionary: torch.Tensor, gram: torch.Tensor, penalty: float,
                     support: torch.Tensor) -> torch.Tensor:
    """w [B, K] with w = 0 off `support` [B, K] and, on it, the stationarity condition of the non-negative lasso
    min 1/2 ||w D - a||^2 + penalty * sum(w) solved exactly: G_SS w_S = (D a)_S - penalty (G = D D^T).

    This is the lasso solution whenever `support` is its support (`kkt_holds` checks), and it is differentiable in
    `a`: its gradient is the implicit derivative of the solution (the support is locally constant). Each sound's
    system is gathered to the largest support in the batch, padded with identity rows; a relative ridge of 1e-13
    on the diagonal keeps a singular G_SS (a support larger than d) solvable."""
    batch, concepts = support.shape
    out = a.new_zeros(batch, concepts)
    size = int(support.sum(1).max()) if support.any() else 0
    if size == 0:
        return out
    order = torch.argsort((~support).to(torch.int8), dim=1, stable=True)[:, :size]  # each sound's support first
    valid = support.gather(1, order)
    zero = a.new_zeros(())
    both = valid[:, :, None] & valid[:, None, :]
    system = torch.where(both, gram[order[:, :, None], order[:, None, :]], zero)
    diagonal = torch.where(valid, gram.diagonal().amax() * 1e-13, a.new_ones(()))
    system = system + torch.diag_embed(diagonal)
    rhs = torch.where(valid, (a @ dictionary.T).gather(1, order) - penalty, zero)
    values = torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)
    return out.scatter(1, order, torch.where(valid, values, zero))


def kkt_holds(w: torch.Tensor, b: torch.Tensor, gram: torch.Tensor, penalty: float, tol: float) -> torch.Tensor:
    """[B] bool: w >= 0 satisfies the optimality conditions of min 1/2 w G w - b w + penalty sum(w), w >= 0, to
    `tol` relative to each sound's largest |b| + penalty: gradient 0 on the support, >= 0 off it."""
    gradient = w @ gram - b + penalty
    scale = (b.abs().amax(1, keepdim=True) + penalty) * tol
    on = w > 0
    return (w >= 0).all(1) & (torch.where(on, gradient.abs(), 0.0) <= scale).all(1) & \
        (torch.where(on, 0.0, -gradient) <= scale).all(1)


@torch.no_grad()
def nonnegative_lasso(a: torch.Tensor, dictionary: torch.Tensor, l1: float, tol: float = 1e-9, max_steps: int = 5000,
                      check_every: int = 10, init: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The non-negative lasso of `decompose`: w [B, K] >= 0 minimising (1/2d)(||w D - a||^2 + l1 ||w||_1) for each
    row of a [B, d] over the dictionary D [K, d], in float64. Returns (w, solved [B] bool, iterations run).

    FISTA (step 1/sigma_max(D)^2) with O'Donoghue and Candes' gradient restart, per sound, from `init` (a warm
    start) or zero. Every `check_every` iterations the iterate's support is polished (`support_solution`: the exact
    minimiser on that support) and a sound whose polished point satisfies the KKT conditions to `tol`
    (`kkt_holds`) is solved: its answer is that point, exact up to the linear solve. A sound still unsolved after
    `max_steps` keeps its last FISTA iterate (solved False)."""
    a = a.double()
    dictionary = dictionary.to(a)
    penalty = float(l1) / 2.0  # the objective times d
    gram = dictionary @ dictionary.T
    step = 1.0 / float(torch.linalg.matrix_norm(dictionary, ord=2)) ** 2
    b = a @ dictionary.T
    w = a.new_zeros(b.shape) if init is None else init.to(b).clamp_min(0.0)
    y, momentum = w.clone(), a.new_ones(len(b), 1)
    result, solved = w.clone(), torch.zeros(len(b), dtype=torch.bool, device=a.device)
    tried = torch.zeros_like(b, dtype=torch.bool)  # the support last polished, per sound
    steps = 0
    for steps in range(0 if init is not None else 1, max_steps + 1):
        if steps > 0:
            new = torch.relu(y - step * ((y @ dictionary - a) @ dictionary.T + penalty))
            restart = ((y - new) * (new - w)).sum(1, keepdim=True) > 0
            following = (1.0 + torch.sqrt(1.0 + 4.0 * momentum * momentum)) / 2.0
            y = new + torch.where(restart, 0.0, (momentum - 1.0) / following) * (new - w)
            momentum = torch.where(restart, 1.0, following)
            w = new
        if steps % check_every:
            continue
        support = w > 0
        todo = torch.nonzero(~solved & (support != tried).any(1)).squeeze(1)
        if len(todo):
            tried[todo] = support[todo]
            polished = support_solution(a[todo], dictionary, gram, penalty, support[todo])
            good = kkt_holds(polished, b[todo], gram, penalty, tol)
            result[todo[good]] = polished[good]
            solved[todo[good]] = True
        if bool(solved.all()):
            return result, solved, steps
    result[~solved] = w[~solved]
    return result, solved, steps


class ConceptBottleneck(nn.Module):
    """Projector -> SpLiCE preparation -> non-negative lasso over the concepts (solved exactly) -> linear head.

    The lasso is `decompose`'s (same objective and scale of l1), solved by `nonnegative_lasso` to `tol`; its
    gradient is implicit differentiation on the solution's support (`support_solution`), not backpropagation
    through the iterations. `forward(x, index)` with the examples' indices warm-starts each from its previous
    solution (kept per index, outside the state dict)."""

    def __init__(self, dictionary: torch.Tensor, audio_mean: torch.Tensor, num_classes: int, l1: float,
                 tol: float = 1e-9, max_steps: int = 5000) -> None:
        super().__init__()
        if l1 < 0:
            raise ConfigError(f"task.l1={l1}: the lasso penalty must be >= 0 (0 is non-negative least squares)")
        dim = dictionary.shape[1]
        self.projector = nn.Linear(dim, dim)
        with torch.no_grad():
            self.projector.weight.copy_(torch.eye(dim))
            self.projector.bias.zero_()
        self.register_buffer("dictionary", dictionary.float())  # [K, d], prepared
        self.register_buffer("audio_mean", audio_mean.float())
        self.head = nn.Linear(dictionary.shape[0], num_classes)
        self.l1, self.tol, self.max_steps = float(l1), float(tol), int(max_steps)
        self.warm: dict[str, torch.Tensor] = {}  # data set -> [examples, K] float64 last solutions (warm starts)
        self.last_steps, self.unsolved = 0, 0  # the last call's FISTA iterations and sounds left unsolved

    def prepared(self, x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(self.projector(x), dim=-1)
        return F.normalize(unit - self.audio_mean, dim=-1)

    def concept_weights(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, cache: str = "train") -> torch.Tensor:
        """Non-negative weights [B, K] minimising (1/2d)(||w D - a||^2 + l1 ||w||_1), `decompose`'s objective, for the
        prepared projections a of x; differentiable in x (implicit differentiation on the support). With the
        examples' `index` (positions in one data set, named `cache`), each starts from its previous solution."""
        a = self.prepared(x)
        dictionary = self.dictionary.double()
        previous = self.warm.get(cache) if index is not None else None
        usable = previous is not None and previous.device == a.device and int(index.max()) < len(previous)
        w, solved, self.last_steps = nonnegative_lasso(a.detach(), dictionary, self.l1, self.tol, self.max_steps,
                                                       init=previous[index] if usable else None)
        self.unsolved = int((~solved).sum())
        if self.unsolved:
            log.warning("concept bottleneck: %d of %d sounds not solved to tol %g in %d FISTA steps (their last "
                        "iterate is used)", self.unsolved, len(w), self.tol, self.max_steps)
        if index is not None:
            if not usable:
                grown = w.new_zeros(max(int(index.max()) + 1, 0 if previous is None else len(previous)), w.shape[1])
                if previous is not None and previous.device == a.device:
                    grown[: len(previous)] = previous
                self.warm[cache] = previous = grown
            previous[index] = w
        if torch.is_grad_enabled() and a.requires_grad:
            exact = support_solution(a.double(), dictionary, dictionary @ dictionary.T, self.l1 / 2.0, w > 0)
            w = w + (exact - exact.detach())  # the solution's value, the implicit derivative's gradient
        return w.to(a.dtype)

    def forward(self, x: torch.Tensor, index: Optional[torch.Tensor] = None, cache: str = "train") -> torch.Tensor:
        return self.head(self.concept_weights(x, index, cache))


@register_task
class ConceptsTask(Task):
    """Fine-tune a concept bottleneck on stored embeddings; compare with a probe on the plain decomposition."""

    name = "concepts"
    family = "concepts"
    Config = ConceptsConfig

    def _dictionary(self) -> tuple[list[str], np.ndarray]:
        task = self.cfg.task
        from audiointerp.datasets.vocabulary import audio_concepts

        concepts = audio_concepts(task.vocabulary)
        if task.encoder == "clap":
            from audiointerp.analysis.concepts import clap_dictionary
            from audiointerp.models import build
            from audiointerp.models.clap import load_pretrained

            if not task.clap:
                raise ConfigError("task.encoder=clap needs task.clap=FOLDER (a local CLAP model with its processor)")
            return clap_dictionary(concepts, build("clap", pretrained=task.clap),
                                   load_pretrained(task.clap, "ClapProcessor").tokenizer)
        if task.encoder != "word-vectors":
            raise ConfigError(f"task.encoder={task.encoder!r}; choose word-vectors or clap")
        if Path(str(task.vectors)).is_dir():
            vectors, words = run_vectors(str(task.vectors))
            return word_vector_dictionary(concepts, vectors, words)
        from audiointerp.datasets.embeddings import glove_6b_50d, load_word_vectors

        vectors = glove_6b_50d() if task.vectors == "glove-6b-50d" else load_word_vectors(str(task.vectors))
        return word_vector_dictionary(concepts, vectors)

    def build_data(self) -> TaskData:
        cfg, task = self.cfg, self.cfg.task
        if task.train_part not in PARTS:
            raise ConfigError(f"task.train_part={task.train_part!r}; choose one of {', '.join(PARTS)}")
        store = ActivationStore(str(cfg.data.source))
        embeddings, targets, classes, folds = self._store_clips(store)
        vocabulary, dictionary = self._dictionary()
        if embeddings.shape[1] != dictionary.shape[1]:
            raise ConfigError(f"task.layer={task.layer} has {embeddings.shape[1]} dimensions, the concepts "
                              f"{dictionary.shape[1]}: the layer must live in the concepts' embedding space")
        train = np.isin(folds, [str(f) for f in cfg.data.train_folds])
        valid = np.isin(folds, [str(f) for f in cfg.data.valid_folds])
        if not train.any() or not valid.any():
            raise ConfigError(f"data.train_folds / valid_folds select no clips; the store's folds: {sorted(set(folds))}")
        _, audio_mean = prepare(embeddings[train])
        text, _ = prepare(dictionary)
        self.baseline_accuracy = self._baseline(embeddings, targets, train, valid, audio_mean, text)
        metadata = {"classes": classes, "concepts": vocabulary, "factor": str(task.factor), "layer": str(task.layer),
                    "baseline_accuracy": self.baseline_accuracy}
        arrays = {"dictionary": torch.as_tensor(text, dtype=torch.float32),
                  "audio_mean": torch.as_tensor(audio_mean, dtype=torch.float32)}
        return TaskData(EmbeddingLabels(embeddings[train], targets[train]),
                        EmbeddingLabels(embeddings[valid], targets[valid], self.baseline_accuracy), metadata, arrays)

    def _store_clips(self, store: ActivationStore) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
        """The store's clip embeddings of `task.layer`, their class indices, the classes and each clip's fold."""
        labels = store.column(str(self.cfg.task.factor))
        classes = sorted(set(labels.tolist()))
        targets = np.array([classes.index(v) for v in labels])
        return clip_embeddings(store, str(self.cfg.task.layer)), targets, classes, store.column("fold")

    def _baseline(self, embeddings: np.ndarray, targets: np.ndarray, train: np.ndarray, evaluated: np.ndarray,
                  audio_mean: np.ndarray, text: np.ndarray) -> float:
        """Accuracy on the `evaluated` clips of a logistic regression fitted on the `train` clips' plain decomposition
        (the exact lasso at `task.l1`): what the bottleneck is compared with."""
        l1 = float(self.cfg.task.l1)
        sparse_train = decompose(prepare(embeddings[train], mean=audio_mean)[0], text, l1)
        sparse_eval = decompose(prepare(embeddings[evaluated], mean=audio_mean)[0], text, l1)
        model = LogisticRegression(max_iter=2000).fit(sparse_train, targets[train])
        return float(model.score(sparse_eval, targets[evaluated]))

    def build_eval_data(self, source: str, format: str = "auto", folds: Optional[Sequence[str]] = None) -> Dataset:
        """The clips of `folds` (None: every clip) of the store `source`, with the baseline refitted on the run's
        training folds and scored on them (e.g. `data.test_folds`). The store must hold the run's layer and factor."""
        cfg = self.cfg
        store = ActivationStore(str(source))
        embeddings, targets, classes, clip_folds = self._store_clips(store)
        if not set(classes) <= set(self.classes):
            raise ConfigError(f"{source}: {cfg.task.factor} classes {sorted(set(classes) - set(self.classes))} are not "
                              f"among the run's classes {self.classes}")
        targets = np.array([self.classes.index(classes[t]) for t in targets])
        evaluated = np.isin(clip_folds, [str(f) for f in folds]) if folds else np.ones(len(targets), dtype=bool)
        if not evaluated.any():
            raise ConfigError(f"folds {list(folds or [])} select no clips of {source}; its folds: {sorted(set(clip_folds))}")
        train = np.isin(clip_folds, [str(f) for f in cfg.data.train_folds])
        if not train.any():
            raise ConfigError(f"{source} holds none of the run's training folds {list(cfg.data.train_folds)}, which the "
                              "baseline is fitted on")
        audio_mean = self.model.audio_mean.double().cpu().numpy()
        text = self.model.dictionary.double().cpu().numpy()
        baseline = self._baseline(embeddings, targets, train, evaluated, audio_mean, text)
        return EmbeddingLabels(embeddings[evaluated], targets[evaluated], baseline)

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        if not arrays or "dictionary" not in arrays:
            raise ConfigError("the concepts task needs its dictionary arrays (rebuild from a run or an export)")
        task = self.cfg.task
        self.classes, self.concepts = list(metadata["classes"]), list(metadata["concepts"])
        self.baseline_accuracy = float(metadata.get("baseline_accuracy", float("nan")))
        self.model = ConceptBottleneck(arrays["dictionary"], arrays["audio_mean"], len(self.classes), float(task.l1),
                                       tol=float(task.solver_tol), max_steps=int(task.solver_max_steps))
        self.model.projector.requires_grad_(task.train_part == "both")

    def metric_names(self) -> list[str]:
        return ["loss", "accuracy", "baseline_accuracy", "accuracy_change", "concepts_per_sound", "examples"]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.model(batch["x"], batch.get("index"))  # the index warm-starts each example's lasso
        loss = F.cross_entropy(logits, batch["target"])
        return loss, {"loss": loss.detach(), "accuracy": (logits.argmax(-1) == batch["target"]).float().mean().detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = self.model.concept_weights(batch["x"], batch.get("index"), cache="valid")
        return {"logits": self.model.head(weights), "target": batch["target"],
                "concepts_used": (weights > 0).sum(-1).float()}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        logits, target = outputs["logits"], outputs["target"]
        accuracy = float((logits.argmax(-1) == target).float().mean())
        baseline = getattr(dataset, "baseline_accuracy", None)
        baseline = self.baseline_accuracy if baseline is None else baseline  # the evaluated set's own baseline
        return EvalResult({"loss": float(F.cross_entropy(logits, target)), "accuracy": accuracy,
                           "baseline_accuracy": baseline, "accuracy_change": accuracy - baseline,
                           "concepts_per_sound": float(outputs["concepts_used"].mean()), "examples": float(len(target))})

    def export_module(self) -> nn.Module:
        return self.model

    def write_export_files(self, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        paths = super().write_export_files(out_dir, metadata)
        concepts = out_dir / "concepts.txt"
        concepts.write_text("\n".join(metadata["concepts"]) + "\n", encoding="utf-8")
        return [*paths, concepts]

    def tags(self) -> list[str]:
        return [self.family, str(self.cfg.task.encoder), Path(str(self.cfg.data.source)).name]


class EmbeddingLabels(Dataset):
    """Stored embeddings and their classes as the trainer's batches: {"x", "target", "index"}; an evaluation set
    carries its baseline's accuracy (the plain decomposition's probe on these clips)."""

    def __init__(self, embeddings: np.ndarray, targets: np.ndarray, baseline_accuracy: Optional[float] = None) -> None:
        self.x = torch.as_tensor(embeddings, dtype=torch.float32)
        self.target = torch.as_tensor(targets, dtype=torch.long)
        self.baseline_accuracy = baseline_accuracy

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "target": self.target[i], "index": torch.tensor(i)}
