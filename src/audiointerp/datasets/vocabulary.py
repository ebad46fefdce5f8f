"""Words of sounds: tokenization, an optional lemmatizer, the dictionary of sound words, and the words of a row.

Every dataset's labels map to words the same way: a manifest row's description (or, with
``source="label"``, its label names) is tokenized by :func:`tokenize`. Label names such as ESC-50's
``crackling_fire`` or FSD50K's ``Accelerating_and_revving_and_vroom`` split on ``_``, punctuation and camel
case, so ``crackling_fire`` gives ``["crackling", "fire"]`` and the FSD50K label gives
``["accelerating", "revving", "vroom"]``.

Stop words are gensim's list (:data:`gensim.parsing.preprocessing.STOPWORDS`) minus the content words in it
that name sounds or their sources (:data:`KEPT_WORDS`: ``fire``, ``cry``, ``call``, ``computer``, ...), plus
the leftovers of English contractions (``isn``, ``ve``, ...). Tokens holding a digit (``2``, ``mp3``, ``4x4``)
are dropped whole, as are tokens shorter than ``min_length`` (2) characters.

Lemmatization (off by default) uses nltk's WordNet lemmatizer when nltk and its WordNet data can be imported
(nltk is not a dependency), else :class:`RuleLemmatizer`, a small rule-based English lemmatizer; the
vocabulary records which one it used (``Vocabulary.lemmatizer``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from audiointerp.datasets.manifest import Manifest, ManifestRow
from audiointerp.errors import DatasetError

__all__ = [
    "KEPT_WORDS",
    "LEMMATIZERS",
    "STOP_WORDS",  # noqa: F822 (module __getattr__)
    "Lemmatizer",
    "RuleLemmatizer",
    "Vocabulary",
    "get_lemmatizer",
    "manifest_words",
    "row_words",
    "tokenize",
    "wordnet_available",
]

#: Words of gensim's stop list that describe sounds or their sources, and so are kept as content words.
KEPT_WORDS = frozenset(
    {
        "back", "bill", "bottom", "call", "computer", "cry", "empty", "fill", "fire", "front", "full",
        "mill", "move", "side", "system", "thick", "thin", "top",
    }
)  # fmt: skip
#: Pieces that English contractions leave after splitting on the apostrophe (``isn't`` → ``isn``, ``t``).
_CONTRACTION_PIECES = frozenset(
    {"ain", "aren", "couldn", "hadn", "hasn", "haven", "isn", "ll", "mustn", "needn", "shouldn", "ve", "wasn", "weren", "won", "wouldn"}
)


@lru_cache(maxsize=1)
def default_stop_words() -> frozenset[str]:
    """The stop words :func:`tokenize` drops (also `STOP_WORDS`): gensim's list, imported on first use so that the
    tasks without words never load gensim."""
    from gensim.parsing.preprocessing import STOPWORDS

    return frozenset((set(STOPWORDS) - KEPT_WORDS) | _CONTRACTION_PIECES)


def __getattr__(name: str) -> frozenset[str]:
    """`STOP_WORDS`, computed on first use (PEP 562)."""
    if name == "STOP_WORDS":
        return default_stop_words()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
MIN_LENGTH = 2
#: Lemmatizer choices: ``auto`` is ``wordnet`` when nltk and its WordNet data import, else ``rules``.
LEMMATIZERS = ("auto", "rules", "wordnet")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits; everything else (incl. '_' and apostrophes) splits
_VOWELS = "aeiouy"


# -------------------------------------------------------------------------------------------------
# Lemmatizers
# -------------------------------------------------------------------------------------------------


class Lemmatizer(Protocol):
    """Maps a lower-case word to its lemma; ``name`` is recorded in a vocabulary's metadata."""

    name: str

    def __call__(self, word: str) -> str: ...


