"""`classifier`: train any zoo network on a manifest dataset (cross-entropy or multi-label BCE)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from audiointerp.errors import ConfigError
from audiointerp.evaluation import metrics as M
from audiointerp.evaluation.plots import confusion_figure
from audiointerp.evaluation.results import AudioClip, EvalResult, Table
from audiointerp.models import build_pipeline
from audiointerp.train.data import manifest_splits
from audiointerp.train.tasks.base import Task, TaskConfig, TaskData, register_task


@dataclass
class ClassifierConfig(TaskConfig):
    name: str = "classifier"
    label_smoothing: float = 0.0  # cross-entropy label smoothing (single-label only)
    mixup_alpha: float = 0.0  # mixup of front-end features, lambda ~ Beta(a, a) folded to >= 0.5 (0: off)
    roll_samples: int = 0  # roll each training waveform by a random shift in [-N, N] samples (0: off)
    gain_db: int = 0  # random gain of each training waveform, an integer in [-G, G) dB (0: off)
    noise_prob: float = 0.0  # share of training clips that get additive white Gaussian noise (0: off)
    noise_snr_db: list[float] = field(default_factory=lambda: [10.0, 40.0])  # [low, high]: SNR uniform in dB
    noise_exponent: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [low, high]: noise power ~ f^e, e uniform (0 white, -1 pink, -2 brown)


def add_noise(audio: torch.Tensor, prob: float, snr_db: Sequence[float], exponent: Sequence[float] = (0.0, 0.0),
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`audio` [B, ..., T] with Gaussian noise added to each clip with probability `prob`, at an SNR drawn uniformly in
    dB from `snr_db` = (low, high) relative to that clip's own RMS over all its samples (a silent clip stays
    silent). The noise's power spectrum goes as f^e with e drawn uniformly from `exponent` = (low, high) per clip
    (0: white, -1: pink, -2: brown; no DC). Robustness to the hiss and smearing of imperfect reconstructions: a
    classifier trained on clean clips alone reads the noise floor of quiet tails, which any autoencoder changes."""
    if not 0.0 <= prob <= 1.0:
        raise ConfigError(f"task.noise_prob must be in [0, 1], got {prob}")
    for name, pair in (("noise_snr_db", snr_db), ("noise_exponent", exponent)):
        if len(pair) != 2 or pair[0] > pair[1]:
            raise ConfigError(f"task.{name} must be [low, high] with low <= high, got {list(pair)}")
    size, length, shape = audio.shape[0], audio.shape[-1], (-1, *([1] * (audio.dim() - 1)))
    draw = torch.rand((size, 3), generator=generator)
    snr = snr_db[0] + (snr_db[1] - snr_db[0]) * draw[:, 1]
    noise = torch.randn(audio.shape, generator=generator)
    power = exponent[0] + (exponent[1] - exponent[0]) * draw[:, 2]
    frequency = torch.fft.rfftfreq(length).clamp_min(1.0 / length)  # cycles per sample; DC set to 0 below
    spectrum = torch.fft.rfft(noise, dim=-1) * frequency ** (power.reshape(shape) / 2.0)  # amplitude ~ f^(e/2)
    spectrum[..., 0] = 0.0
    noise = torch.fft.irfft(spectrum, n=length, dim=-1)
    noise = noise / noise.pow(2).reshape(size, -1).mean(1).sqrt().clamp_min(1e-12).reshape(shape)
    rms = audio.detach().float().pow(2).reshape(size, -1).mean(1).sqrt().cpu()
    scale = torch.where(draw[:, 0] < prob, rms * 10.0 ** (-snr / 20.0), torch.zeros_like(rms))
    return audio + (noise * scale.reshape(shape)).to(audio.device, audio.dtype)


