"""`concepts`: fine-tune a concept representation for a downstream label (Zhang, Thomaz & Lu 2025).

The data are a store layer's audio embeddings and a concept vocabulary's text embeddings (word vectors, a semDNN
run's dictionary, or CLAP's text tower), both prepared as SpLiCE does. The model (`ConceptBottleneck`) maps an
embedding through a linear projector (initialised to the identity), prepares it, decomposes it over the fixed
concept dictionary by unrolled ISTA for the non-negative lasso (the same objective as
`evaluation.concepts.decompose`, differentiable), and classifies the non-negative concept weights with a linear
head. `task.train_part`: `head` (the concept weights stay those of the plain decomposition) or `both` (the
projector learns too). The baseline is a logistic regression on the plain decomposition's weights (scikit-learn,
fitted once); validation reports accuracy, that baseline, their difference and the concepts used per sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

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
    ista_steps: int = 50  # unrolled ISTA iterations
    train_part: str = "both"  # head | both (projector and head)


class ConceptBottleneck(nn.Module):
    """Projector -> SpLiCE preparation -> non-negative lasso over the concepts (unrolled ISTA) -> linear head."""

    def __init__(self, dictionary: torch.Tensor, audio_mean: torch.Tensor, num_classes: int, l1: float, steps: int) -> None:
        super().__init__()
        dim = dictionary.shape[1]
        self.projector = nn.Linear(dim, dim)
        with torch.no_grad():
            self.projector.weight.copy_(torch.eye(dim))
            self.projector.bias.zero_()
        self.register_buffer("dictionary", dictionary.float())  # [K, d], prepared
        self.register_buffer("audio_mean", audio_mean.float())
        self.head = nn.Linear(dictionary.shape[0], num_classes)
        self.l1, self.steps = float(l1), int(steps)
        lipschitz = torch.linalg.matrix_norm(self.dictionary.double(), ord=2).item() ** 2 / dim
        self.step_size = 1.0 / lipschitz

    def prepared(self, x: torch.Tensor) -> torch.Tensor:
        unit = F.normalize(self.projector(x), dim=-1)
        return F.normalize(unit - self.audio_mean, dim=-1)

    def concept_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Non-negative weights [B, K] minimising (1/2d)(||w D - a||^2 + l1 ||w||_1), `decompose`'s objective
        (ISTA from zero)."""
        a = self.prepared(x)
        dim = a.shape[-1]
        w = a.new_zeros(a.shape[0], self.dictionary.shape[0])
        for _ in range(self.steps):
            gradient = (w @ self.dictionary - a) @ self.dictionary.T / dim
            w = F.relu(w - self.step_size * (gradient + self.l1 / (2 * dim)))
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.concept_weights(x))


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
        embeddings = clip_embeddings(store, str(task.layer))
        vocabulary, dictionary = self._dictionary()
        if embeddings.shape[1] != dictionary.shape[1]:
            raise ConfigError(f"task.layer={task.layer} has {embeddings.shape[1]} dimensions, the concepts "
                              f"{dictionary.shape[1]}: the layer must live in the concepts' embedding space")
        labels = store.column(str(task.factor))
        classes = sorted(set(labels.tolist()))
        targets = np.array([classes.index(v) for v in labels])
        folds = store.column("fold")
        train = np.isin(folds, [str(f) for f in cfg.data.train_folds])
        valid = np.isin(folds, [str(f) for f in cfg.data.valid_folds])
        if not train.any() or not valid.any():
            raise ConfigError(f"data.train_folds / valid_folds select no clips; the store's folds: {sorted(set(folds))}")
        audio_train, audio_mean = prepare(embeddings[train])
        audio_valid, _ = prepare(embeddings[valid], mean=audio_mean)
        text, _ = prepare(dictionary)
        sparse_train, sparse_valid = decompose(audio_train, text, float(task.l1)), decompose(audio_valid, text, float(task.l1))
        baseline = LogisticRegression(max_iter=2000).fit(sparse_train, targets[train]).score(sparse_valid, targets[valid])
        self.baseline_accuracy = float(baseline)
        metadata = {"classes": classes, "concepts": vocabulary, "factor": str(task.factor), "layer": str(task.layer),
                    "baseline_accuracy": self.baseline_accuracy}
        arrays = {"dictionary": torch.as_tensor(text, dtype=torch.float32),
                  "audio_mean": torch.as_tensor(audio_mean, dtype=torch.float32)}
        return TaskData(EmbeddingLabels(embeddings[train], targets[train]), EmbeddingLabels(embeddings[valid], targets[valid]),
                        metadata, arrays)

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        if not arrays or "dictionary" not in arrays:
            raise ConfigError("the concepts task needs its dictionary arrays (rebuild from a run or an export)")
        task = self.cfg.task
        self.classes, self.concepts = list(metadata["classes"]), list(metadata["concepts"])
        self.baseline_accuracy = float(metadata.get("baseline_accuracy", float("nan")))
        self.model = ConceptBottleneck(arrays["dictionary"], arrays["audio_mean"], len(self.classes), float(task.l1),
                                       int(task.ista_steps))
        self.model.projector.requires_grad_(task.train_part == "both")

    def metric_names(self) -> list[str]:
        return ["loss", "accuracy", "baseline_accuracy", "accuracy_change", "concepts_per_sound", "examples"]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.model(batch["x"])
        loss = F.cross_entropy(logits, batch["target"])
        return loss, {"loss": loss.detach(), "accuracy": (logits.argmax(-1) == batch["target"]).float().mean().detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights = self.model.concept_weights(batch["x"])
        return {"logits": self.model.head(weights), "target": batch["target"],
                "concepts_used": (weights > 0).sum(-1).float()}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        logits, target = outputs["logits"], outputs["target"]
        accuracy = float((logits.argmax(-1) == target).float().mean())
        return EvalResult({"loss": float(F.cross_entropy(logits, target)), "accuracy": accuracy,
                           "baseline_accuracy": self.baseline_accuracy,
                           "accuracy_change": accuracy - self.baseline_accuracy,
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
    """Stored embeddings and their classes as the trainer's batches: {"x", "target", "index"}."""

    def __init__(self, embeddings: np.ndarray, targets: np.ndarray) -> None:
        self.x = torch.as_tensor(embeddings, dtype=torch.float32)
        self.target = torch.as_tensor(targets, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "target": self.target[i], "index": torch.tensor(i)}
