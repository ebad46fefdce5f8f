"""semDNN / catDNN / CAE on the built-in sounds, their exports, and evaluation on official layouts."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.datasets.sampling import ClusterBalancedSampler
from audiointerp.train.config import load_config
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


def recomputed_scores(run: Path, source: Path, folds: list[str]) -> tuple[float, int]:
    """The paper's ranking score of a run's best checkpoint on `folds`, recomputed independently of the task's
    evaluation code: each whole clip decoded alone, the network's outputs averaged over its 0.96 s examples,
    NNLS betas (scipy) or float64 sigmoid probabilities, average ranks (`scipy.stats.rankdata`),
    m = 1 - (rank - 1)/(N - 1) averaged over a clip's words, then over clips. Returns (score, clips)."""
    from scipy.optimize import nnls
    from scipy.stats import rankdata

    from audiointerp.datasets import load_manifest
    from audiointerp.datasets.audio import load_audio
    from audiointerp.train.export import task_from_checkpoint

    task, _, _, _ = task_from_checkpoint(run)
    dataset = task.build_eval_data(str(source), folds=folds)  # used only for each clip's file and true words
    manifest = load_manifest(str(source))
    dictionary = task.dictionary.double().numpy()
    scores = []
    for i in range(len(dataset)):
        row = dataset.row(i)
        audio = load_audio(manifest.resolve(row), 16000, 1)
        with torch.no_grad():
            output = task.network(task.frontend(audio)[0]).mean(0).double().numpy()
        if task.target == "embedding":
            word_scores = nnls(dictionary.T, output)[0]
        else:
            word_scores = 1.0 / (1.0 + np.exp(-output))
        ranks = rankdata(-word_scores, method="average")
        words = sorted(set(dataset.word_ids[i]))
        scores.append(np.mean([1.0 - (ranks[w] - 1.0) / (len(dictionary) - 1) for w in words]))
    return float(np.mean(scores)), len(scores)


