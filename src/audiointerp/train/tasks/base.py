"""The task interface: one small class per method family, run by the one generic trainer.

A task is an `nn.Module` holding its networks (trainable and frozen). The trainer calls, in order:
`build_data()` -> `build_models(metadata)` -> for each batch `task(batch)` (= `step`, through DDP) ->
`eval_step(batch)` on validation batches (outputs gathered over processes) -> `summarize(outputs, dataset)`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Optional, Sequence

import torch
from omegaconf import MISSING, DictConfig
from torch import nn
from torch.utils.data import Dataset, Sampler

from audiointerp.datasets import load_manifest
from audiointerp.errors import ConfigError, closest
from audiointerp.evaluation.results import EvalResult
from audiointerp.train.data import manifest_dataset


@dataclass
class TaskConfig:
    """Base of every task's config section."""

    name: str = MISSING  # the task: a name from `audiointerp.train.tasks.available_tasks()`


@dataclass
class TaskData:
    """A task's datasets, and what rebuilds its models: JSON-able metadata (classes, vocabulary...) and arrays
    (e.g. a dictionary's word vectors), saved with the run and with every export."""

    train: Dataset
    valid: Dataset
    metadata: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, torch.Tensor] = field(default_factory=dict)
    train_sampler: Optional[Sampler] = None  # None: shuffled by the trainer's seedable sampler


class Task(nn.Module, metaclass=ABCMeta):
    """One method family: its models, its data, its training loss and its evaluation."""

    name: ClassVar[str]
    family: ClassVar[str]
    Config: ClassVar[type] = TaskConfig
    job_type: ClassVar[str] = "train"

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg

    # --- building -------------------------------------------------------------------------------------
    @abstractmethod
    def build_data(self) -> TaskData:
        """Datasets for training and validation, and the metadata the models are built from."""

    @abstractmethod
    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        """Create the networks from the config and the data's metadata and arrays (also to rebuild an export)."""

    def build_eval_data(self, source: str, format: str = "auto", folds: Optional[Sequence[str]] = None) -> Dataset:
        """An evaluation set from any dataset reader, labelled with the classes the models were built for.

        The trainer also scores the best checkpoint with it on `data.test_folds` (source and format of the run's
        data), and `audiointerp evaluate` on any data; a task whose data is not a manifest of audio (e.g. an
        activation store) overrides it, and its `eval_step`/`summarize` must accept what it returns."""
        manifest = load_manifest(source, format=format)
        if folds:
            manifest = manifest.select_folds(list(folds))
        classes = getattr(self, "classes", None) or manifest.class_list(str(self.cfg.data.label_column))
        return manifest_dataset(self.cfg.data, manifest, train=False, classes=classes, seed=int(self.cfg.train.seed),
                                progress=bool(self.cfg.train.progress))

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimiser updates (default: all that require gradients)."""
        return (p for p in self.parameters() if p.requires_grad)

    def frozen_modules(self) -> dict[str, str]:
        """Submodules that never train and are rebuilt from a source of their own, by attribute name, with that
        source in words (e.g. {"classifier": "zoo mn10, weights runs/.../export"}). Checkpoints leave their
        weights out and record the source and a sha256 instead; a resume checks the rebuilt module against it.
        Default: none."""
        return {}

    def compiled_modules(self) -> list[nn.Module]:
        """The networks `train.compile=true` compiles in place (`nn.Module.compile`: state-dict keys unchanged).
        Default: the exported network."""
        return [self.export_module()]

    # --- training -------------------------------------------------------------------------------------
    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training forward: (loss, logs). Logs are detached scalars averaged over the logging window."""

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.step(batch)

    # --- evaluation -----------------------------------------------------------------------------------
    @abstractmethod
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-example outputs of a validation batch; the trainer gathers them over processes."""

    @abstractmethod
    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        """Metrics, figures and tables from the gathered outputs of a whole evaluation set."""

    # --- export ---------------------------------------------------------------------------------------
    @abstractmethod
    def export_module(self) -> nn.Module:
        """The network an export holds (e.g. front end + classifier)."""

    def write_export_files(self, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        """Extra files of an export (labels, vocabularies). Default: `labels.txt` when there are classes."""
        classes = metadata.get("classes")
        if not classes:
            return []
        path = out_dir / "labels.txt"
        path.write_text("\n".join(classes) + "\n", encoding="utf-8")
        return [path]

    def evaluation_notes(self) -> dict[str, str]:
        """How this task's figures are computed, where a config leaves a choice (e.g. the ranking's tie rule):
        written beside the metrics in summary.json and by `audiointerp evaluate`. Default: none."""
        return {}

    def metric_names(self) -> Optional[list[str]]:
        """Names of the validation metrics `summarize` returns, to check train.best_metric before training
        (None: not known in advance)."""
        return None

    def tags(self) -> list[str]:
        """W&B tags: family, model and dataset."""
        source = Path(str(self.cfg.data.source))
        data_name = source.parent.name if source.suffix == ".csv" else source.name  # the data set's folder
        return [self.family, str(self.cfg.model.name), data_name]


# --- tasks by name ------------------------------------------------------------------------------------------
_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available under `cls.name`."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls
    return cls


def _ensure_tasks_imported() -> None:
    """The registry loads its members on first use (their modules import this one)."""
    import audiointerp.train.tasks.ae_finetune_task  # noqa: F401
    import audiointerp.train.tasks.classifier_task  # noqa: F401
    import audiointerp.train.tasks.concepts_task  # noqa: F401
    import audiointerp.train.tasks.flow_task  # noqa: F401
    import audiointerp.train.tasks.semantic_task  # noqa: F401


def available_tasks() -> list[str]:
    _ensure_tasks_imported()
    return sorted(_TASKS)


def task_class(name: str) -> type[Task]:
    _ensure_tasks_imported()
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}{closest(name, _TASKS)}; available: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]
