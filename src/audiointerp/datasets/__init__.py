"""Data layer: audio decoding and caching, manifests, official dataset readers and the manifest dataset."""

from __future__ import annotations

from audiointerp.datasets.audio import SilentAudioWarning, check_audio_file, fit_length, load_audio
from audiointerp.datasets.cache import AudioCache
from audiointerp.datasets.manifest import (
    FORMATS,
    Manifest,
    ManifestDataset,
    ManifestRow,
    SkippedAudioWarning,
    read_manifest,
)
from audiointerp.datasets.readers import load_manifest, read_esc50, read_fsd50k, read_msos, read_urbansound8k

__all__ = [
    "FORMATS",
    "AudioCache",
    "Manifest",
    "ManifestDataset",
    "ManifestRow",
    "SilentAudioWarning",
    "SkippedAudioWarning",
    "check_audio_file",
    "fit_length",
    "load_audio",
    "load_manifest",
    "read_esc50",
    "read_fsd50k",
    "read_manifest",
    "read_msos",
    "read_urbansound8k",
]