def test_semdnn_and_catdnn_report_the_papers_ranking_score(semantic_runs: dict[str, Path], tiny_data: Path) -> None:
    """Known answer: valid/ranking_score equals the score recomputed from the best checkpoint with scipy."""
    for name, run in semantic_runs.items():
        summary = json.loads((run / "summary.json").read_text())
        final = summary["final"]
        expected, clips = recomputed_scores(run, tiny_data, ["1"])
        assert final["valid/examples"] == clips, name
        assert final["valid/ranking_score"] == pytest.approx(expected, abs=1e-5), name
        amcss = [final[f"valid/amcss@{n}"] for n in range(5, 16)]
        assert amcss == sorted(amcss)  # more predicted words can only raise the maximum similarity
        assert summary["resolved"]["ranking"].endswith("ties by average rank")
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
    from audiointerp.datasets import load_manifest
    from audiointerp.datasets.audio import load_audio
    from audiointerp.train.export import task_from_checkpoint

    cae = Trainer(load_config("cae", [*cae_overrides, "train.epochs=1"])).fit()
    # known answer: valid/loss is the reconstruction MSE per clip (mean over its examples), averaged over clips
    task, cfg, _, _ = task_from_checkpoint(cae.run_dir)
    manifest = load_manifest(str(cfg.data.source)).select_folds(["1"])
    errors = []
    for row in manifest.rows:
        with torch.no_grad():
            examples = task.frontend(load_audio(manifest.resolve(row), 16000, 1))[0]
            errors.append(float((task.network(examples) - examples).pow(2).mean()))
    assert cae.metrics["valid/loss"] == pytest.approx(float(np.mean(errors)), rel=1e-4)
    assert "valid/macro_rdm_correlation" in cae.metrics
    keep_epochs = [o for o in overrides(tiny_overrides) if not o.startswith("train.epochs")]
    untrained = Trainer(load_config("semdnn_untrained", keep_epochs)).fit()
    assert json.loads((untrained.run_dir / "summary.json").read_text())["steps"] == 0
    expected, _ = recomputed_scores(untrained.run_dir, Path(str(cfg.data.source)), ["1"])
    assert untrained.metrics["valid/ranking_score"] == pytest.approx(expected, abs=1e-5)


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
        assert row["set"] == "external"
        tree = esc50_tree if row["data"] == "ESC-50-master" else us8k_tree
        expected, clips = recomputed_scores(semantic_runs[row["model"]], tree, [])  # known answer, recomputed
        assert int(float(row["examples"])) == clips
        assert float(row["ranking_score"]) == pytest.approx(expected, abs=1e-5), (row["model"], row["data"])
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
    assert result.metrics["valid/rsa_r2cv"] < 0.5  # random points: the network does not predict them
    from audiointerp.datasets.audio import load_audio
    from audiointerp.evaluation import rdm as rsa
    from audiointerp.train.evaluate import evaluate
    from audiointerp.train.export import task_from_checkpoint

    # known answer: "human" dissimilarities equal to the network's own cosine RDM of whole-clip embeddings
    # (computed here clip by clip) are predicted perfectly, R2cv = 1; another layer's RDM does worse
    task, _, _, _ = task_from_checkpoint(result.run_dir)
    manifest = load_manifest(tiny_data)
    with torch.no_grad():
        embeddings = np.stack([task.network.forward_until(task.frontend(load_audio(manifest.resolve(r), 16000, 1))[0],
                                                          "embedding").mean(0).numpy()
                               for r in manifest.select_folds(["1"]).rows])
    own = rsa.rdm(embeddings, metric="cosine")
    with open(tmp_path / "own.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["", *ids])
        writer.writerows([[sound, *row] for sound, row in zip(ids, own)])
    same = evaluate(result.run_dir, progress=False, settings=[f"task.dissimilarities={tmp_path / 'own.csv'}"],
                    out_dir=tmp_path / "own")
    assert same.metrics["rsa_r2cv"] == pytest.approx(1.0, abs=1e-3)
    other_layer = evaluate(result.run_dir, progress=False, out_dir=tmp_path / "block2",  # any layer, chosen at evaluation
                           settings=[f"task.dissimilarities={tmp_path / 'own.csv'}", "task.rsa_layer=block2"])
    assert other_layer.metrics["rsa_r2cv"] < 0.999


def test_word2vec_on_a_corpus_the_user_gives(tiny_overrides: list[str], tmp_path: Path) -> None:
    from audiointerp.train.tasks import task_class

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["tapping a metal pipe", "knocking on wood", "glass shattering loudly"] * 50))
    data = task_class("semantic")(load_config("semdnn", [*overrides(tiny_overrides), f"task.word2vec_corpus={corpus}",
                                                         "task.balanced=false", "task.top_n=[5,8]"])).build_data()
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


# --- issue 11.2: whole sounds, one tie rule, test folds, dictionary checks, explicit word vectors ----------------
SR = 16000


def _late_tone(freq: float, seconds: float, onset: float = 1.1) -> np.ndarray:
    """Silence for `onset` seconds, then a tone: the label-bearing sound starts after the first 0.96 s example."""
    t = np.arange(int(seconds * SR)) / SR
    return np.where(t >= onset, 0.5 * np.sin(2 * np.pi * freq * t), 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def late_sounds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two materials whose sounds start at 1.1 s: glass (3 kHz, 2.5 s clips) and wood (400 Hz, 3.4 s clips);
    the clips of a material are identical; folds 1 and 2 hold 3 clips of each."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("late")
    rows = []
    for material, freq, seconds, words in (("glass", 3000.0, 2.5, "glass tapping bright"), ("wood", 400.0, 3.4, "wood knocking dull")):
        for k in range(6):
            name = f"{material}-{k}.wav"
            sf.write(root / name, _late_tone(freq, seconds), SR)
            rows.append([name, material, words, str(1 + k % 2), material])
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "description", "fold", "material"])
        writer.writerows(rows)
    return root / "manifest.csv"


LATE = ["model.params.widths=[4,8,8,16]", "model.params.embedding_dim=16", "task.word2vec_dim=8", "task.word2vec_epochs=5",
        "task.balanced=false", "task.top_n=[1,2]", "data.train_folds=[2]", "data.valid_folds=[1]", "data.batch_size=4",
        "data.eval_batch_size=4", "train.progress=false", "tracking.backend=none"]


