"""The autoencoder family ("What do Deep Networks Like to Hear?"): `ae_finetune` and `reconstruction`.

`ae_finetune` fine-tunes a waveform autoencoder through the gradients of a frozen classifier (any zoo pipeline,
or an export of this project). The classifier gets no gradients and stays in eval mode for the whole run
(BatchNorm statistics fixed, front-end augmentation off), also while the autoencoder trains. The loss is the
classifier's cross-entropy on the reconstruction, plus an optional weighted MSE term (`task.reconstruction_weight`,
0 as in the reference).

`reconstruction` trains the same autoencoder with MSE alone; its export is the `esc50` start of `ae_finetune`. As in
the thesis (pretrain_autoencoder.py), it starts from the hub weights (`task.start=pretrained`, `model.checkpoint`)
and fine-tunes them on ESC-50; `task.start=random` trains one from scratch.

Both evaluate reconstruction SNR and multi-resolution STFT distance, draw mel spectrograms of originals and
reconstructions side by side, and keep a listening table of the same validation clips every epoch; their exports
hold those clips as WAV files (`listening/`), which `audiointerp listen` puts side by side on one page.
"""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import soundfile as sf
import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn
from torch.utils.data import Dataset

from audiointerp.errors import ConfigError
from audiointerp.evaluation import metrics as M
from audiointerp.evaluation.listening import LISTENING_DIR
from audiointerp.evaluation.plots import spectrogram_pairs
from audiointerp.evaluation.results import AudioClip, EvalResult, Table
from audiointerp.losses import MultiResolutionSTFTDistance, snr_db
from audiointerp.models import build, build_pipeline
from audiointerp.models.archisound import AutoencoderWrapper, initialise
from audiointerp.models.frontends import LogMel
from audiointerp.train.data import manifest_splits
from audiointerp.train.export import WEIGHTS, load_export, verify_export
from audiointerp.train.tasks.base import Task, TaskConfig, TaskData, register_task

log = logging.getLogger("audiointerp")

STARTS = ("pretrained", "random", "esc50")
SPECTROGRAM_CLIPS = 4  # clips in the side-by-side mel figure


@dataclass
class AutoencoderTaskConfig(TaskConfig):
    train_part: str = "both"  # encoder | decoder | both: which part of the autoencoder trains
    start: str = "pretrained"  # pretrained (model.checkpoint) | random (xavier, zero bias, GroupNorm 1/0) | esc50 (a reconstruction export)
    ae_rate: int = 48000  # the autoencoder's sample rate (input resampled to it and back)


@dataclass
class AEFinetuneConfig(AutoencoderTaskConfig):
    name: str = "ae_finetune"
    classifier: str = MISSING  # the frozen classifier: a zoo name (mn10, dymn10, passt) or an export folder
    classifier_checkpoint: Optional[str] = None  # local weights of a zoo classifier (e.g. fine-tuned on ESC-50)
    classifier_params: dict[str, Any] = field(default_factory=dict)  # builder parameters of a zoo classifier
    reconstruction_weight: float = 0.0  # weight of an MSE reconstruction term (0: classifier loss only)


@dataclass
class ReconstructionConfig(AutoencoderTaskConfig):
    name: str = "reconstruction"
    start: str = "pretrained"  # as ae_finetune; the thesis fine-tunes the hub weights on ESC-50 (random: from scratch)
    spectral_weight: float = 0.0  # weight of a multi-resolution STFT distance added to the MSE (0: MSE alone, the thesis)


def start_checkpoint(start: str, checkpoint: Optional[str]) -> Optional[str]:
    """The weights file an autoencoder start reads: none for `random`, `model.checkpoint` for `pretrained`, the
    `model.safetensors` of a `reconstruction` export folder for `esc50`."""
    if start not in STARTS:
        raise ConfigError(f"task.start={start!r}; choose one of {', '.join(STARTS)}")
    if start == "random":
        return None
    if not checkpoint:
        what = "the hub model's local weights" if start == "pretrained" else "the export folder of a reconstruction run"
        raise ConfigError(f"task.start={start} needs model.checkpoint: {what}")
    if start == "pretrained":
        return str(checkpoint)

    manifest = verify_export(checkpoint)
    if manifest.get("task") != "reconstruction":
        raise ConfigError(f"task.start=esc50 needs the export of a `reconstruction` run; {checkpoint} is a "
                          f"{manifest.get('task')!r} export")
    return str(Path(checkpoint) / WEIGHTS)


