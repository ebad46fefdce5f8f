"""Tokenization, lemmatization, the vocabulary and the words of manifest rows (audiointerp.datasets.vocabulary)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from audiointerp.datasets import vocabulary as vocab_mod
from audiointerp.datasets.manifest import Manifest, ManifestRow
from audiointerp.datasets.vocabulary import (
    STOP_WORDS,
    RuleLemmatizer,
    Vocabulary,
    get_lemmatizer,
    manifest_words,
    row_words,
    tokenize,
)
from audiointerp.errors import DatasetError

# --- tokenize ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("crackling_fire", ["crackling", "fire"]),
        ("Accelerating_and_revving_and_vroom", ["accelerating", "revving", "vroom"]),
        ("dog_bark", ["dog", "bark"]),
        ("Male_speech_and_man_speaking", ["male", "speech", "man", "speaking"]),
        ("dogBarkLoud", ["dog", "bark", "loud"]),
        ("MSOSEvent", ["msos", "event"]),
        ("A dog's bark, recorded in 2019 with an MP3 player!", ["dog", "bark", "recorded", "player"]),
        ("The baby was crying; it's on fire at the top", ["baby", "crying", "fire", "top"]),
        ("4x4 engine, 2nd gear -- idling...", ["engine", "gear", "idling"]),
        ("x y z ox", ["ox"]),
        ("café noise — “quiet” room", ["café", "noise", "quiet", "room"]),
        ("", []),
    ],
)
def test_tokenize_examples(text: str, words: list[str]) -> None:
    assert tokenize(text) == words


def test_tokenize_stop_words_and_options() -> None:
    # gensim's list minus the sound words kept on purpose, plus contraction pieces
    assert {"the", "and", "of", "was", "isn", "ve"} <= STOP_WORDS
    assert not {"fire", "cry", "call", "computer", "empty"} & STOP_WORDS
    assert tokenize("bird call and baby cry") == ["bird", "call", "baby", "cry"]
    assert tokenize("dog bark dog", min_length=4) == ["bark"]
    assert tokenize("the dog barks", stop_words={"dog"}) == ["the", "barks"]
    assert tokenize("dogs dogs barking") == ["dogs", "dogs", "barking"]  # duplicates and order kept
    with pytest.raises(TypeError):
        tokenize(["a", "list"])  # type: ignore[arg-type]


# --- lemmatizer -------------------------------------------------------------------------------

LEMMAS = {
    # plurals
    "dogs": "dog", "glasses": "glass", "babies": "baby", "flies": "fly", "children": "child", "mice": "mouse",
    "leaves": "leaf", "waves": "wave", "echoes": "echo", "shoes": "shoe", "boxes": "box", "watches": "watch",
    "footsteps": "footstep", "horses": "horse", "buses": "bus", "sheep": "sheep",
    # invariant look-alikes
    "bus": "bus", "glass": "glass", "chorus": "chorus", "tennis": "tennis", "news": "news", "series": "series",
    "ring": "ring", "thing": "thing", "string": "string", "ceiling": "ceiling", "bed": "bed", "speed": "speed",
    # -ing
    "barking": "bark", "crackling": "crackle", "tapping": "tap", "sneezing": "sneeze", "ringing": "ring",
    "revving": "rev", "idling": "idle", "typing": "type", "whistling": "whistle", "howling": "howl",
    "rolling": "roll", "buzzing": "buzz", "hissing": "hiss", "pouring": "pour", "crying": "cry", "opening": "open",
    "dripping": "drip", "snoring": "snore", "breathing": "breathe", "accelerating": "accelerate", "charging": "charge",
    "dying": "die",
    # -ed
    "closed": "close", "cried": "cry", "muffled": "muffle", "slammed": "slam", "knocked": "knock", "rained": "rain",
    "distorted": "distort", "muted": "mute", "naked": "naked",
    # verbs in -s
    "barks": "bark", "crackles": "crackle", "buzzes": "buzz", "sneezes": "sneeze",
}  # fmt: skip


def test_rule_lemmatizer_examples() -> None:
    lem = RuleLemmatizer()
    wrong = {w: lem(w) for w, want in LEMMAS.items() if lem(w) != want}
    assert not wrong, wrong
    assert lem.name == "rules"
    assert lem("Dogs") == "dog"


def test_tokenize_lemmatize_with_rules() -> None:
    assert tokenize("Crackling_fire and barking dogs", lemmatize=True, lemmatizer="rules") == ["crackle", "fire", "bark", "dog"]
    # a lemma that is a stop word is dropped ("goes" → "go")
    assert tokenize("it goes", lemmatize=True, lemmatizer="rules") == []


def test_get_lemmatizer_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown lemmatizer"):
        get_lemmatizer("porter")
    # without nltk: auto falls back to the rules, and an explicit 'wordnet' names what to install
    monkeypatch.setitem(sys.modules, "nltk", None)
    vocab_mod._wordnet.cache_clear()
    try:
        assert get_lemmatizer("auto").name == "rules"
        with pytest.raises(DatasetError, match="nltk"):
            get_lemmatizer("wordnet")
    finally:
        vocab_mod._wordnet.cache_clear()


def test_wordnet_lemmatizer_used_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """With nltk and its data importable, 'auto' uses WordNet: verbs first for -ing/-ed words, nouns otherwise."""
    calls = []

    class FakeWordNet:
        table = {("barking", "v"): "bark", ("dogs", "n"): "dog", ("ceiling", "n"): "ceiling"}

        def lemmatize(self, word: str, pos: str = "n") -> str:
            calls.append((word, pos))
            return self.table.get((word, pos), word)

    nltk = types.ModuleType("nltk")
    nltk.__version__ = "9.9"  # type: ignore[attr-defined]
    stem = types.ModuleType("nltk.stem")
    stem.WordNetLemmatizer = FakeWordNet  # type: ignore[attr-defined]
    nltk.stem = stem  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nltk", nltk)
    monkeypatch.setitem(sys.modules, "nltk.stem", stem)
    vocab_mod._wordnet.cache_clear()
    try:
        lem = get_lemmatizer("auto")
        assert lem.name == "wordnet (nltk 9.9)"
        assert [lem(w) for w in ("barking", "dogs", "ceiling")] == ["bark", "dog", "ceiling"]
        assert ("ceiling", "v") in calls and ("ceiling", "n") in calls
        vocab = Vocabulary.build(["barking dogs"], lemmatize=True)
        assert vocab.lemmatizer == "wordnet (nltk 9.9)" and vocab.words == ["bark", "dog"]
    finally:
        vocab_mod._wordnet.cache_clear()


# --- Vocabulary -------------------------------------------------------------------------------

TEXTS = [
    "a dog barking in the street",
    "dog barks, dog barks",  # 'dog' counts once per text
    "crackling fire",
    "fire alarm",
    "street music",
    "fire truck siren",
]


def test_build_counts_sorting_and_min_count() -> None:
    vocab = Vocabulary.build(TEXTS)
    assert vocab.words[:3] == ["fire", "dog", "street"]  # count 3, then 2 and 2 (alphabetical ties)
    assert vocab.counts["fire"] == 3 and vocab.counts["dog"] == 2 and vocab.counts["alarm"] == 1
    rest = vocab.words[3:]
    assert rest == sorted(rest)  # all count 1, alphabetical
    assert vocab.words == ["fire", "dog", "street", "alarm", "barking", "barks", "crackling", "music", "siren", "truck"]

    small = Vocabulary.build(TEXTS, min_count=2)
    assert small.words == ["fire", "dog", "street"] and small.min_count == 2
    assert Vocabulary.build(TEXTS, max_words=2).words == ["fire", "dog"]
    with pytest.raises(DatasetError, match="min_count=9"):
        Vocabulary.build(TEXTS, min_count=9)
    with pytest.raises(ValueError):
        Vocabulary.build(TEXTS, min_count=0)
    with pytest.raises(TypeError):
        Vocabulary.build("one string")


def test_build_from_word_lists_and_lemmatized() -> None:
    vocab = Vocabulary.build([["dog", "bark"], ["dog"], ["bark", "bark"]])
    assert vocab.words == ["bark", "dog"] and vocab.counts == {"bark": 2, "dog": 2}
    lem = Vocabulary.build(["barking dogs", "a dog barks"], lemmatize=True, lemmatizer="rules")
    assert lem.words == ["bark", "dog"] and lem.counts == {"bark": 2, "dog": 2}
    assert lem.lemmatizer == "rules" and lem.metadata()["lemmatizer"] == "rules"
    assert lem.encode("Dogs were barking") == [lem.index("dog"), lem.index("bark")]
    assert Vocabulary.build(TEXTS).lemmatizer == "none"


def test_lookup_and_encode() -> None:
    vocab = Vocabulary.build(TEXTS)
    assert "fire" in vocab and "zebra" not in vocab
    assert vocab.index("dog") == 1 and vocab.words[1] == "dog"
    with pytest.raises(KeyError, match="did you mean 'fire'"):
        vocab.index("fier")
    # only in-vocabulary words, order kept, duplicates removed
    assert vocab.encode("Street dog, dog and a zebra") == [vocab.index("street"), vocab.index("dog")]
    assert vocab.encode(["siren", "zebra", "siren", "fire"]) == [vocab.index("siren"), vocab.index("fire")]
    assert vocab.decode(vocab.encode("fire alarm")) == ["fire", "alarm"]
    hot = vocab.multi_hot("fire alarm fire")
    assert hot.dtype == np.float32 and hot.sum() == 2 and hot[vocab.index("alarm")] == 1


def test_json_round_trip(tmp_path: Path) -> None:
    vocab = Vocabulary.build(TEXTS + ["barking dogs"], min_count=1, lemmatize=True, lemmatizer="rules")
    path = vocab.to_json(tmp_path / "sub" / "vocabulary.json")
    back = Vocabulary.from_json(path)
    assert back == vocab
    assert back.words == vocab.words and back.counts == vocab.counts
    assert (back.lemmatize, back.lemmatizer, back.min_count) == (True, "rules", 1)
    assert back.encode("barking") == vocab.encode("barking")
    assert not list(tmp_path.glob("sub/*.tmp*"))

    with pytest.raises(DatasetError, match="not found"):
        Vocabulary.from_json(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"words": ["a"]}))
    with pytest.raises(DatasetError, match="not an audiointerp vocabulary"):
        Vocabulary.from_json(tmp_path / "bad.json")
    with pytest.raises(DatasetError, match="duplicates"):
        Vocabulary(["a", "b", "a"], {})


def test_vocabulary_built_with_wordnet_needs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vocab = Vocabulary(["bark"], {"bark": 1}, lemmatize=True, lemmatizer="wordnet (nltk 3.9)")
    monkeypatch.setitem(sys.modules, "nltk", None)
    vocab_mod._wordnet.cache_clear()
    try:
        assert vocab.encode(["bark"]) == [0]  # word lists need no lemmatizer
        with pytest.raises(DatasetError, match="wordnet"):
            vocab.encode("barking")
    finally:
        vocab_mod._wordnet.cache_clear()


# --- row_words --------------------------------------------------------------------------------


def _manifest() -> Manifest:
    rows = [
        ManifestRow("a.wav", ("crackling_fire",), "crackling fire", "1"),  # ESC-50 style
        ManifestRow("b.wav", ("Accelerating_and_revving_and_vroom", "Vehicle"), "", "1"),  # FSD50K, no description
        ManifestRow("c.wav", ("Nature",), "Birds singing in the morning", "2", {"event": "Birdsong"}),  # MSOS
        ManifestRow("d.wav", ("dog_bark",), "the and of", "2"),  # description without content words
        ManifestRow("e.wav", ("123",), "", "2"),  # nothing usable
    ]
    return Manifest(Path("/data"), rows, ("event",))


def test_row_words_sources() -> None:
    m = _manifest()
    assert row_words(m, 0) == ["crackling", "fire"]
    assert row_words(m, 0, "label") == ["crackling", "fire"]
    # empty description → the labels' words, every label of a multi-label row
    assert row_words(m, 1) == ["accelerating", "revving", "vroom", "vehicle"]
    assert row_words(m, m.rows[1], "label") == ["accelerating", "revving", "vroom", "vehicle"]
    assert row_words(m, 2) == ["birds", "singing", "morning"]
    assert row_words(m, 2, "label") == ["nature"]
    assert row_words(m, 2, "event") == ["birdsong"]
    assert row_words(m, 2, lemmatize=True, lemmatizer="rules") == ["bird", "sing", "morning"]
    assert row_words(m, 3) == ["dog", "bark"]  # only stop words → label
    assert row_words(m, 4) == []
    with pytest.raises(DatasetError, match="unknown column"):
        row_words(m, 0, "colour")
    assert manifest_words(m, "label")[:3] == [["crackling", "fire"], ["accelerating", "revving", "vroom", "vehicle"], ["nature"]]
