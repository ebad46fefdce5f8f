"""CLAP (LAION; Wu et al. 2023) through `transformers`' `ClapModel` (the optional extra `audiointerp[clap]`).

`build('clap', pretrained=FOLDER)` loads a local Hugging Face folder (config.json, the weights, and the
processor's files, e.g. a copy of laion/clap-htsat-unfused) with `local_files_only=True`; `build('clap',
config={...})` builds a random model from a `ClapConfig` (tests use a tiny one). The network's stages run the
HTSAT audio encoder's own modules: `patches` (batch norm, the mel-to-image reshape and the patch embedding),
`stage1`..`stageN` (the Swin stages), `embedding` (final norm, the grouped average pool, the audio projection,
L2-normalised: CLAP's audio embedding), and `logits` when `num_classes` adds a linear head.

Front end (`clap_features`): `ClapFeatureExtractor` (48 kHz, 64 mel bands, 10 s; shorter clips are repeated to
fill them, longer ones cut at random: the unfused models' `rand_trunc`), giving `input_features` [B, 1, 1001, 64]. `text_embeddings` embeds phrases
with the text tower (for concept vocabularies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.errors import CheckpointError, ConfigError
from audiointerp.models.registry import register_frontend, register_model
from audiointerp.models.taps import Stage, TappedNetwork

WEIGHTS_HINT = ("a local copy of a Hugging Face CLAP folder (e.g. laion/clap-htsat-unfused: config.json, "
                "model.safetensors and the processor's files), downloaded where the hub is reachable")


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ConfigError("CLAP needs the optional dependency transformers: pip install 'audiointerp[clap]'") from err
    return transformers


def load_pretrained(folder: str | Path, what: str = "ClapModel") -> Any:
    """A transformers CLAP object (`ClapModel`, `ClapProcessor`, `ClapFeatureExtractor`) from a local folder, never
    the hub."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"CLAP folder {str(folder)!r} does not exist. Get {WEIGHTS_HINT}, and pass its path.")
    if what == "ClapModel" and not (folder / "config.json").is_file():
        raise CheckpointError(f"CLAP folder {str(folder)!r} has no config.json. Get {WEIGHTS_HINT}, and pass its path.")
    return getattr(_transformers(), what).from_pretrained(str(folder), local_files_only=True)


class CLAPAudio(TappedNetwork):
    """CLAP's audio tower with taps: input_features [B, 1, T, 64] -> embedding [B, D] (or logits)."""

    head_prefix = "classifier."

    def __init__(self, model: nn.Module, num_classes: Optional[int] = None) -> None:
        super().__init__()
        self.clap = model
        dim = model.config.projection_dim
        self.classifier = nn.Linear(dim, num_classes) if num_classes else None

    @property
    def encoder(self) -> nn.Module:
        return self.clap.audio_model.audio_encoder

    def patches(self, features: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        if encoder.enable_fusion:
            raise ConfigError("fused CLAP models (enable_fusion=True) are not tapped here; use an unfused one")
        normalised = encoder.batch_norm(features.transpose(1, 3)).transpose(1, 3)
        return encoder.patch_embed(encoder.reshape_mel2img(normalised), None)

    def _stage(self, index: int):
        def run(hidden: torch.Tensor) -> torch.Tensor:
            return self.encoder.layers[index](hidden, self.encoder.input_resolutions[index], False, False)[0]
        return run

    def embedding(self, hidden: torch.Tensor) -> torch.Tensor:
        """The encoder's final norm and grouped pool (its pooler output), projected and L2-normalised."""
        encoder = self.encoder
        x = encoder.norm(hidden)
        batch, _, channels = x.shape
        frames = encoder.spec_size  # the mel image is always spec_size high after reshape_mel2img
        downsampled = frames // (2 ** (len(encoder.depths) - 1))
        freq, time = downsampled // encoder.patch_stride[0], downsampled // encoder.patch_stride[1]
        x = x.permute(0, 2, 1).reshape(batch, channels, freq, time)
        group = freq // encoder.freq_ratio
        x = x.reshape(batch, channels, freq // group, group, time).permute(0, 1, 3, 2, 4).reshape(batch, channels, group, -1)
        pooled = encoder.avgpool(torch.flatten(x, 2)).flatten(1)
        return F.normalize(self.clap.audio_projection(pooled), dim=-1)

    def stages(self) -> list[Stage]:
        layers: list[Stage] = [("patches", self.patches)]
        layers += [(f"stage{i + 1}", self._stage(i)) for i in range(len(self.encoder.layers))]
        layers.append(("embedding", self.embedding))
        if self.classifier is not None:
            layers.append(("logits", self.classifier))
        return layers

    @torch.no_grad()
    def text_embeddings(self, phrases: Sequence[str], tokenizer: Any, batch_size: int = 64) -> np.ndarray:
        """L2-normalised text embeddings [len(phrases), D] through the text tower and its projection."""
        rows = []
        for start in range(0, len(phrases), batch_size):
            tokens = tokenizer(list(phrases[start:start + batch_size]), padding=True, return_tensors="pt")
            out = self.clap.text_model(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"))
            rows.append(F.normalize(self.clap.text_projection(out.pooler_output), dim=-1))
        return torch.cat(rows).numpy()


@register_frontend("clap_features")
class CLAPFeatures(nn.Module):
    """transformers' `ClapFeatureExtractor` as a front end: waveforms at 48 kHz -> input_features [B, 1, T, 64]."""

    def __init__(self, sample_rate: int = 48000, pretrained: Optional[str] = None, padding: str = "repeatpad",
                 truncation: str = "rand_trunc", max_length_s: int = 10) -> None:
        super().__init__()
        transformers = _transformers()
        self.sample_rate, self.padding, self.truncation = sample_rate, padding, truncation
        self.extractor = (load_pretrained(pretrained, "ClapFeatureExtractor") if pretrained
                          else transformers.ClapFeatureExtractor(sampling_rate=sample_rate, max_length_s=max_length_s))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() == 3:
            waveform = waveform.mean(1)
        features = self.extractor([w.detach().cpu().numpy() for w in waveform], sampling_rate=self.sample_rate,
                                  padding=self.padding, truncation=self.truncation, return_tensors="pt")["input_features"]
        return features.to(waveform.device, waveform.dtype)


@register_model("clap", frontend="clap_features", weights_hint=WEIGHTS_HINT)
def build_clap(num_classes: Optional[int] = None, pretrained: Optional[str] = None,
               config: Optional[dict[str, Any]] = None) -> CLAPAudio:
    """CLAP's audio tower from a local pretrained folder, or random from a `ClapConfig` dict (text_config and
    audio_config sub-dicts); `num_classes` adds a linear head on the embedding."""
    transformers = _transformers()
    if pretrained:
        model = load_pretrained(pretrained)
    else:
        model = transformers.ClapModel(transformers.ClapConfig(**(config or {})))
    return CLAPAudio(model.eval(), num_classes)