def test_validation_scores_whole_clips_whose_sound_starts_after_one_second(late_sounds: Path, tmp_path: Path) -> None:
    """Known answer: the untrained network's clip embeddings are identical within a material, and differ between
    materials only if the examples after 1 s are seen; so the embedding RDM is ~0 within and clearly > 0 between
    materials, and its correlation with the 0/1 macro RDM is near 1 (exactly 1 but for float noise within).
    Seeing only the first (silent) example, as `data.seconds: 0.975` did, every clip is alike (0.27 on the old code)."""
    from audiointerp.train.evaluate import evaluate

    result = Trainer(load_config("semdnn_untrained", [*LATE, f"data.source={late_sounds}", f"output_dir={tmp_path / 'runs'}",
                                                      f"data.cache_dir={tmp_path / 'cache'}"])).fit()
    assert result.metrics["valid/examples"] == 6
    assert result.metrics["valid/macro_rdm_correlation"] > 0.95
    again = evaluate(result.run_dir, progress=False, out_dir=tmp_path / "eval")  # `audiointerp evaluate`: the same
    assert again.metrics["macro_rdm_correlation"] == pytest.approx(result.metrics["valid/macro_rdm_correlation"], abs=0.03)
    rdm, labels = again.arrays["embedding_rdm"], list(again.arrays["macro_labels"])
    assert labels == ["glass"] * 3 + ["wood"] * 3
    within = np.concatenate([rdm[:3, :3][np.triu_indices(3, 1)], rdm[3:, 3:][np.triu_indices(3, 1)]])
    between = rdm[:3, 3:].ravel()
    assert between.min() > 1e-3 and between.min() > 100 * within.max()  # untrained embeddings are all close, but
    assert np.ptp(between) < 0.01 * between.min()  # every glass clip is (equally) farther from every wood clip


def test_clip_outputs_are_the_mean_over_every_example_of_the_whole_clip(late_sounds: Path, tmp_path: Path) -> None:
    """eval_step on a batch of a 2.5 s and a 3.4 s clip (padded) equals the mean of the network over each clip's
    own 2 and 3 examples, computed clip by clip; also through `build_eval_data` (what `evaluate` uses)."""
    from torch.utils.data import DataLoader

    from audiointerp.train.export import task_from_checkpoint

    run = Trainer(load_config("semdnn_untrained", [*LATE, f"data.source={late_sounds}", f"output_dir={tmp_path / 'runs'}",
                                                   f"data.cache_dir={tmp_path / 'cache'}", "task.rsa_layer=block2"])).fit().run_dir
    task, _, _, _ = task_from_checkpoint(run)
    dataset = task.build_eval_data(str(late_sounds), folds=["1"])
    pick = [0, 3]  # glass-0 (2.5 s), wood-0 (3.4 s)
    assert [dataset.row(i).path for i in pick] == ["glass-0.wav", "wood-0.wav"]
    batch = next(iter(DataLoader(torch.utils.data.Subset(dataset, pick), batch_size=2, collate_fn=dataset.collate_fn)))
    assert batch["length"].tolist() == [40000, 54400]
    out = task.eval_step(batch)
    for row, i in enumerate(pick):
        clip = dataset[i]["audio"]  # the clip alone, as decoded (16-bit WAV)
        assert clip.shape[-1] == (40000 if i == 0 else 54400)
        examples = task.frontend(clip)[0]
        assert examples.shape[0] == (2 if i == 0 else 3)
        embedding = task.network.forward_until(examples, "embedding")
        torch.testing.assert_close(out["embedding"][row], embedding.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out["output"][row], task.network.forward_from(embedding, "embedding").mean(0),
                                   rtol=1e-4, atol=1e-5)
    assert "rsa_features" not in out  # RSA of another layer only with dissimilarities


CONE = np.array([[1.0, 0, 0], [0.8, 0.6, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0.6, 0.8]])  # NNLS of e1 = word 0 only