def safe_name(text: str) -> str:
    """A file-name-safe version of a class name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "clip"


class AutoencoderTask(Task):
    """What both autoencoder tasks share: data, the wrapped autoencoder, reconstruction metrics, spectrograms,
    the listening clips and their export."""

    family = "ae_finetune"

    def build_data(self) -> TaskData:
        cfg = self.cfg
        start_checkpoint(str(cfg.task.start), cfg.model.checkpoint)  # a bad start fails before any data is read
        train, valid, classes = manifest_splits(cfg.data, seed=int(cfg.train.seed), progress=bool(cfg.train.progress))
        return TaskData(train, valid, {"classes": classes})

    def _build_autoencoder(self) -> None:
        """The wrapped autoencoder, from its start (no weights are read when rebuilding an export: checkpoint None)."""
        cfg, task = self.cfg, self.cfg.task
        checkpoint = start_checkpoint(str(task.start), cfg.model.checkpoint) if cfg.model.checkpoint else None
        autoencoder = build(str(cfg.model.name), **dict(cfg.model.params))
        initialise(autoencoder, "random" if checkpoint is None else "pretrained", checkpoint)
        self.autoencoder = AutoencoderWrapper(autoencoder, input_rate=int(cfg.data.sample_rate), ae_rate=int(task.ae_rate))
        self.autoencoder.trainable(str(task.train_part))
        self.stft_distance = MultiResolutionSTFTDistance()

    def trainable_parameters(self):
        return (p for p in self.autoencoder.parameters() if p.requires_grad)

    def export_module(self) -> nn.Module:
        return self.autoencoder

    # --- evaluation -----------------------------------------------------------------------------------
    @property
    def frozen_classifier(self) -> Optional[nn.Module]:
        """The frozen classifier, if the task has one."""
        return self._modules.get("classifier")

    def _reconstruction_outputs(self, audio: torch.Tensor, reconstruction: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"snr_db": snr_db(reconstruction, audio), "mrstft": self.stft_distance(reconstruction, audio)}

    def _reconstruction_metrics(self, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"snr_db": float(outputs["snr_db"].mean()), "mrstft_distance": float(outputs["mrstft"].mean())}

    def _spectrogram(self, device: torch.device) -> nn.Module:
        """What the classifier sees (its own front end, in eval mode, where it is), or a 64-band log-mel."""
        frontend = getattr(self.frozen_classifier, "frontend", None)
        if frontend is not None:
            return frontend
        rate = int(self.cfg.data.sample_rate)
        return LogMel(rate, f_max=rate / 2).to(device)

    @torch.no_grad()
    def listening_clips(self, dataset: Dataset, count: int) -> list[dict[str, Any]]:
        """`count` clips spread evenly over `dataset` (so over its classes; the same every epoch): audio,
        reconstruction and, with a classifier, its predictions on both."""
        device = next(self.autoencoder.parameters()).device
        clips = []
        count = min(count, len(dataset))
        for index in sorted({round(i * (len(dataset) - 1) / max(1, count - 1)) for i in range(count)}):
            item = dataset[index]
            audio = item["audio"].unsqueeze(0).to(device)
            reconstruction = self.autoencoder(audio)
            clip = {"index": index, "class": self.classes[int(item["target"])], "audio": audio[0].cpu(),
                    "reconstruction": reconstruction[0].cpu()}
            if self.frozen_classifier is not None:
                clip["predicted_original"] = self.classes[int(self.classifier(audio).argmax(-1))]
                clip["predicted_reconstruction"] = self.classes[int(self.classifier(reconstruction).argmax(-1))]
            clips.append(clip)
        return clips

    def _listening_results(self, dataset: Dataset) -> tuple[dict[str, Any], dict[str, Table]]:
        """The mel figure and the listening table of the fixed clips."""
        rate = int(self.cfg.data.sample_rate)
        clips = self.listening_clips(dataset, max(int(self.cfg.tracking.audio_examples), SPECTROGRAM_CLIPS))
        with_predictions = self.frozen_classifier is not None
        columns = ["index", "class", "original", "reconstruction"]
        columns += ["predicted (original)", "predicted (reconstruction)"] if with_predictions else []
        table = Table(columns)
        for clip in clips[: int(self.cfg.tracking.audio_examples)]:
            row = [clip["index"], clip["class"], AudioClip(clip["audio"].numpy(), rate, "original"),
                   AudioClip(clip["reconstruction"].numpy(), rate, "reconstruction")]
            table.rows.append(row + ([clip["predicted_original"], clip["predicted_reconstruction"]] if with_predictions else []))
        device = next(self.autoencoder.parameters()).device
        spectrogram = self._spectrogram(device)
        rows = []
        for clip in clips[:SPECTROGRAM_CLIPS]:
            with torch.no_grad():
                pair = spectrogram(torch.stack([clip["audio"], clip["reconstruction"]]).reshape(2, -1).to(device))
            pair = pair.reshape(2, *pair.shape[-2:]).float().cpu().numpy()
            rows.append((f"{clip['index']} {clip['class']}", pair[0], pair[1]))
        figures = {"spectrograms": spectrogram_pairs(rows)} if rows else {}
        return figures, {"listening": table}

    # --- export ---------------------------------------------------------------------------------------
    def write_export_files(self, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        """Labels, and the listening clips as WAV files named by class and index, with `listening/clips.csv`."""
        files = super().write_export_files(out_dir, metadata)
        cfg = self.cfg
        try:
            dataset = self.build_eval_data(str(cfg.data.source), str(cfg.data.format), list(cfg.data.valid_folds))
        except (FileNotFoundError, OSError, ValueError) as err:
            log.warning("export: no listening clips (the validation data %s cannot be read: %s)", cfg.data.source, err)
            return files
        folder = out_dir / LISTENING_DIR
        folder.mkdir(exist_ok=True)
        rate = int(cfg.data.sample_rate)
        rows = []
        for clip in self.listening_clips(dataset, int(cfg.tracking.audio_examples)):
            stem = f"{safe_name(clip['class'])}_{clip['index']:04d}"
            for kind in ("original", "reconstruction"):
                path = folder / f"{stem}_{kind}.wav"
                sf.write(path, clip["audio" if kind == "original" else "reconstruction"].numpy().T, rate, subtype="FLOAT")
                files.append(path)
            rows.append({"index": clip["index"], "class": clip["class"], "original": f"{stem}_original.wav",
                         "reconstruction": f"{stem}_reconstruction.wav",
                         "predicted_original": clip.get("predicted_original", ""),
                         "predicted_reconstruction": clip.get("predicted_reconstruction", "")})
        with open(folder / "clips.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["index"])
            writer.writeheader()
            writer.writerows(rows)
        return [*files, folder / "clips.csv"]


@register_task
class AEFinetuneTask(AutoencoderTask):
    """An autoencoder trained so that a frozen classifier recognises its reconstructions."""

    name = "ae_finetune"
    Config = AEFinetuneConfig

    def _classifier(self, num_classes: int) -> nn.Module:
        task = self.cfg.task
        if (Path(str(task.classifier)) / "manifest.json").is_file():
            classifier = load_export(str(task.classifier))
        else:
            classifier = build_pipeline(str(task.classifier), num_classes=num_classes, checkpoint=task.classifier_checkpoint,
                                        params=dict(task.classifier_params))
        if int(classifier.sample_rate) != int(self.cfg.data.sample_rate):
            raise ConfigError(f"the classifier expects {classifier.sample_rate} Hz audio but data.sample_rate="
                              f"{self.cfg.data.sample_rate}")
        return classifier

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        self.classes = list(metadata["classes"])
        self.classifier = self._classifier(len(self.classes))
        self.classifier.requires_grad_(False)
        self.classifier.eval()
        self._build_autoencoder()

    def frozen_modules(self) -> dict[str, str]:
        """The classifier, when it comes from files (an export, or a zoo network with `task.classifier_checkpoint`):
        checkpoints then record its source and sha256 instead of its weights (about 345 MB for PaSST). A zoo
        classifier at random initialisation, or whose file held a head of another class count (that head starts
        fresh), has no such source, so its weights stay in the checkpoints."""
        task = self.cfg.task
        if (Path(str(task.classifier)) / "manifest.json").is_file():
            return {"classifier": f"export {task.classifier}"}
        report = getattr(getattr(self.classifier, "network", None), "load_report", None)
        if task.classifier_checkpoint and report is not None and not report.skipped_head:
            return {"classifier": f"zoo {task.classifier}, weights {task.classifier_checkpoint}"}
        return {}  # random weights, or a head of another class count at its fresh initialisation: saved

    def compiled_modules(self) -> list[nn.Module]:
        return [self.autoencoder, self.classifier]  # both run through __call__ in `step`

    def train(self, mode: bool = True) -> "AEFinetuneTask":
        """Train the autoencoder; the classifier stays in eval mode whatever the mode."""
        super().train(mode)
        if self.frozen_classifier is not None:
            self.classifier.eval()
        return self

    def metric_names(self) -> list[str]:
        return ["loss", "examples", "accuracy_original", "accuracy_reconstruction", "accuracy_change", "ce_original",
                "ce_reconstruction", "snr_db", "mrstft_distance"]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        audio, target = batch["audio"], batch["target"]
        reconstruction = self.autoencoder(audio)
        logits = self.classifier(reconstruction).float()  # the loss in float32 under mixed precision
        loss = F.cross_entropy(logits, target)
        logs = {"classifier_loss": loss.detach(), "accuracy": (logits.detach().argmax(-1) == target).float().mean()}
        weight = float(self.cfg.task.reconstruction_weight)
        if weight:
            mse = F.mse_loss(reconstruction.float(), audio.float())
            loss = loss + weight * mse
            logs["reconstruction_mse"] = mse.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        reconstruction = self.autoencoder(audio)
        return {"logits_original": self.classifier(audio).float(), "logits_reconstruction": self.classifier(reconstruction).float(),
                "target": batch["target"], **self._reconstruction_outputs(audio, reconstruction)}

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
            **self._reconstruction_metrics(outputs),
        }
        metrics["accuracy_change"] = metrics["accuracy_reconstruction"] - metrics["accuracy_original"]
        n = len(self.classes)
        before = M.per_class_accuracy(M.confusion_matrix(original.argmax(-1), target, n))
        after = M.per_class_accuracy(M.confusion_matrix(recon.argmax(-1), target, n))
        changes = Table(["class", "accuracy original", "accuracy reconstruction", "change"],
                        [[c, float(b), float(a), float(a - b)] for c, b, a in zip(self.classes, before, after) if b == b])
        changes.rows.sort(key=lambda row: row[3])
        figures, tables = self._listening_results(dataset)
        return EvalResult(metrics, figures=figures, tables={"per_class_change": changes, **tables})


@register_task
class ReconstructionTask(AutoencoderTask):
    """The autoencoder trained to reconstruct its input (MSE): the `esc50` start of `ae_finetune`."""

    name = "reconstruction"
    Config = ReconstructionConfig

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        self.classes = list(metadata["classes"])
        self._build_autoencoder()

    def metric_names(self) -> list[str]:
        return ["loss", "examples", "snr_db", "mrstft_distance"]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """MSE between waveform and reconstruction, plus `task.spectral_weight` x the multi-resolution STFT
        distance (spectral convergence + log-magnitude L1) when that weight is not 0."""
        audio = batch["audio"]
        reconstruction = self.autoencoder(audio)
        loss = mse = F.mse_loss(reconstruction.float(), audio.float())  # float32 under mixed precision
        logs = {"mse": mse.detach()}
        weight = float(self.cfg.task.spectral_weight)
        if weight:
            spectral = self.stft_distance(reconstruction, audio).mean()
            loss = loss + weight * spectral
            logs["mrstft_distance"] = spectral.detach()
        logs["loss"] = loss.detach()
        return loss, logs

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        audio = batch["audio"]
        reconstruction = self.autoencoder(audio)
        mse = (reconstruction - audio).pow(2).reshape(len(audio), -1).mean(1)
        return {"mse": mse, **self._reconstruction_outputs(audio, reconstruction)}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        metrics = {"loss": float(outputs["mse"].mean()), "examples": float(len(outputs["mse"])),
                   **self._reconstruction_metrics(outputs)}
        figures, tables = self._listening_results(dataset)
        return EvalResult(metrics, figures=figures, tables=tables)