#: Irregular forms and words the rules would get wrong, mapped to their lemma.
_IRREGULAR = {
    # plurals
    "children": "child", "men": "man", "women": "woman", "feet": "foot", "teeth": "tooth", "geese": "goose",
    "mice": "mouse", "lice": "louse", "oxen": "ox", "wolves": "wolf", "knives": "knife", "leaves": "leaf",
    "lives": "life", "wives": "wife", "halves": "half", "shelves": "shelf", "calves": "calf", "thieves": "thief",
    "loaves": "loaf", "hooves": "hoof", "scarves": "scarf", "elves": "elf", "selves": "self", "wharves": "wharf",
    "buses": "bus", "gases": "gas", "lenses": "lens", "viruses": "virus", "choruses": "chorus", "bonuses": "bonus",
    "cactuses": "cactus", "octopuses": "octopus", "campuses": "campus", "circuses": "circus", "statuses": "status",
    "walruses": "walrus", "aches": "ache", "headaches": "headache", "potatoes": "potato", "tomatoes": "tomato",
    "echoes": "echo", "heroes": "hero", "volcanoes": "volcano", "mosquitoes": "mosquito", "torpedoes": "torpedo",
    "dominoes": "domino", "goes": "go", "movies": "movie", "cookies": "cookie", "zombies": "zombie",
    "calories": "calorie", "hoodies": "hoodie", "budgies": "budgie", "birdies": "birdie", "pies": "pie",
    "ties": "tie", "lies": "lie", "dies": "die",
    # verb forms
    "dying": "die", "lying": "lie", "tying": "tie", "died": "die", "lied": "lie", "tied": "tie",
    "adding": "add", "added": "add", "purring": "purr", "purred": "purr", "whirring": "whirr", "whirred": "whirr",
    "breathing": "breathe", "breathed": "breathe", "bathing": "bathe", "bathed": "bathe", "soothing": "soothe",
    "seething": "seethe", "teething": "teethe", "biased": "bias", "changing": "change", "changed": "change",
    "exchanging": "exchange", "arranging": "arrange", "arranged": "arrange", "challenging": "challenge",
    "creating": "create", "created": "create", "plunging": "plunge", "plunged": "plunge", "lunging": "lunge", "cringing": "cringe",
    "rang": "ring", "rung": "ring", "sang": "sing", "sung": "sing", "blew": "blow", "blown": "blow",
    "broken": "break", "struck": "strike", "shook": "shake", "shaken": "shake", "threw": "throw",
    "thrown": "throw", "tore": "tear", "torn": "tear", "flew": "fly", "flown": "fly", "ran": "run",
    "beaten": "beat", "drove": "drive", "driven": "drive", "rode": "ride", "ridden": "ride", "swung": "swing",
    "stung": "sting", "spun": "spin", "dug": "dig", "fell": "fall", "fallen": "fall",
}  # fmt: skip
#: Words ending like an inflection that are not one; the rules leave them unchanged.
_INVARIANT = frozenset(
    {
        "news", "series", "species", "lens", "physics", "mathematics", "acoustics", "electronics", "politics",
        "economics", "athletics", "gymnastics", "aerobics", "clothes", "scissors", "pants", "trousers", "jeans",
        "binoculars", "pliers", "tongs", "tweezers", "thanks", "always", "perhaps", "whereas", "bellows",
        "gallows", "chaos", "cosmos", "canvas", "atlas", "christmas", "bias", "texas", "pancreas", "alias",
        "kudos", "means", "ceiling", "morning", "evening", "wedding", "pudding", "clothing", "lightning",
        "herring", "starling", "duckling", "sibling", "sapling", "seedling", "darling", "sterling", "viking",
        "awning", "railing", "naked", "wicked", "sacred", "rugged", "ragged", "jagged", "crooked", "learned",
        "beloved", "blessed", "hatred", "kindred", "embed", "hundred",
    }
)  # fmt: skip


