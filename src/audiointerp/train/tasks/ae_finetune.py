"""`ae_finetune`: fine-tune a waveform autoencoder through the gradients of a frozen classifier
("What do Deep Networks Like to Hear?").

The classifier (any zoo pipeline, or an export of this project) is frozen: no gradients, and eval mode for the
whole run (BatchNorm statistics fixed, front-end augmentation off), also while the autoencoder trains. The loss
is the classifier's cross-entropy on the reconstruction, plus an optional weighted MSE reconstruction term
(`task.reconstruction_weight`, 0 as in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn
from torch.utils.data import Dataset

from audiointerp.errors import ConfigError
from audiointerp.evaluation import metrics as M
from audiointerp.losses import MultiResolutionSTFTDistance, snr_db
from audiointerp.models import build, build_pipeline
from audiointerp.models.archisound import AutoencoderWrapper, initialise
from audiointerp.train.data import manifest_splits
from audiointerp.train.tasks.base import AudioClip, EvalResult, Table, Task, TaskConfig, TaskData
from audiointerp.train.tasks.registry import register_task


@dataclass
class AEFinetuneConfig(TaskConfig):
    name: str = "ae_finetune"
    classifier: str = MISSING  # the frozen classifier: a zoo name (mn10, dymn10, passt) or an export folder
    classifier_checkpoint: Optional[str] = None  # local weights of a zoo classifier (e.g. fine-tuned on ESC-50)
    classifier_params: dict[str, Any] = field(default_factory=dict)  # builder parameters of a zoo classifier
    train_part: str = "both"  # encoder | decoder | both: which part of the autoencoder trains
    start: str = "pretrained"  # pretrained (model.checkpoint) | random (xavier-uniform, zero bias, GroupNorm 1/0)
    ae_rate: int = 48000  # the autoencoder's sample rate (input resampled to it and back)
    reconstruction_weight: float = 0.0  # weight of an MSE reconstruction term (0: classifier loss only)


@register_task
class AEFinetuneTask(Task):
    """An autoencoder trained so that a frozen classifier recognises its reconstructions."""

    name = "ae_finetune"
    family = "ae_finetune"
    Config = AEFinetuneConfig

    def build_data(self) -> TaskData:
        cfg = self.cfg
        train, valid, classes = manifest_splits(cfg.data, seed=int(cfg.train.seed), progress=bool(cfg.train.progress))
        return TaskData(train, valid, {"classes": classes})

    def _classifier(self, num_classes: int) -> nn.Module:
        from pathlib import Path

        task = self.cfg.task
        if (Path(str(task.classifier)) / "manifest.json").is_file():
            from audiointerp.train.export import load_export

            classifier = load_export(str(task.classifier))
        else:
            classifier = build_pipeline(str(task.classifier), num_classes=num_classes, checkpoint=task.classifier_checkpoint,
                                        params=dict(task.classifier_params))
        if int(classifier.sample_rate) != int(self.cfg.data.sample_rate):
            raise ConfigError(f"the classifier expects {classifier.sample_rate} Hz audio but data.sample_rate="
                              f"{self.cfg.data.sample_rate}")
        return classifier

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        cfg, task = self.cfg, self.cfg.task
        if task.start not in ("pretrained", "random"):
            raise ConfigError(f"task.start={task.start!r}; choose pretrained or random")
        self.classes = list(metadata["classes"])
        self.classifier = self._classifier(len(self.classes))
        self.classifier.requires_grad_(False)
        self.classifier.eval()
        checkpoint = cfg.model.checkpoint if task.start == "pretrained" else None
        autoencoder = build(str(cfg.model.name), checkpoint=checkpoint, **dict(cfg.model.params))
        if task.start == "random":
            initialise(autoencoder, "random")
        self.autoencoder = AutoencoderWrapper(autoencoder, input_rate=int(cfg.data.sample_rate), ae_rate=int(task.ae_rate))
        self.autoencoder.trainable(str(task.train_part))
        self.stft_distance = MultiResolutionSTFTDistance()

    def train(self, mode: bool = True) -> "AEFinetuneTask":
        """Train the autoencoder; the classifier stays in eval mode whatever the mode."""
        super().train(mode)
        if hasattr(self, "classifier"):
            self.classifier.eval()
        return self

    def trainable_parameters(self):
        return (p for p in self.autoencoder.parameters() if p.requires_grad)

    def metric_names(self) -> list[str]:
        return ["loss", "examples", "accuracy_original", "accuracy_reconstruction", "accuracy_change", "ce_original",
                "ce_reconstruction", "snr_db", "mrstft_distance"]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        audio, target = batch["audio"], batch["target"]
        reconstruction = self.autoencoder(audio)
        logits = self.classifier(reconstruction)
        loss = F.cross_entropy(logits, target)
        logs = {"classifier_loss": loss.detach(), "accuracy": (logits.detach().argmax(-1) == target).float().mean()}
        weight = float(self.cfg.task.reconstruction_weight)
        if weight:
            mse = F.mse_loss(reconstruction, audio)
            loss = loss + weight * mse
            logs["reconstruction_mse"] = mse.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        reconstruction = self.autoencoder(audio)
        return {"logits_original": self.classifier(audio).float(), "logits_reconstruction": self.classifier(reconstruction).float(),
                "target": batch["target"], "index": batch["index"], "snr_db": snr_db(reconstruction, audio),
                "mrstft": self.stft_distance(reconstruction, audio)}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        target = outputs["target"]
        original, recon = outputs["logits_original"], outputs["logits_reconstruction"]
        metrics = {
            "loss": float(F.cross_entropy(recon, target)),
            "examples": float(len(target)),
            "accuracy_original": M.accuracy(original, target),
            "accuracy_reconstruction": M.accuracy(recon, target),
            "ce_original": float(F.cross_entropy(original, target)),
            "ce_reconstruction": float(F.cross_entropy(recon, target)),
            "snr_db": float(outputs["snr_db"].mean()),
            "mrstft_distance": float(outputs["mrstft"].mean()),
        }
        metrics["accuracy_change"] = metrics["accuracy_reconstruction"] - metrics["accuracy_original"]
        n = len(self.classes)
        before = M.per_class_accuracy(M.confusion_matrix(original.argmax(-1), target, n))
        after = M.per_class_accuracy(M.confusion_matrix(recon.argmax(-1), target, n))
        changes = Table(["class", "accuracy original", "accuracy reconstruction", "change"],
                        [[c, float(b), float(a), float(a - b)] for c, b, a in zip(self.classes, before, after) if b == b])
        changes.rows.sort(key=lambda row: row[3])
        return EvalResult(metrics, tables={"per_class_change": changes, "listening": self.listening_table(outputs, dataset)})

    @torch.no_grad()
    def listening_table(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> Table:
        """The same first validation clips every epoch: original, reconstruction, predictions before and after."""
        table = Table(["index", "class", "original", "reconstruction", "predicted (original)", "predicted (reconstruction)"])
        rate = int(self.cfg.data.sample_rate)
        order = outputs["index"].argsort()[: int(self.cfg.tracking.audio_examples)]
        for row in order.tolist():
            index = int(outputs["index"][row])
            audio = dataset[index]["audio"].unsqueeze(0)
            reconstruction = self.autoencoder(audio.to(next(self.autoencoder.parameters()).device)).cpu()
            true = self.classes[int(outputs["target"][row])]
            table.rows.append([index, true, AudioClip(audio[0].numpy(), rate, "original"),
                               AudioClip(reconstruction[0].numpy(), rate, "reconstruction"),
                               self.classes[int(outputs["logits_original"][row].argmax())],
                               self.classes[int(outputs["logits_reconstruction"][row].argmax())]])
        return table

    def export_module(self) -> nn.Module:
        return self.autoencoder
