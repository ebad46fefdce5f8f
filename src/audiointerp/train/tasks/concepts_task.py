"""`concepts`: fine-tune a concept representation for a downstream label (Zhang, Thomaz & Lu 2025).

The data are a store layer's audio embeddings and a concept vocabulary's text embeddings (word vectors, a semDNN
run's dictionary, or CLAP's text tower), both prepared as SpLiCE does. The model (`ConceptBottleneck`) maps an
embedding through a linear projector (initialised to the identity), prepares it, decomposes it over the fixed
concept dictionary by the non-negative lasso (the objective of `evaluation.sparse_coding.decompose`), and classifies the
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
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from sklearn.linear_model import LogisticRegression
from torch import nn
from torch.utils.data import Dataset

from audiointerp.datasets.embeddings import WordVectors, glove_6b_50d, load_word_vectors, word_vector_dictionary
from audiointerp.datasets.store import ActivationStore, StoreError, clip_embeddings
from audiointerp.datasets.vocabulary import audio_concepts, tokenize
from audiointerp.errors import ConfigError
from audiointerp.evaluation.results import EvalResult
from audiointerp.evaluation.sparse_coding import decompose, prepare
from audiointerp.models import build
from audiointerp.models.clap import load_pretrained
from audiointerp.models.concept_bottleneck import ConceptBottleneck
from audiointerp.train.checkpoint import load_arrays
from audiointerp.train.export import run_metadata
from audiointerp.train.tasks.base import Task, TaskConfig, TaskData, register_task

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


def run_vectors(folder: str | Path) -> tuple[Any, Callable[[str], list[str]]]:
    """The word vectors of a semDNN run or export (its dictionary, the space of its `output` layer) and the
    tokenizer its words went through (the run's lemmatization, stop words dropped)."""
    folder = Path(folder)
    metadata, arrays = run_metadata(folder), load_arrays(folder)
    if "vocabulary" not in metadata or "dictionary" not in arrays:
        raise StoreError(f"{folder} is not a semDNN or catDNN run or export (no vocabulary and dictionary)")
    vectors = WordVectors.from_arrays(metadata["vocabulary"], arrays["dictionary"].numpy(), source=str(folder))
    lemmatize, lemmatizer = bool(metadata.get("lemmatize", False)), str(metadata.get("lemmatizer", "auto"))
    return vectors, lambda phrase: tokenize(phrase, lemmatize=lemmatize, lemmatizer=lemmatizer)


@register_task
class ConceptsTask(Task):
    """Fine-tune a concept bottleneck on stored embeddings; compare with a probe on the plain decomposition."""

    name = "concepts"
    family = "concepts"
    Config = ConceptsConfig

    def _dictionary(self) -> tuple[list[str], np.ndarray, str]:
        """(the concepts kept, their text embeddings [K, d], the resolved source of those embeddings: `clap: ...`,
        `run: ...`, `package: ...` or `file: ...`, with the dimension and the concepts kept)."""
        task = self.cfg.task
        concepts = audio_concepts(task.vocabulary)
        if task.encoder == "clap":
            if not task.clap:
                raise ConfigError("task.encoder=clap needs task.clap=FOLDER (a local CLAP model with its processor)")
            network = build("clap", pretrained=task.clap)
            text = network.text_embeddings(list(concepts), load_pretrained(task.clap, "ClapProcessor").tokenizer)
            return list(concepts), text, f"clap: {task.clap} text tower ({text.shape[1]}-d, {len(concepts)} concepts)"
        if task.encoder != "word-vectors":
            raise ConfigError(f"task.encoder={task.encoder!r}; choose word-vectors or clap")
        if Path(str(task.vectors)).is_dir():
            vectors, words = run_vectors(str(task.vectors))
            kept, text = word_vector_dictionary(concepts, vectors, words)
            kind = "run"
        else:
            vectors = glove_6b_50d() if task.vectors == "glove-6b-50d" else load_word_vectors(str(task.vectors))
            kept, text = word_vector_dictionary(concepts, vectors)
            kind = "package" if task.vectors == "glove-6b-50d" else "file"
        return kept, text, f"{kind}: {vectors.source} ({vectors.dim}-d, {len(kept)} of {len(concepts)} concepts have vectors)"

    def build_data(self) -> TaskData:
        cfg, task = self.cfg, self.cfg.task
        if task.train_part not in PARTS:
            raise ConfigError(f"task.train_part={task.train_part!r}; choose one of {', '.join(PARTS)}")
        store = ActivationStore(str(cfg.data.source))
        embeddings, targets, classes, folds = self._store_clips(store)
        vocabulary, dictionary, resolved = self._dictionary()
        log.info("resolved task.vectors: %s", resolved)
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
                    "baseline_accuracy": self.baseline_accuracy, "resolved": {"task.vectors": resolved}}
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
        logits = self.model(batch["x"], batch.get("index")).float()  # the index warm-starts each example's lasso
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