def _vowel_groups(stem: str) -> int:
    """Number of vowel groups (a rough syllable count); a leading ``y`` is a consonant."""
    return len(re.findall(f"[{_VOWELS}]+", stem[0].replace("y", "_") + stem[1:])) if stem else 0


def _restore_stem(stem: str) -> str:
    """Undo the spelling changes of an ``-ing``/``-ed`` stem.

    ``tapp`` → ``tap`` (doubled consonant), ``crackl`` → ``crackle`` (consonant + l), ``sneez``/``danc``/
    ``mov``/``clos``/``rescu`` → ``+e`` (English words rarely end in a single z, v, c, u or s), ``charg``/
    ``judg`` → ``+e``, consonant + ``at``/``ut``/``od``/``ud``/``id`` → ``+e`` (``vibrat``, ``comput``,
    ``explod``), and a one-syllable consonant-vowel-consonant stem takes a silent e (``typ`` → ``type``,
    ``wip`` → ``wipe``) since such verbs double their consonant otherwise (``hop`` → ``hopping``).
    """
    if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] in "bdgmnprtv":
        return stem[:-1]
    last, before = stem[-1], stem[-2]
    if last == "l" and before in "bcdfgkpstz":
        return stem + "e"
    if last in "vzcu" and before != last:
        return stem + "e"
    if last == "g" and before in "rld":
        return stem + "e"
    if stem[-2:] in ("at", "ut", "od", "ud", "id") and len(stem) >= 4 and stem[-3] not in _VOWELS:
        return stem + "e"
    if last == "s" and before != "s" and not stem.endswith("cus"):
        return stem + "e"
    if len(stem) >= 3 and last not in _VOWELS + "wx" and before in _VOWELS and stem[-3] not in _VOWELS and _vowel_groups(stem) == 1:
        return stem + "e"
    return stem


class RuleLemmatizer:
    """A small, conservative rule-based English lemmatizer (used when nltk's WordNet is unavailable).

    Order: an exceptions table (irregular plurals and verbs, ``_IRREGULAR``) and a list of words that only
    look inflected (``_INVARIANT``: ``news``, ``ceiling``, ``naked``, ...); words shorter than 4 letters are
    kept. Then ``-ies``/``-ied`` → ``-y`` (``babies`` → ``baby``, ``cried`` → ``cry``); ``-ing`` and ``-ed``
    are stripped only when the word has at least 5 letters, the stem has a vowel and (for ``-ed``) the word
    does not end in ``-eed``, and the stem's spelling is restored (``tapping`` → ``tap``, ``crackling`` →
    ``crackle``, ``sneezing`` → ``sneeze``, ``typed`` → ``type``; ``ring``, ``thing``, ``string`` stay).
    Plurals: ``-sses``/``-shes``/``-ches``/``-xes``/``-zzes`` drop ``-es`` (``glasses`` → ``glass``), other
    ``-s`` endings drop the ``s`` except after ``s``, ``u`` or ``i`` (``bus``, ``chorus``, ``tennis`` stay).
    """

    name = "rules"

    def __call__(self, word: str) -> str:
        w = word.lower()
        if w in _IRREGULAR:
            return _IRREGULAR[w]
        if w in _INVARIANT or len(w) < 4 or not w.isalpha():
            return w
        if w.endswith(("ies", "ied")):
            stem = w[:-3]
            return stem + "y" if len(stem) >= 2 else stem + "ie"
        if w.endswith("ing") and len(w) >= 5:
            stem = w[:-3]
            if any(c in _VOWELS for c in stem) and len(stem) >= 2:
                return _restore_stem(stem)
            return w
        if w.endswith("ed") and len(w) >= 5 and not w.endswith("eed"):
            stem = w[:-2]
            if any(c in _VOWELS for c in stem) and len(stem) >= 2:
                return _restore_stem(stem)
            return w
        if w.endswith(("sses", "shes", "ches", "xes", "zzes")):
            return w[:-2]
        if w.endswith("s") and not w.endswith(("ss", "us", "is")):
            return w[:-1]
        return w


