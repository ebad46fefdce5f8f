"""semDNN / catDNN / CAE on the built-in sounds, their exports, and evaluation on official layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.configs import load_config
from audiointerp.datasets.sampling import ClusterBalancedSampler
from audiointerp.train.export import export_run, load_export_task
from audiointerp.train.trainer import Trainer

NARROW = ["model.params.widths=[4,8,8,16]", "model.params.embedding_dim=16", "task.word2vec_dim=24",
          "task.word2vec_epochs=5", "task.clusters=12", "data.seconds=1.0"]


def overrides(tiny_overrides: list[str]) -> list[str]:
    return [o for o in tiny_overrides if not o.startswith("model.params.widths")] + NARROW


@pytest.fixture(scope="module")
def semantic_runs(tiny_data: Path, tiny_settings: list[str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """semdnn and catdnn trained for one epoch on the tiny built-in set."""
    tmp = tmp_path_factory.mktemp("semantic")
    base = [o for o in tiny_settings if not o.startswith("model.params.widths")] + NARROW + [
        f"data.source={tiny_data}", f"output_dir={tmp / 'runs'}", f"data.cache_dir={tmp / 'cache'}", "train.epochs=1"]
    return {name: Trainer(load_config(name, base)).fit().run_dir for name in ("semdnn", "catdnn")}


def test_semdnn_and_catdnn_train_and_report_the_papers_scores(semantic_runs: dict[str, Path]) -> None:
    for name, run in semantic_runs.items():
        summary = json.loads((run / "summary.json").read_text())["final"]
        assert 0.0 <= summary["valid/ranking_score"] <= 1.0, name
        assert all(0.0 <= summary[f"valid/amcss@{n}"] <= 1.0 + 1e-6 for n in range(5, 16))
        amcss = [summary[f"valid/amcss@{n}"] for n in range(5, 16)]
        assert amcss == sorted(amcss)  # more predicted words can only raise the maximum similarity
        assert -1.0 <= summary["valid/macro_rdm_correlation"] <= 1.0
        assert (run / "figures" / "amcss.png").is_file() and (run / "figures" / "rdms.png").is_file()
        metadata = json.loads((run / "metadata.json").read_text())
        assert metadata["target"] == {"semdnn": "embedding", "catdnn": "multi_hot"}[name]


def test_vocabulary_and_embeddings_round_trip_through_the_export(semantic_runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    run = semantic_runs["semdnn"]
    out = export_run(run)
    vocabulary = json.loads((out / "vocabulary.json").read_text())
    metadata = json.loads((run / "metadata.json").read_text())
    task, exported = load_export_task(out)
    assert task.vocabulary.words == metadata["vocabulary"] == exported["vocabulary"]
    assert vocabulary["words"] == metadata["vocabulary"]
    torch.testing.assert_close(task.dictionary, load_file(str(run / "arrays.safetensors"))["dictionary"])
    assert task.dictionary.shape == (len(metadata["vocabulary"]), 24)
    with torch.no_grad():
        output, embedding = task.clip_outputs(torch.randn(2, 16000))
    assert output.shape == (2, 24) and embedding.shape == (2, 16)


def test_balanced_sampling_is_a_config_switch(tiny_overrides: list[str]) -> None:
    from audiointerp.train.tasks import task_class

    balanced = task_class("semantic")(load_config("semdnn", overrides(tiny_overrides))).build_data()
    assert isinstance(balanced.train_sampler, ClusterBalancedSampler)
    plain = task_class("semantic")(load_config("semdnn_unbalanced", overrides(tiny_overrides))).build_data()
    assert plain.train_sampler is None
    assert len(balanced.metadata["vocabulary"]) == balanced.arrays["dictionary"].shape[0]


def test_cae_and_the_untrained_baseline(tiny_overrides: list[str]) -> None:
    cae_overrides = [o for o in overrides(tiny_overrides) if not o.startswith(("task.word2vec", "task.clusters"))]
    cae = Trainer(load_config("cae", [*cae_overrides, "train.epochs=1"])).fit()
    assert cae.metrics["valid/loss"] > 0 and "valid/macro_rdm_correlation" in cae.metrics
    keep_epochs = [o for o in overrides(tiny_overrides) if not o.startswith("train.epochs")]
    untrained = Trainer(load_config("semdnn_untrained", keep_epochs)).fit()
    assert json.loads((untrained.run_dir / "summary.json").read_text())["steps"] == 0
    assert 0.0 <= untrained.metrics["valid/ranking_score"] <= 1.0


def test_evaluation_on_esc50_and_urbansound8k_without_retraining(
    semantic_runs: dict[str, Path], esc50_tree: Path, us8k_tree: Path, tmp_path: Path
) -> None:
    from audiointerp.cli import main

    out = tmp_path / "comparison"
    assert main(["evaluate", str(semantic_runs["semdnn"]), str(semantic_runs["catdnn"]),
                 "--data", str(esc50_tree), "--data", str(us8k_tree), "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "comparison.csv")))
    assert {(r["model"], r["data"]) for r in rows} == {(m, d) for m in ("semdnn", "catdnn")
                                                      for d in ("ESC-50-master", "UrbanSound8K")}
    for row in rows:
        assert 0.0 <= float(row["ranking_score"]) <= 1.0 and int(float(row["examples"])) > 0
    assert "| semdnn | ESC-50-master |" in (out / "comparison.md").read_text()
    for figure in ("ranking_score.png", "amcss.png"):
        assert (out / figure).is_file()
    assert (out / "UrbanSound8K" / "catdnn" / "metrics.json").is_file()


def test_cross_validated_rsa_against_a_dissimilarity_matrix(tiny_data: Path, tiny_overrides: list[str], tmp_path: Path) -> None:
    from audiointerp.datasets import load_manifest

    ids = [Path(r.path).stem for r in load_manifest(tiny_data).select_folds(["1"]).rows]
    rng = np.random.default_rng(0)
    points = rng.standard_normal((len(ids), 3))
    dissimilarity = np.linalg.norm(points[:, None] - points[None], axis=-1)
    with open(tmp_path / "human.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *ids])
        writer.writerows([[sound, *row] for sound, row in zip(ids, dissimilarity)])
    result = Trainer(load_config("semdnn", [*overrides(tiny_overrides), "train.max_steps=1",
                                            f"task.dissimilarities={tmp_path / 'human.csv'}"])).fit()
    assert "valid/rsa_r2cv" in result.metrics and result.metrics["valid/rsa_r2cv"] < 1.0
    from audiointerp.train.evaluate import evaluate

    other_layer = evaluate(result.run_dir, progress=False, settings=["task.rsa_layer=block2"],
                           out_dir=tmp_path / "block2")  # any layer's RDM, chosen at evaluation
    assert other_layer.metrics["rsa_r2cv"] != result.metrics["valid/rsa_r2cv"]


def test_word2vec_on_a_corpus_the_user_gives(tiny_overrides: list[str], tmp_path: Path) -> None:
    from audiointerp.train.tasks import task_class

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["tapping a metal pipe", "knocking on wood", "glass shattering loudly"] * 50))
    data = task_class("semantic")(load_config("semdnn", [*overrides(tiny_overrides), f"task.word2vec_corpus={corpus}",
                                                         "task.balanced=false"])).build_data()
    assert set(data.metadata["vocabulary"]) <= {"tapping", "metal", "pipe", "knocking", "wood", "glass", "shattering", "loudly"}


def test_a_semdnn_run_lends_its_dictionary_to_concept_decompositions(semantic_runs: dict[str, Path]) -> None:
    """`analyze concepts --vectors RUN`: the run's own word vectors, concepts tokenized as its words were."""
    import json

    from audiointerp.analysis.concepts import run_vectors, word_vector_dictionary
    from audiointerp.datasets.vocabulary import audio_concepts

    vectors, words = run_vectors(semantic_runs["semdnn"])
    run_words = json.loads((semantic_runs["semdnn"] / "metadata.json").read_text())["vocabulary"]
    vocabulary, dictionary = word_vector_dictionary(audio_concepts(), vectors, words)
    assert vocabulary and dictionary.shape == (len(vocabulary), vectors.matrix(run_words[:1]).shape[1])
    assert all(all(w in run_words for w in words(concept)) for concept in vocabulary)
    assert {"wood", "metal", "glass"} <= set(vocabulary)
