"""`analyze concepts` on stored embeddings that are noisy copies of their material's word vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audiointerp.analysis import ActivationStore
from audiointerp.analysis.concepts import ConceptSettings, analyse, word_vector_dictionary
from audiointerp.cli import main
from audiointerp.datasets.embeddings import load_word_vectors
from audiointerp.datasets.store import write_store

WORDS = ["wood", "metal", "glass", "stone", "tapping", "rubbing", "loud", "quiet", "dog", "rain", "wine"]
MATERIALS = ["wood", "metal", "glass", "stone"]


def vectors_file(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    path = folder / "vectors.txt"
    lines = [f"{len(WORDS)} 24"] + [" ".join([word, *(f"{v:.6f}" for v in rng.normal(size=24))]) for word in WORDS]
    path.write_text("\n".join(lines) + "\n")
    return path


def material_store(folder: Path, vectors) -> Path:
    rng = np.random.default_rng(1)
    material = rng.integers(0, 4, 200)
    x = np.stack([vectors.matrix([MATERIALS[m]])[0] for m in material]) + 0.15 * rng.normal(size=(200, 24))
    return write_store(folder, {"output": x[:, None, :]}, {"path": [f"{i}.wav" for i in range(200)],
                                                          "material": [MATERIALS[m] for m in material]})


def test_each_sound_decomposes_onto_its_material(tmp_path: Path) -> None:
    vectors = load_word_vectors(vectors_file(tmp_path))
    vocabulary, dictionary = word_vector_dictionary(["wood", "metal", "glass", "stone", "tapping", "loud", "dog",
                                                     "wine glass", "red wine glass"], vectors)
    assert "wine glass" in vocabulary and "red wine glass" not in vocabulary  # every word of a phrase needs a vector
    store = ActivationStore(material_store(tmp_path / "store", vectors))
    result = analyse(store, vocabulary, dictionary, ConceptSettings(layer="output", l1s=[0.0, 0.01, 0.1], report_l1=0.01,
                                                                     factor="material"))
    materials = store.column("material")
    first = [top[0][0] if top else "" for top in result["top"]]
    assert np.mean([f == m for f, m in zip(first, materials)]) > 0.9
    nonzero = [row["nonzero"] for row in result["rows"]]
    assert nonzero == sorted(nonzero, reverse=True)
    assert result["rows"][1]["sparse_accuracy"] > 0.9 and result["dense_accuracy"] > 0.9


def test_the_command_writes_the_tables_and_figure(tmp_path: Path, capsys) -> None:
    path = vectors_file(tmp_path)
    folder = material_store(tmp_path / "store", load_word_vectors(path))
    out = tmp_path / "concepts"
    assert main(["analyze", "concepts", str(folder), "--layer", "output", "--vectors", str(path), "--factor", "material",
                 "--l1", "0", "0.05", "--out", str(out), "--tracking", "none"]) == 0
    assert {p.name for p in out.iterdir()} >= {"sparsity.csv", "top_concepts.csv", "concepts.png"}
    assert (out / "top_concepts.csv").read_text().count("\n") == 201
    printed = capsys.readouterr().out
    assert "concepts with vectors" in printed and "dense embeddings: material accuracy" in printed


def test_clap_text_embeddings_serve_as_the_dictionary(tmp_path: Path) -> None:
    import pytest
    import torch

    pytest.importorskip("transformers")
    from audiointerp.analysis.concepts import clap_dictionary
    from audiointerp.models import build
    from tests.models.test_clap import TINY, tokenizer

    torch.manual_seed(0)
    network = build("clap", config=TINY).eval()
    vocabulary, dictionary = clap_dictionary(["glass", "wood", "metal"], network, tokenizer)
    assert vocabulary == ["glass", "wood", "metal"] and dictionary.shape == (3, 8)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    store = ActivationStore(write_store(tmp_path / "clap", {"embedding": dictionary[labels] + 0.05 * rng.normal(size=(60, 8))},
                                        {"path": [f"{i}.wav" for i in range(60)]}))
    result = analyse(store, vocabulary, dictionary, ConceptSettings(layer="embedding", l1s=[0.0], report_l1=0.0))
    assert np.mean([top[0][0] == vocabulary[v] for top, v in zip(result["top"], labels)]) > 0.9