class _WordNetLemmatizer:
    """nltk's WordNet lemmatizer: ``-ing``/``-ed`` words as verbs first, everything else as nouns."""

    def __init__(self) -> None:
        import nltk
        from nltk.stem import WordNetLemmatizer

        self._lemmatizer = WordNetLemmatizer()
        self._lemmatizer.lemmatize("dogs")  # raises LookupError when the WordNet data is not installed
        self.name = f"wordnet (nltk {getattr(nltk, '__version__', '?')})"

    def __call__(self, word: str) -> str:
        w = word.lower()
        if w.endswith(("ing", "ed")):
            verb = self._lemmatizer.lemmatize(w, "v")
            if verb != w:
                return verb
        return self._lemmatizer.lemmatize(w, "n")


@lru_cache(maxsize=None)
def _wordnet() -> _WordNetLemmatizer | None:
    try:
        return _WordNetLemmatizer()
    except (ImportError, LookupError, OSError, AttributeError):
        return None


def wordnet_available() -> bool:
    """Whether nltk and its WordNet data can be imported (never downloads anything)."""
    return _wordnet() is not None


def get_lemmatizer(kind: str = "auto") -> Lemmatizer:
    """The lemmatizer ``kind`` (one of :data:`LEMMATIZERS`, or a recorded name such as ``"wordnet (nltk 3.9)"``)."""
    key = str(kind).split(" ", 1)[0].lower()
    if key not in LEMMATIZERS:
        raise ValueError(f"unknown lemmatizer {kind!r}; valid: {list(LEMMATIZERS)}")
    if key == "rules":
        return RuleLemmatizer()
    found = _wordnet()
    if found is not None:
        return found
    if key == "wordnet":
        raise DatasetError(
            "lemmatizer 'wordnet' needs nltk and its WordNet data, which cannot be imported here "
            "(pip install nltk; python -m nltk.downloader wordnet), or rebuild the vocabulary with lemmatizer='rules'"
        )
    return RuleLemmatizer()


# -------------------------------------------------------------------------------------------------
# Tokenization
# -------------------------------------------------------------------------------------------------


