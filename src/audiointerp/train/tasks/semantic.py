"""`semantic` (semDNN / catDNN) and `cae`: VGGish-like networks trained on word embeddings, on words, or to
reconstruct their input (Esposito et al., ICASSP 2023).

- semDNN (`task.target=embedding`): regress each sound onto the normalised mean of its words' vectors with the
  angular distance; evaluated by the NNLS ranking score and AMCSS over the dictionary.
- catDNN (`task.target=multi_hot`): one sigmoid unit per dictionary word, BCE on multi-hot targets; ranked by
  output probabilities.
- CAE (task `cae`): the same encoder with a mirrored decoder, MSE on the log-mel patches.
All three report the macro-class RDM correlation of the last shared layer (`embedding`) and, given a
behavioural dissimilarity matrix, cross-validated RSA. Clip-level outputs and embeddings are the mean over the
clip's 0.96 s patches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from audiointerp.datasets import Manifest, ManifestDataset, ManifestRow, load_manifest
from audiointerp.datasets.embeddings import WordVectors, embed_words, glove_6b_50d, load_word_vectors, train_word2vec
from audiointerp.datasets.sampling import ClusterBalancedSampler, clip_clusters, cluster_coverage, cluster_words
from audiointerp.datasets.vocabulary import Vocabulary, manifest_words, tokenize
from audiointerp.errors import ConfigError, DatasetError
from audiointerp.evaluation import rsa, semantic
from audiointerp.evaluation.plots import amcss_curves, rdm_panels
from audiointerp.losses import AngularDistanceLoss, MultiHotBCELoss, ReconstructionLoss
from audiointerp.models import build, build_frontend
from audiointerp.train.data import manifest_dataset
from audiointerp.train.tasks.base import EvalResult, Task, TaskConfig, TaskData
from audiointerp.train.tasks.registry import register_task

log = logging.getLogger("audiointerp")


class ClipWordsDataset(Dataset):
    """A manifest dataset restricted to clips with at least one dictionary word, with word-based targets."""

    def __init__(self, base: ManifestDataset, keep: Sequence[int], word_ids: Sequence[Sequence[int]],
                 targets: Optional[np.ndarray], n_words: int, target: str) -> None:
        self.base = base
        self.keep = list(keep)
        self.word_ids = [list(w) for w in word_ids]
        self.targets = None if targets is None else torch.as_tensor(targets, dtype=torch.float32)
        self.n_words = n_words
        self.target = target

    def __len__(self) -> int:
        return len(self.keep)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def row(self, i: int) -> ManifestRow:
        return self.base.rows[self.keep[i]]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.base[self.keep[i]]
        if self.target == "embedding":
            target = self.targets[i]
        else:
            target = torch.zeros(self.n_words)
            target[self.word_ids[i]] = 1.0
        return {"audio": item["audio"], "target": target, "index": torch.tensor(i)}


@dataclass
class EmbeddingEvalConfig(TaskConfig):
    """Evaluation shared by the VGGish-like tasks."""

    macro_column: Optional[str] = "material"  # factor whose classes form the 0/1 macro-class RDM (null: skip)
    dissimilarities: Optional[str] = None  # behavioural dissimilarity matrix (CSV/NPY with sound ids) for RSA
    rsa_layer: str = "embedding"  # the layer whose cosine RDM is compared by RSA (any tap, e.g. block3)
    rsa_folds: int = 5  # cross-validation folds over sounds for R2cv


@dataclass
class SemanticConfig(EmbeddingEvalConfig):
    name: str = "semantic"
    target: str = "embedding"  # embedding: semDNN (word vectors, angular distance) | multi_hot: catDNN (BCE)
    words_from: str = "description"  # where a clip's words come from: description | label | a factor column
    min_count: int = 1  # dictionary words occur in at least this many training clips
    max_words: Optional[int] = None  # keep only the most frequent words (null: all)
    lemmatize: bool = False  # lemmatize words (WordNet when installed, else built-in rules)
    vectors: str = "word2vec"  # word2vec (trained on the training descriptions) | glove-6b-50d | a vectors file
    vectors_format: str = "auto"  # for a vectors file: auto | word2vec-binary | word2vec-text | glove | gensim
    word2vec_corpus: Optional[str] = None  # text file (one sentence a line) to train word2vec on; null: the descriptions
    word2vec_dim: int = 300  # vector size of the word2vec trained here
    word2vec_epochs: int = 50  # its training epochs
    combine: str = "mean"  # a clip's target from its words' vectors: mean (L2-normalised) | sum | first
    balanced: bool = True  # semantically balanced sampling over Ward clusters of the dictionary
    clusters: int = 300  # K, the number of Ward clusters
    top_n: list[int] = field(default_factory=lambda: list(range(5, 16)))  # AMCSS top-N values


def dataset_row(dataset: Dataset, i: int) -> ManifestRow:
    """The manifest row of item i of a ManifestDataset or a ClipWordsDataset."""
    return dataset.row(i) if isinstance(dataset, ClipWordsDataset) else dataset.rows[i]


def _macro_labels(dataset: Dataset, column: Optional[str], indices: np.ndarray) -> Optional[list[str]]:
    """Values of a factor column (or the label) for the evaluated clips (None when the column is absent)."""
    if not column:
        return None
    manifest: Manifest = dataset.base.manifest if isinstance(dataset, ClipWordsDataset) else dataset.manifest
    if column != "label" and column not in manifest.factor_names:
        return None
    return [manifest.column_values(dataset_row(dataset, int(i)), column)[0] for i in indices]


def _numpy_or_none(tensor: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if tensor is None else tensor.numpy()


def warn_if_collapsed(dictionary: np.ndarray, source: str, threshold: float = 0.9) -> float:
    """Mean pairwise cosine of the dictionary's vectors; warns when they are nearly parallel (word2vec trained
    too briefly on a small corpus), which makes every target alike and the ranking score meaningless."""
    unit = dictionary / np.maximum(np.linalg.norm(dictionary, axis=1, keepdims=True), 1e-12)
    n = len(unit)
    mean_cosine = float((unit.sum(0) @ unit.sum(0) - n) / max(n * (n - 1), 1))
    log.info("dictionary: %d words, mean pairwise cosine of their vectors %.3f (%s)", n, mean_cosine, source)
    if mean_cosine > threshold:
        log.warning("the dictionary's word vectors are nearly parallel (mean cosine %.3f): train word2vec longer "
                    "(task.word2vec_epochs), with fewer dimensions, or use pretrained vectors (task.vectors)", mean_cosine)
    return mean_cosine


class _VGGishTask(Task):
    """Shared by semantic and cae: the VGGish front end and network, clip-level outputs, RDM evaluation."""

    family = "semantic"

    def _build_network(self, num_classes: Optional[int]) -> None:
        cfg = self.cfg
        params = dict(cfg.model.params)
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        self.network = build(str(cfg.model.name), checkpoint=cfg.model.checkpoint, **kwargs, **params)
        self.frontend = build_frontend(str(cfg.model.frontend or cfg.model.name), **dict(cfg.model.frontend_params))
        if int(self.frontend.sample_rate) != int(cfg.data.sample_rate):
            raise ConfigError(f"data.sample_rate={cfg.data.sample_rate} but the front end of model {cfg.model.name!r} "
                              f"expects {self.frontend.sample_rate} Hz: set data.sample_rate={self.frontend.sample_rate}")

    def patches(self, audio: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Front-end patches flattened to [B * P, 1, 96, 64], and P."""
        with torch.no_grad():
            features = self.frontend(audio)
        return features.flatten(0, 1), features.shape[1]

    def clip_outputs(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, embeddings) averaged over each clip's patches."""
        flat, n_patches = self.patches(audio)
        embedding = self.network.forward_until(flat, "embedding")
        output = self.network.forward_from(embedding, "embedding")
        batch = audio.shape[0]
        return (output.reshape(batch, n_patches, *output.shape[1:]).mean(1),
                embedding.reshape(batch, n_patches, -1).mean(1))

    def rsa_features(self, flat: torch.Tensor, n_patches: int) -> dict[str, torch.Tensor]:
        """{"rsa_features": [B, features]} of `task.rsa_layer` (mean over patches) when RSA needs a layer other than
        the embedding; {} otherwise."""
        layer = str(self.cfg.task.rsa_layer)
        if not self.cfg.task.dissimilarities or layer == "embedding":
            return {}
        activation = self.network.forward_until(flat, layer).flatten(1)
        return {"rsa_features": activation.reshape(-1, n_patches, activation.shape[1]).mean(1).float()}

    def export_module(self) -> nn.Module:
        from audiointerp.models.frontends import AudioPipeline

        return AudioPipeline(self.frontend, self.network)

    def _rdm_evaluation(self, embeddings: np.ndarray, indices: np.ndarray, dataset: Dataset,
                        rsa_features: Optional[np.ndarray] = None) -> tuple[dict[str, float], dict, dict]:
        """Macro-class RDM correlation of the `embedding` layer and cross-validated RSA of `task.rsa_layer`
        (metrics, figures, arrays)."""
        metrics: dict[str, float] = {}
        figures: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        task_cfg = self.cfg.task
        macro = _macro_labels(dataset, task_cfg.macro_column, indices)
        if macro is not None and len(set(macro)) > 1:
            order = np.argsort(np.asarray(macro), kind="stable")
            model_rdm = rsa.rdm(embeddings[order], metric="cosine")
            macro_rdm = rsa.category_rdm([macro[i] for i in order])
            metrics["macro_rdm_correlation"] = rsa.rdm_correlation(model_rdm, macro_rdm, method="spearman")
            figures["rdms"] = rdm_panels({"embedding layer (cosine)": model_rdm, f"{task_cfg.macro_column} (0/1)": macro_rdm},
                                         labels=[macro[i] for i in order])
            arrays["embedding_rdm"] = model_rdm
            arrays["macro_labels"] = np.asarray([macro[i] for i in order])
        if task_cfg.dissimilarities:
            ids = [Path(dataset_row(dataset, int(i)).path).stem for i in indices]
            target, target_ids = rsa.load_dissimilarities(task_cfg.dissimilarities)
            shared = [k for k, sound in enumerate(ids) if sound in set(target_ids)]
            if len(shared) < 6:
                raise DatasetError(f"only {len(shared)} evaluated sounds appear in {task_cfg.dissimilarities}; "
                                   "its ids must be the audio file names without extension")
            position = {sound: j for j, sound in enumerate(target_ids)}
            pick = [position[ids[k]] for k in shared]
            features = embeddings if rsa_features is None else rsa_features
            result = rsa.rsa_cv(rsa.rdm(features[shared], metric="cosine"), target[np.ix_(pick, pick)],
                                n_folds=int(task_cfg.rsa_folds), seed=int(self.cfg.train.seed))
            metrics["rsa_r2cv"] = float(result["r2_cv"])
        return metrics, figures, arrays

    def _rdm_metric_names(self) -> list[str]:
        names = ["macro_rdm_correlation"] if self.cfg.task.macro_column else []
        return names + (["rsa_r2cv"] if self.cfg.task.dissimilarities else [])



