"""CLAP through transformers: a tiny random ClapConfig built offline, taps equal to ClapModel's own audio
features, text embeddings, loading a local pretrained folder, and the missing-folder error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from audiointerp.errors import CheckpointError  # noqa: E402
from audiointerp.models import build, build_frontend  # noqa: E402

TINY = {"audio_config": {"depths": [1, 1], "num_attention_heads": [1, 2], "patch_embeds_hidden_size": 8,
                         "hidden_size": 16, "projection_dim": 8, "window_size": 8},
        "text_config": {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "intermediate_size": 32, "projection_dim": 8, "max_position_embeddings": 40},
        "projection_dim": 8}


def tokenizer(phrases: list[str], padding: bool = True, return_tensors: str = "pt") -> dict[str, torch.Tensor]:
    """A character tokenizer standing in for CLAP's RoBERTa one (ids 0 = <s>, 1 = <pad>, 2 = </s>)."""
    rows = [[0, *(3 + ord(c) % 40 for c in phrase), 2] for phrase in phrases]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [1] * (width - len(r)) for r in rows])
    return {"input_ids": ids, "attention_mask": (ids != 1).long()}


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    return build_frontend("clap")(torch.randn(2, 48000) * 0.1)


def test_stages_reproduce_clap_audio_embeddings_and_tap_identities(features: torch.Tensor) -> None:
    assert features.shape == (2, 1, 1001, 64)  # 10 s of 10 ms frames: a 1 s clip is repeated to fill them
    torch.manual_seed(0)
    net = build("clap", num_classes=3, config=TINY).eval()
    assert net.layer_names() == ["patches", "stage1", "stage2", "embedding", "logits"]
    with torch.no_grad():
        reference = net.clap.get_audio_features(input_features=features)
        reference = getattr(reference, "pooler_output", reference)  # transformers 5 returns the model output
        torch.testing.assert_close(net.forward_until(features, "embedding"), reference)
        full = net(features)
        for layer in net.layer_names():
            torch.testing.assert_close(net.forward_from(net.forward_until(features, layer), layer), full, msg=layer)
    assert full.shape == (2, 3)


def test_text_embeddings_equal_clap_text_features() -> None:
    torch.manual_seed(1)
    net = build("clap", config=TINY).eval()
    phrases = ["glass", "knocking on wood", "metal"]
    embeddings = net.text_embeddings(phrases, tokenizer, batch_size=2)
    tokens = tokenizer(phrases)
    with torch.no_grad():
        reference = net.clap.get_text_features(**tokens)
    reference = torch.nn.functional.normalize(getattr(reference, "pooler_output", reference), dim=-1)
    torch.testing.assert_close(torch.from_numpy(embeddings), reference, rtol=1e-4, atol=1e-5)


def test_a_local_pretrained_folder_loads_and_a_missing_one_says_where_to_get_it(tmp_path: Path,
                                                                               features: torch.Tensor) -> None:
    torch.manual_seed(2)
    original = build("clap", config=TINY).eval()
    original.clap.save_pretrained(tmp_path / "clap-tiny")
    loaded = build("clap", pretrained=str(tmp_path / "clap-tiny")).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(features), original(features))
    with pytest.raises(CheckpointError, match="does not exist.*laion/clap-htsat-unfused"):
        build("clap", pretrained=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        build("clap", pretrained=str(tmp_path / "empty"))