def tokenize(
    text: str,
    *,
    lemmatize: bool = False,
    lemmatizer: str | Lemmatizer = "auto",
    min_length: int = MIN_LENGTH,
    stop_words: Iterable[str] | None = None,
) -> list[str]:
    """Content words of ``text`` in order (duplicates kept): split on camel case, ``_`` and punctuation, lower-case,
    drop tokens with digits, tokens shorter than ``min_length`` and stop words (:data:`STOP_WORDS` by default).

    With ``lemmatize``, each word is replaced by its lemma (``lemmatizer``: a name from :data:`LEMMATIZERS` or a
    callable), and lemmas that are stop words or too short are dropped too.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    stops = default_stop_words() if stop_words is None else frozenset(w.lower() for w in stop_words)
    lem = (get_lemmatizer(lemmatizer) if isinstance(lemmatizer, str) else lemmatizer) if lemmatize else None
    out = []
    for token in _WORD.findall(_CAMEL.sub(" ", text)):
        word = token.lower()
        if any(c.isdigit() for c in word) or len(word) < min_length or word in stops:
            continue
        if lem is not None:
            word = lem(word)
            if len(word) < min_length or word in stops:
                continue
        out.append(word)
    return out


def _unique(words: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(words))


# -------------------------------------------------------------------------------------------------
# Vocabulary
# -------------------------------------------------------------------------------------------------

_JSON_FORMAT = "audiointerp.vocabulary"


@dataclass
class Vocabulary:
    """A dictionary of words, most frequent first.

    ``counts[w]`` is the number of texts (clips) that contain ``w``. ``lemmatizer`` names the lemmatizer that
    built it (``"none"`` without lemmatization); :meth:`encode` tokenizes text the same way.
    """

    words: list[str]
    counts: dict[str, int]
    lemmatize: bool = False
    min_count: int = 1
    lemmatizer: str = "none"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.words = [str(w) for w in self.words]
        self.counts = {str(w): int(c) for w, c in dict(self.counts).items()}
        dupes = sorted(w for w, n in Counter(self.words).items() if n > 1)
        if dupes:
            raise DatasetError(f"vocabulary words contain duplicates: {dupes[:20]}")
        self.lemmatize = bool(self.lemmatize)
        self.min_count = int(self.min_count)
        if not self.lemmatize:
            self.lemmatizer = "none"
        elif self.lemmatizer in ("", "none", "auto"):
            self.lemmatizer = get_lemmatizer("auto").name
        self._index = {w: i for i, w in enumerate(self.words)}

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        texts: Iterable[str | Sequence[str]],
        *,
        min_count: int = 1,
        lemmatize: bool = False,
        max_words: int | None = None,
        lemmatizer: str = "auto",
    ) -> Vocabulary:
        """The words occurring in at least ``min_count`` texts, sorted by count (descending) then alphabetically.

        Each item of ``texts`` is a string (tokenized with :func:`tokenize`) or an already tokenized word list
        (e.g. from :func:`row_words`), used as given. ``max_words`` keeps the most frequent words.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be an iterable of texts, not a single string")
        if int(min_count) < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count!r}")
        if max_words is not None and int(max_words) < 1:
            raise ValueError(f"max_words must be positive or None, got {max_words!r}")
        lem_name = get_lemmatizer(lemmatizer).name if lemmatize else "none"
        counts: dict[str, int] = {}
        n_texts = 0
        for item in texts:
            n_texts += 1
            if isinstance(item, str):
                words = tokenize(item, lemmatize=lemmatize, lemmatizer=lem_name if lemmatize else "auto")
            else:
                words = [str(w) for w in item]
            for w in _unique(words):
                counts[w] = counts.get(w, 0) + 1
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_words is not None:
            kept = kept[: int(max_words)]
        if not kept:
            raise DatasetError(f"no word occurs in at least min_count={min_count} of the {n_texts} texts ({len(counts)} distinct words in all)")
        return cls(kept, {w: counts[w] for w in kept}, lemmatize, int(min_count), lem_name)

    # --- lookup ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __iter__(self):
        return iter(self.words)

    def index(self, word: str) -> int:
        """Position of ``word``; a KeyError names close matches."""
        try:
            return self._index[word]
        except KeyError:
            close = difflib.get_close_matches(str(word), self.words, n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"{word!r} is not in the vocabulary of {len(self)} words{hint}") from None

    def words_of(self, text_or_words: str | Sequence[str]) -> list[str]:
        """In-vocabulary words of a text (tokenized as the vocabulary was built) or of a word list, order kept, no duplicates."""
        if isinstance(text_or_words, str):
            words = tokenize(text_or_words, lemmatize=self.lemmatize, lemmatizer=self.lemmatizer if self.lemmatize else "auto")
        else:
            words = [str(w) for w in text_or_words]
        return [w for w in _unique(words) if w in self._index]

    def encode(self, text_or_words: str | Sequence[str]) -> list[int]:
        """Indices of the in-vocabulary words of a text or word list (order kept, duplicates removed)."""
        return [self._index[w] for w in self.words_of(text_or_words)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words at the positions ``ids``."""
        return [self.words[int(i)] for i in ids]

    def multi_hot(self, text_or_words: str | Sequence[str]) -> np.ndarray:
        """A float32 vector of ``len(self)`` with 1 at the words of a text or word list (catDNN targets)."""
        out = np.zeros(len(self), dtype=np.float32)
        out[self.encode(text_or_words)] = 1.0
        return out

    def metadata(self) -> dict[str, object]:
        """JSON-friendly description: size, lemmatization and tokenizer settings (for run metadata)."""
        return {
            "size": len(self),
            "lemmatize": self.lemmatize,
            "lemmatizer": self.lemmatizer,
            "min_count": self.min_count,
            "min_length": MIN_LENGTH,
            "stop_words": "gensim STOPWORDS minus KEPT_WORDS, plus contraction pieces",
        }

    # --- files -------------------------------------------------------------------------------
    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as JSON (atomically); returns the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": _JSON_FORMAT,
            "version": 1,
            "lemmatize": self.lemmatize,
            "lemmatizer": self.lemmatizer,
            "min_count": self.min_count,
            "words": self.words,
            "counts": [self.counts.get(w, 0) for w in self.words],
        }
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        return out

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """Read a vocabulary written by :meth:`to_json`."""
        src = Path(path)
        if not src.is_file():
            raise DatasetError(f"vocabulary file {str(src)!r} not found")
        try:
            doc = json.loads(src.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"vocabulary file {str(src)!r} is not valid JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != _JSON_FORMAT:
            raise DatasetError(f"{str(src)!r} is not an audiointerp vocabulary (expected format {_JSON_FORMAT!r})")
        missing = [k for k in ("words", "counts", "lemmatize", "lemmatizer", "min_count") if k not in doc]
        if missing:
            raise DatasetError(f"vocabulary file {str(src)!r} lacks keys {missing}")
        words, counts = doc["words"], doc["counts"]
        if not isinstance(words, list) or not isinstance(counts, list) or len(words) != len(counts):
            raise DatasetError(f"vocabulary file {str(src)!r}: 'words' and 'counts' must be lists of equal length")
        return cls(words, dict(zip(words, counts)), doc["lemmatize"], doc["min_count"], doc["lemmatizer"])


# -------------------------------------------------------------------------------------------------
# Words of manifest rows
# -------------------------------------------------------------------------------------------------


def row_words(
    manifest: Manifest,
    row: ManifestRow | int,
    source: str = "description",
    *,
    lemmatize: bool = False,
    lemmatizer: str = "auto",
) -> list[str]:
    """The words of a manifest row (order kept, no duplicates).

    ``source`` is ``"description"`` (the free text), ``"label"`` (the label names split into words, every
    label of a multi-label row) or a factor column (e.g. MSOS's ``"event"``). When the chosen column has no
    content word (empty description), the label's words are used. An empty list means the row has no word.
    """
    r = manifest.rows[int(row)] if isinstance(row, (int, np.integer)) else row
    values = r.labels if source == "label" else manifest.column_values(r, source)
    words = _unique(w for v in values for w in tokenize(v, lemmatize=lemmatize, lemmatizer=lemmatizer))
    if not words and source != "label":
        words = _unique(w for v in r.labels for w in tokenize(v, lemmatize=lemmatize, lemmatizer=lemmatizer))
    return words


def manifest_words(manifest: Manifest, source: str = "description", *, lemmatize: bool = False, lemmatizer: str = "auto") -> list[list[str]]:
    """:func:`row_words` of every row of ``manifest``."""
    lem = get_lemmatizer(lemmatizer).name if lemmatize else "auto"
    return [row_words(manifest, r, source, lemmatize=lemmatize, lemmatizer=lem) for r in manifest.rows]


AUDIO_CONCEPTS = Path(__file__).parent / "data" / "audio_concepts.txt"


def audio_concepts(path: str | Path | None = None) -> list[str]:
    """A concept vocabulary: one word or phrase per line, `#` comments and blank lines skipped, duplicates
    dropped. Default: the project's own audio-concept vocabulary (sources, materials, actions, qualities)."""
    source = Path(path) if path is not None else AUDIO_CONCEPTS
    if not source.is_file():
        raise FileNotFoundError(f"vocabulary file {source} not found")
    lines = (line.strip().lower() for line in source.read_text(encoding="utf-8").splitlines())
    return _unique(line for line in lines if line and not line.startswith("#"))
