"""The shipped audio-concept vocabulary covers ESC-50, UrbanSound8K and the built-in set's descriptions."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from audiointerp.datasets import synth
from audiointerp.datasets.vocabulary import audio_concepts

ESC50 = ["dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "rain", "sea waves",
         "crackling fire", "crickets", "chirping birds", "water drops", "wind", "pouring water", "toilet flush",
         "thunderstorm", "crying baby", "sneezing", "clapping", "breathing", "coughing", "footsteps", "laughing",
         "brushing teeth", "snoring", "drinking sipping", "door wood knock", "mouse click", "keyboard typing",
         "door wood creaks", "can opening", "washing machine", "vacuum cleaner", "clock alarm", "clock tick",
         "glass breaking", "helicopter", "chainsaw", "siren", "car horn", "engine", "train", "church bells",
         "airplane", "fireworks", "hand saw"]
URBANSOUND8K = ["air conditioner", "car horn", "children playing", "dog bark", "drilling", "engine idling", "gun shot",
                "jackhammer", "siren", "street music"]
FUNCTION_WORDS = {"a", "an", "the", "on", "with", "over", "through", "around", "into", "up", "apart", "being"}


def test_every_class_name_is_a_concept_and_the_list_is_a_few_hundred_long() -> None:
    concepts = audio_concepts()
    assert 300 <= len(concepts) <= 1000 and len(set(concepts)) == len(concepts)
    missing = [name for name in ESC50 + URBANSOUND8K if name not in concepts]
    assert not missing
    assert set(synth.MATERIALS) <= set(concepts) and set(synth.ACTIONS) <= set(concepts)


def test_every_content_word_of_the_built_in_descriptions_is_covered() -> None:
    words = {word for concept in audio_concepts() for word in concept.split()}
    rng = np.random.default_rng(0)
    seen = {word for material in synth.MATERIALS for action in synth.ACTIONS for _ in range(200)
            for word in re.findall(r"[a-z]+", synth.describe(material, action, rng))}
    assert not sorted(seen - FUNCTION_WORDS - words)


def test_a_vocabulary_of_ones_own(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# mine\nRain\n\nrain\nwet gravel\n")
    assert audio_concepts(path) == ["rain", "wet gravel"]
    with pytest.raises(FileNotFoundError, match="not found"):
        audio_concepts(tmp_path / "none.txt")
