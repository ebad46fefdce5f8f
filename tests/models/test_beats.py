"""BEATs written here: the official key layout and shapes, checkpoint loading, the front end, position buckets.

Parity with microsoft/unilm's beats/ code (same weights, 3 s of noise, all 12 layers and the fine-tuned head) was
checked outside the project, since that code is not packaged: see the issue notes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audiointerp.errors import CheckpointError
from audiointerp.models import build, build_frontend, build_pipeline
from audiointerp.models.beats import relative_buckets
from tests.models.test_taps import BEATS_TINY

KEYS = json.loads((Path(__file__).parent / "data" / "beats_keys.json").read_text())  # from the official model


def official_checkpoint(path: Path, finetuned: bool) -> Path:
    """A file in the released format: {"cfg": plain dict, "model": state dict} (random weights, official keys)."""
    torch.manual_seed(1)
    state = build("beats", num_classes=527 if finetuned else None).state_dict()
    torch.save({"cfg": {"input_patch_size": 16, "deep_norm": True, "finetuned_model": finetuned}, "model": state}, path)
    return path


def test_state_dict_has_the_official_keys_and_shapes() -> None:
    pretrained = {k: list(v.shape) for k, v in build("beats").state_dict().items()}
    assert pretrained == KEYS["pretrained"] and len(pretrained) == 250
    finetuned = {k: list(v.shape) for k, v in build("beats", num_classes=527).state_dict().items()}
    assert finetuned == {**KEYS["pretrained"], **KEYS["finetuned_extra"]}
    net = build("beats")
    shared = {id(layer.self_attn.relative_attention_bias) for layer in net.encoder.layers}
    assert len(shared) == 1  # one position-bias table for all layers, listed under each
    assert net.layer_names() == ["patches", *(f"layer{i}" for i in range(1, 13)), "features"]


def test_official_checkpoints_load_from_a_local_file(tmp_path: Path) -> None:
    fine = official_checkpoint(tmp_path / "BEATs_iter3_plus_AS2M_finetuned.pt", finetuned=True)
    net = build("beats", num_classes=527, checkpoint=fine)  # torch.load(weights_only=True): no allow-list needed
    expected = torch.load(fine, weights_only=True)["model"]
    torch.testing.assert_close(net.state_dict()["predictor.weight"], expected["predictor.weight"])
    pre = official_checkpoint(tmp_path / "BEATs_iter3_plus_AS2M.pt", finetuned=False)
    with pytest.warns(UserWarning, match="head not loaded"):
        tuned = build("beats", num_classes=10, checkpoint=pre)  # the encoder, with a fresh 10-class head
    torch.testing.assert_close(tuned.state_dict()["encoder.layers.3.fc1.weight"], expected["encoder.layers.3.fc1.weight"])
    with pytest.raises(CheckpointError, match="does not exist.*unilm"):
        build("beats", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        build("beats", num_classes=527, checkpoint=fine, layers=6)


def test_front_end_is_kaldi_fbank_scaled_and_normalised() -> None:
    import torchaudio.compliance.kaldi as kaldi

    wave = torch.randn(2, 16000) * 0.1
    fbank = build_frontend("beats")(wave)
    assert fbank.shape == (2, 1, 98, 128)  # 1 + (16000 - 400) // 160 frames
    direct = kaldi.fbank(wave[:1] * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
    torch.testing.assert_close(fbank[0, 0], (direct - 15.41663) / (2 * 6.55582))


def test_relative_position_buckets() -> None:
    buckets = relative_buckets(1000, 320, 800, torch.device("cpu"))
    assert buckets[0, 0] == 0 and buckets[5, 0] == 5 and buckets[0, 5] == 160 + 5  # keys after the query: upper half
    assert buckets[0, 79] == 160 + 79 and buckets[0, 80] == 160 + 80  # exact up to 80, then logarithmic from 80
    assert buckets[0, 999] == 319 and buckets[999, 0] == 159  # beyond max_distance: the last bucket of each half
    assert bool((buckets[0, 1:].diff() >= 0).all())


def test_pipeline_runs_on_waveforms_with_a_small_configuration() -> None:
    torch.manual_seed(0)
    pipeline = build_pipeline("beats", num_classes=4, params=BEATS_TINY).eval()
    with torch.no_grad():
        logits = pipeline(torch.randn(2, 16000) * 0.1)
        patches = pipeline.network.forward_until(pipeline.frontend(torch.randn(1, 16000) * 0.1), "layer2")
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    assert patches.shape == (1, (98 // 16) * 8, 48)  # time-major patches of 16 x 16 over 128 bands