@register_task
class ClassifierTask(Task):
    """Sound classification: accuracy and mAP, a confusion matrix, and listened-to validation clips."""

    name = "classifier"
    family = "classifier"
    Config = ClassifierConfig

    def build_data(self) -> TaskData:
        cfg = self.cfg
        train, valid, classes = manifest_splits(cfg.data, seed=int(cfg.train.seed), progress=bool(cfg.train.progress))
        return TaskData(train, valid, {"classes": classes, "multi_label": bool(cfg.data.multi_label)})

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        cfg = self.cfg
        self.classes: list[str] = list(metadata["classes"])
        self.multi_label = bool(metadata.get("multi_label", False))
        if self.multi_label and cfg.task.label_smoothing:
            raise ConfigError("task.label_smoothing applies to single-label data only (data.multi_label=true)")
        self.model = build_pipeline(
            str(cfg.model.name),
            num_classes=len(self.classes),
            checkpoint=cfg.model.checkpoint,
            params=dict(cfg.model.params),
            frontend=cfg.model.frontend,
            frontend_params=dict(cfg.model.frontend_params),
        )
        if self.model.sample_rate != int(cfg.data.sample_rate):
            raise ConfigError(
                f"data.sample_rate={cfg.data.sample_rate} but the front end of model {cfg.model.name!r} expects "
                f"{self.model.sample_rate} Hz: set data.sample_rate={self.model.sample_rate}"
            )

    def metric_names(self) -> list[str]:
        single = ["accuracy", "top5_accuracy", "balanced_accuracy"] if not self.cfg.data.multi_label else []
        return ["loss", "examples", "mAP", *single]

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target, label_smoothing=float(self.cfg.task.label_smoothing))

    def augment_waveforms(self, audio: torch.Tensor) -> torch.Tensor:
        """Training-only waveform augmentations, per clip: EfficientAT's random roll and random gain, then
        additive white Gaussian noise (`noise_prob`, `noise_snr_db`; see `add_noise`)."""
        task = self.cfg.task
        if task.roll_samples:
            shifts = torch.randint(-int(task.roll_samples), int(task.roll_samples) + 1, (audio.shape[0],))
            audio = torch.stack([clip.roll(int(shift), dims=-1) for clip, shift in zip(audio, shifts)])
        if task.gain_db:
            gain = torch.randint(-int(task.gain_db), int(task.gain_db), (audio.shape[0],), device=audio.device)
            audio = audio * (10.0 ** (gain.float() / 20.0)).reshape(-1, *([1] * (audio.dim() - 1)))
        if task.noise_prob:
            audio = add_noise(audio, float(task.noise_prob), [float(v) for v in task.noise_snr_db],
                              [float(v) for v in task.noise_exponent])
        return audio

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target = batch["target"]
        features = self.model.frontend(self.augment_waveforms(batch["audio"]))
        alpha = float(self.cfg.task.mixup_alpha)
        if alpha > 0:  # mixup as EfficientAT does it: on the features, loss weighted by lambda
            size = features.shape[0]
            partner = torch.randperm(size, device=features.device)
            lam = torch.distributions.Beta(alpha, alpha).sample((size,)).to(features.device)
            lam = torch.maximum(lam, 1.0 - lam)
            shape = (-1, *([1] * (features.dim() - 1)))
            logits = self.model.forward_features(features * lam.reshape(shape) + features[partner] * (1.0 - lam.reshape(shape))).float()
            if self.multi_label:
                mixed = target.float() * lam[:, None] + target[partner].float() * (1.0 - lam[:, None])
                loss = F.binary_cross_entropy_with_logits(logits, mixed)
            else:
                smoothing = float(self.cfg.task.label_smoothing)
                loss = (F.cross_entropy(logits, target, reduction="none", label_smoothing=smoothing) * lam
                        + F.cross_entropy(logits, target[partner], reduction="none", label_smoothing=smoothing) * (1.0 - lam)).mean()
        else:
            logits = self.model.forward_features(features).float()  # losses in float32 under mixed precision
            loss = self.loss(logits, target)
        logs = {"loss": loss.detach()}
        if not self.multi_label:
            logs["accuracy"] = (logits.detach().argmax(-1) == target).float().mean()
        return loss, logs

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.model(batch["audio"]).float(), "target": batch["target"], "index": batch["index"]}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        logits, target = outputs["logits"], outputs["target"]
        n_classes = len(self.classes)
        metrics = {"loss": float(self.loss(logits, target)), "examples": float(len(target))}
        figures = {}
        if self.multi_label:
            metrics["mAP"] = M.mean_average_precision(torch.sigmoid(logits), target)
        else:
            metrics["accuracy"] = M.accuracy(logits, target)
            metrics["top5_accuracy"] = M.top_k_accuracy(logits, target, 5)
            metrics["mAP"] = M.mean_average_precision(logits.softmax(-1), M.one_hot(target, n_classes))
            matrix = M.confusion_matrix(logits.argmax(-1), target, n_classes)
            metrics["balanced_accuracy"] = float(torch.tensor(M.per_class_accuracy(matrix)).nanmean())
            figures["confusion_matrix"] = confusion_figure(matrix, self.classes)
        return EvalResult(metrics, figures, {"examples": self.example_table(outputs, dataset)})

    def example_table(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> Table:
        """The first validation clips (in dataset order) with their true and predicted classes."""
        count = int(self.cfg.tracking.audio_examples)
        order = outputs["index"].argsort()[:count]
        table = Table(["index", "audio", "true", "predicted", "confidence"])
        for row in order.tolist():
            index = int(outputs["index"][row])
            probs = torch.sigmoid(outputs["logits"][row]) if self.multi_label else outputs["logits"][row].softmax(-1)
            target = outputs["target"][row]
            true = (
                ";".join(self.classes[i] for i in target.nonzero().flatten().tolist())
                if self.multi_label
                else self.classes[int(target)]
            )
            audio = dataset[index]["audio"].numpy()
            clip = AudioClip(audio, int(self.cfg.data.sample_rate), caption=true)
            table.rows.append([index, clip, true, self.classes[int(probs.argmax())], round(float(probs.max()), 4)])
        return table

    def export_module(self) -> nn.Module:
        return self.model

    def compiled_modules(self) -> list[nn.Module]:
        """The network (training calls the front end and `forward_features`, which reach it through `__call__`)."""
        return [self.model.network]