@register_task
class SemanticTask(_VGGishTask):
    """semDNN (word-vector targets) or catDNN (multi-hot words), chosen by `task.target`."""

    name = "semantic"
    Config = SemanticConfig

    # --- data -------------------------------------------------------------------------------------------
    def _word_vectors(self, sentences: list[list[str]]) -> WordVectors:
        task = self.cfg.task
        if task.vectors == "word2vec":
            if task.word2vec_corpus:
                corpus = Path(str(task.word2vec_corpus))
                if not corpus.is_file():
                    raise ConfigError(f"task.word2vec_corpus={str(corpus)!r} does not exist")
                lines = corpus.read_text(encoding="utf-8", errors="replace").splitlines()
                sentences = [words for words in (tokenize(line, lemmatize=bool(task.lemmatize)) for line in lines) if words]
            return train_word2vec(sentences, vector_size=int(task.word2vec_dim), epochs=int(task.word2vec_epochs),
                                  seed=int(self.cfg.train.seed))
        if task.vectors == "glove-6b-50d":
            return glove_6b_50d()
        return load_word_vectors(str(task.vectors), format=str(task.vectors_format))

    def _clip_words(self, dataset: ManifestDataset) -> list[list[str]]:
        task = self.cfg.task
        subset = Manifest(dataset.manifest.root, list(dataset.rows), dataset.manifest.factor_names,
                          dataset.manifest.classes, dataset.manifest.source)
        return manifest_words(subset, str(task.words_from), lemmatize=bool(task.lemmatize))

    def _words_dataset(self, base: ManifestDataset, vocabulary: Vocabulary, dictionary: np.ndarray, split: str) -> ClipWordsDataset:
        words = self._clip_words(base)
        word_ids = [vocabulary.encode(w) for w in words]
        keep = [i for i, ids in enumerate(word_ids) if ids]
        if len(keep) < len(word_ids):
            log.warning("%s: %d of %d clips have no dictionary word and are left out", split, len(word_ids) - len(keep), len(word_ids))
        if not keep:
            raise DatasetError(f"{split}: no clip has a word of the dictionary ({len(vocabulary)} words)")
        ids = [word_ids[i] for i in keep]
        targets = None
        if self.cfg.task.target == "embedding":
            vectors = WordVectors.from_arrays(vocabulary.words, dictionary)
            targets = np.stack([embed_words(vectors, [vocabulary.words[j] for j in row], mode=str(self.cfg.task.combine))[0]
                                for row in ids])
        return ClipWordsDataset(base, keep, ids, targets, len(vocabulary), str(self.cfg.task.target))

    def build_data(self) -> TaskData:
        cfg, task = self.cfg, self.cfg.task
        if task.target not in ("embedding", "multi_hot"):
            raise ConfigError(f"task.target={task.target!r}; choose embedding (semDNN) or multi_hot (catDNN)")
        seed, progress = int(cfg.train.seed), bool(cfg.train.progress)
        manifest = load_manifest(str(cfg.data.source), format=str(cfg.data.format))
        classes = manifest.class_list("label")
        train_base = manifest_dataset(cfg.data, manifest.select_folds(list(cfg.data.train_folds)), train=True,
                                      classes=classes, seed=seed, progress=progress)
        valid_base = manifest_dataset(cfg.data, manifest.select_folds(list(cfg.data.valid_folds)), train=False,
                                      classes=classes, seed=seed, progress=progress)
        train_words = self._clip_words(train_base)
        vocabulary = Vocabulary.build(train_words, min_count=int(task.min_count), lemmatize=bool(task.lemmatize),
                                      max_words=task.max_words)
        sentences = [tokenize(r.description, lemmatize=bool(task.lemmatize)) or list(w) for r, w in zip(train_base.rows, train_words)]
        vectors = self._word_vectors(sentences)
        missing = [w for w in vocabulary.words if w not in vectors]
        if missing:
            log.warning("%d dictionary words have no vector in %s and are dropped: %s", len(missing), vectors.source, missing[:30])
            kept = [w for w in vocabulary.words if w in vectors]
            vocabulary = Vocabulary(kept, {w: vocabulary.counts[w] for w in kept}, vocabulary.lemmatize,
                                    vocabulary.min_count, vocabulary.lemmatizer)
        dictionary = vectors.matrix(vocabulary.words).astype(np.float32)
        warn_if_collapsed(dictionary, vectors.source)
        train = self._words_dataset(train_base, vocabulary, dictionary, "train")
        valid = self._words_dataset(valid_base, vocabulary, dictionary, "valid")
        sampler = None
        if task.balanced:
            labels = cluster_words(dictionary, k=int(task.clusters))
            clusters = clip_clusters(train.word_ids, labels)
            log.info("balanced sampling: %s", cluster_coverage(clusters, int(labels.max()) + 1).summary())
            sampler = ClusterBalancedSampler(clusters, seed=seed)
        metadata = {"target": str(task.target), "vocabulary": vocabulary.words,
                    "counts": [vocabulary.counts[w] for w in vocabulary.words], "lemmatize": vocabulary.lemmatize,
                    "lemmatizer": vocabulary.lemmatizer, "vectors": vectors.source, "embedding_dim": int(dictionary.shape[1])}
        return TaskData(train, valid, metadata, {"dictionary": torch.from_numpy(dictionary)}, sampler)

    def build_eval_data(self, source: str, format: str = "auto", folds: Optional[Sequence[str]] = None) -> Dataset:
        """Any dataset reader's clips, their words (from descriptions, else labels) mapped onto this dictionary."""
        manifest = load_manifest(source, format=format)
        if folds:
            manifest = manifest.select_folds(list(folds))
        base = manifest_dataset(self.cfg.data, manifest, train=False, classes=manifest.class_list("label"),
                                seed=int(self.cfg.train.seed), progress=bool(self.cfg.train.progress))
        return self._words_dataset(base, self.vocabulary, self.dictionary.numpy(), Path(source).name)

    # --- models ------------------------------------------------------------------------------------------
    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        if not arrays or "dictionary" not in arrays:
            raise ConfigError("the semantic task needs its dictionary's word vectors (arrays.safetensors of the run)")
        self.vocabulary = Vocabulary(list(metadata["vocabulary"]), dict(zip(metadata["vocabulary"], metadata["counts"])),
                                     bool(metadata["lemmatize"]), 1, str(metadata["lemmatizer"]))
        self.target = str(metadata["target"])
        self.register_buffer("dictionary", arrays["dictionary"].float(), persistent=False)
        outputs = self.dictionary.shape[1] if self.target == "embedding" else len(self.vocabulary)
        self._build_network(outputs)
        self.criterion = AngularDistanceLoss() if self.target == "embedding" else MultiHotBCELoss()

    def write_export_files(self, out_dir: Path, metadata: dict[str, Any]) -> list[Path]:
        return [self.vocabulary.to_json(out_dir / "vocabulary.json")]

    # --- training and evaluation ---------------------------------------------------------------------------
    def metric_names(self) -> list[str]:
        return ["loss", "examples", "ranking_score", *(f"amcss@{n}" for n in self.cfg.task.top_n), *self._rdm_metric_names()]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        flat, n_patches = self.patches(batch["audio"])
        target = batch["target"].repeat_interleave(n_patches, dim=0)  # every patch of a clip gets its target
        loss = self.criterion(self.network(flat), target)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        output, embedding = self.clip_outputs(batch["audio"])
        flat, n_patches = self.patches(batch["audio"])
        return {"output": output.float(), "embedding": embedding.float(), "target": batch["target"], "index": batch["index"],
                **self.rsa_features(flat, n_patches)}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        output, indices = outputs["output"], outputs["index"].numpy()
        true_words = [dataset.word_ids[int(i)] for i in indices]
        dictionary = self.dictionary.numpy()
        metrics = {"loss": float(self.criterion(output, outputs["target"])), "examples": float(len(indices))}
        if self.target == "embedding":
            scores = semantic.nnls_betas(output.numpy(), dictionary)
            tie_break = semantic.cosine_similarities(output.numpy(), dictionary)
        else:
            scores, tie_break = torch.sigmoid(output).numpy(), None
        metrics["ranking_score"] = float(semantic.ranking_score(scores, true_words, tie_break=tie_break).mean())
        curve = semantic.amcss_curve(scores, true_words, dictionary, top_ns=list(self.cfg.task.top_n), tie_break=tie_break)
        metrics.update({f"amcss@{n}": float(v) for n, v in curve.items()})
        rdm_metrics, figures, arrays = self._rdm_evaluation(outputs["embedding"].numpy(), indices, dataset,
                                                            _numpy_or_none(outputs.get("rsa_features")))
        metrics.update(rdm_metrics)
        figures["amcss"] = amcss_curves({self.cfg.experiment: curve})
        return EvalResult(metrics, figures, arrays=arrays)