def _task_with_dictionary(tiny_overrides: list[str], target: str, extra: tuple[str, ...] = ()):
    from types import SimpleNamespace

    from audiointerp.train.tasks import task_class

    config = "semdnn" if target == "embedding" else "catdnn"
    task = task_class("semantic")(load_config(config, [*overrides(tiny_overrides), "task.macro_column=null",
                                                       "task.top_n=[1,2]", *extra]))
    words = ["w0", "w1", "w2", "w3", "w4"]
    task.build_models({"target": target, "vocabulary": words, "counts": [1] * 5, "lemmatize": False, "lemmatizer": "none"},
                      {"dictionary": torch.tensor(CONE, dtype=torch.float32)})
    return task, SimpleNamespace(word_ids=[[1]])


@pytest.mark.parametrize("target,output", [("embedding", [[1.0, 0.0, 0.0]]), ("multi_hot", [[5.0, -5.0, -5.0, -5.0, -5.0]])])
def test_semdnn_and_catdnn_rank_with_the_same_tie_rule(tiny_overrides: list[str], target: str, output: list) -> None:
    """Word 1 is tied with three others behind word 0: average ranks give 0.375 for both networks by default;
    task.ties=cosine gives 0.75 for both (semDNN: cosine to the prediction; catDNN: to its top word's vector)."""
    for ties, expected in ((None, 0.375), ("cosine", 0.75), ("average", 0.375)):
        task, dataset = _task_with_dictionary(tiny_overrides, target, () if ties is None else (f"task.ties={ties}",))
        out = torch.tensor(output)
        target_tensor = torch.tensor([[0.8, 0.6, 0.0]]) if target == "embedding" else torch.tensor([[0.0, 1, 0, 0, 0]])
        result = task.summarize({"output": out, "embedding": torch.zeros(1, 16), "target": target_tensor,
                                 "index": torch.tensor([0])}, dataset)
        assert result.metrics["ranking_score"] == pytest.approx(expected), (target, ties)


def test_top_n_larger_than_the_dictionary_fails_before_training(tiny_overrides: list[str]) -> None:
    from audiointerp.errors import ConfigError
    from audiointerp.train.tasks import task_class

    task = task_class("semantic")(load_config("semdnn", [*overrides(tiny_overrides), "task.top_n=[5,100000]", "task.balanced=false"]))
    with pytest.raises(ConfigError, match=r"task.top_n.*100000.*dictionary"):
        task.build_data()


def test_the_resolved_word_vectors_are_written_logged_and_summarized(tiny_overrides: list[str], tmp_path: Path) -> None:
    result = Trainer(load_config("semdnn", [*overrides(tiny_overrides), "train.max_steps=1"])).fit()
    config_text = (result.run_dir / "config.yaml").read_text()
    assert "# resolved task.vectors: trained: word2vec trained here (dim=24" in config_text
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["resolved"]["task.vectors"].startswith("trained: word2vec trained here (dim=24")
    assert "24-d" in summary["resolved"]["task.vectors"]
    assert "resolved task.vectors: trained" in (result.run_dir / "events.log").read_text()
    assert summary["resolved"]["ranking"] == "ranking_score: NNLS betas (semDNN), ties by average rank"


@pytest.mark.timeout(900)
def test_two_processes_evaluate_whole_clips_of_different_lengths_like_one(late_sounds: Path, tmp_path: Path) -> None:
    """Clips of 2.5 s and 3.4 s, padded per batch: each process averages per clip inside eval_step, so the
    gathered outputs have equal shapes; 6 clips in batches of 2 over 2 processes (an uneven last step) give the
    same metrics as one process."""
    import os
    import subprocess
    import sys

    run = Trainer(load_config("semdnn_untrained", [*LATE, f"data.source={late_sounds}", f"output_dir={tmp_path / 'runs'}",
                                                   f"data.cache_dir={tmp_path / 'cache'}"])).fit().run_dir
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    metrics = []
    for nproc in (1, 2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable]
        out = tmp_path / f"eval-{nproc}"
        done = subprocess.run([*launcher, "-m", "audiointerp", "evaluate", str(run), "--out", str(out), "--batch-size", "2"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
        assert done.returncode == 0, done.stderr[-4000:]
        metrics.append(json.loads((out / "metrics.json").read_text()))
    assert metrics[0]["examples"] == metrics[1]["examples"] == 6
    assert metrics[0] == pytest.approx(metrics[1], rel=1e-5, abs=1e-6)