@dataclass
class CAEConfig(EmbeddingEvalConfig):
    name: str = "cae"


@register_task
class CAETask(_VGGishTask):
    """The convolutional autoencoder baseline: reconstruct the log-mel patches (MSE)."""

    name = "cae"
    Config = CAEConfig

    def build_data(self) -> TaskData:
        cfg = self.cfg
        manifest = load_manifest(str(cfg.data.source), format=str(cfg.data.format))
        classes = manifest.class_list("label")
        splits = [manifest_dataset(cfg.data, manifest.select_folds(list(folds)), train=train, classes=classes,
                                   seed=int(cfg.train.seed), progress=bool(cfg.train.progress))
                  for folds, train in ((cfg.data.train_folds, True), (cfg.data.valid_folds, False))]
        return TaskData(splits[0], splits[1], {})

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        self._build_network(None)
        self.criterion = ReconstructionLoss()

    def metric_names(self) -> list[str]:
        return ["loss", "examples", *self._rdm_metric_names()]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        flat, _ = self.patches(batch["audio"])
        loss = self.criterion(self.network(flat), flat)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        flat, n_patches = self.patches(batch["audio"])
        embedding = self.network.forward_until(flat, "embedding")
        error = (self.network.forward_from(embedding, "embedding") - flat).pow(2).flatten(1).mean(1)
        batch_size = batch["audio"].shape[0]
        return {"mse": error.reshape(batch_size, n_patches).mean(1).float(),
                "embedding": embedding.reshape(batch_size, n_patches, -1).mean(1).float(), "index": batch["index"],
                **self.rsa_features(flat, n_patches)}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        indices = outputs["index"].numpy()
        metrics = {"loss": float(outputs["mse"].mean()), "examples": float(len(indices))}
        rdm_metrics, figures, arrays = self._rdm_evaluation(outputs["embedding"].numpy(), indices, dataset,
                                                            _numpy_or_none(outputs.get("rsa_features")))
        metrics.update(rdm_metrics)
        return EvalResult(metrics, figures, arrays=arrays)
