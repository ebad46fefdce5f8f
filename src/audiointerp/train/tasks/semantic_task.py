"""`semantic` (semDNN / catDNN) and `cae`: VGGish-like networks trained on word embeddings, on words, or to
reconstruct their input (Esposito et al., ICASSP 2023).

- semDNN (`task.target=embedding`): regress each sound onto the normalised mean of its words' vectors with the
  angular distance; evaluated by the NNLS ranking score and AMCSS over the dictionary.
- catDNN (`task.target=multi_hot`): one sigmoid unit per dictionary word, BCE on multi-hot targets; ranked by
  output probabilities.
- CAE (task `cae`): the same encoder with a mirrored decoder, MSE on the log-mel patches.
All three report the macro-class RDM correlation of the last shared layer (`embedding`) and, given a
behavioural dissimilarity matrix, cross-validated RSA.

Whole sounds: training takes `data.seconds` crops (one 0.96 s example with 0.975), but validation, test folds,
`audiointerp evaluate` and the RSA features read every clip whole; the VGGish front end cuts it into every
0.96 s example (an incomplete last example dropped, a clip under 0.975 s padded to one), clips of different
lengths are padded in a batch with their `length`, and a clip's outputs and embeddings are the mean over its own
examples (the paper's sound-averaged scores). Averaging happens inside `eval_step`, so the tensors gathered over
processes are per clip.

Ranking: `task.ties` is one rule for both networks (`evaluation.ranking.word_scores`): average ranks by default,
or a cosine tie-break for both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from audiointerp.datasets import Manifest, ManifestDataset, ManifestRow, load_manifest
from audiointerp.datasets.embeddings import WordVectors, embed_words, glove_6b_50d, load_word_vectors, train_word2vec
from audiointerp.datasets.lengths import patch_counts
from audiointerp.datasets.sampling import ClusterBalancedSampler, clip_clusters, cluster_coverage, cluster_words
from audiointerp.datasets.vocabulary import Vocabulary, manifest_words, tokenize
from audiointerp.errors import ConfigError, DatasetError
from audiointerp.evaluation import ranking, rdm
from audiointerp.evaluation.plots import amcss_curves, rdm_panels
from audiointerp.evaluation.results import EvalResult
from audiointerp.losses import AngularDistanceLoss, MultiHotBCELoss, ReconstructionLoss
from audiointerp.models import build, build_frontend
from audiointerp.models.frontends import AudioPipeline
from audiointerp.train.data import check_manifest_splits, manifest_dataset
from audiointerp.train.tasks.base import Task, TaskConfig, TaskData, register_task

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

    @property
    def collate_fn(self) -> Optional[Callable[[Sequence[Mapping[str, torch.Tensor]]], dict[str, torch.Tensor]]]:
        """The base dataset's collate (padding whole clips), or None for the default collate."""
        return self.base.collate_fn

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
    top_n: list[int] = field(default_factory=lambda: list(range(5, 16)))  # AMCSS top-N values (<= dictionary size)
    ties: str = "average"  # rank ties, the same rule for semDNN and catDNN: average (rankdata) | cosine (tie-break)


TIES = ("average", "cosine")


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


def clip_means(values: torch.Tensor, owner: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Mean of per-example `values` [M, ...] over each clip's examples: [B, ...], with `owner` [M] the clip of each
    example and `counts` [B] the number of examples of each clip (every count >= 1)."""
    total = values.new_zeros((counts.shape[0], *values.shape[1:]))
    total.index_add_(0, owner, values)
    return total / counts.to(values.dtype).reshape(-1, *([1] * (values.dim() - 1)))


def ranking_description(target: str, ties: str) -> str:
    """Which rule a ranking score used, for logs, summaries and reports."""
    scores = "NNLS betas (semDNN)" if target == "embedding" else "sigmoid probabilities (catDNN)"
    rule = {"average": "ties by average rank",
            "cosine": "ties broken by cosine to the prediction" if target == "embedding"
            else "ties broken by cosine to the mean vector of the top words"}[ties]
    return f"ranking_score: {scores}, {rule}"


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

    def examples(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every 0.96 s example of every clip: (examples [M, 1, 96, 64], owner [M] = the clip of each example,
        counts [B] = examples per clip).

        `audio` [B, (C,) T] holds clips zero-padded at the end; `lengths` [B] their own samples (None: all T).
        A clip of n samples keeps the front end's `num_patches(n)` first examples (an incomplete last example is
        dropped, a clip shorter than one example is padded to one), which are exactly the examples of the clip
        alone: an example ending before the padding does not see it.
        """
        with torch.no_grad():
            features = self.frontend(audio)  # [B, P, 1, 96, 64]
        batch, most = features.shape[:2]
        sizes = [most] * batch if lengths is None else patch_counts(self.frontend, lengths.tolist(), most)
        counts = torch.tensor(sizes, dtype=torch.int64)  # the same rule as `extract` (datasets/lengths.py)
        keep = torch.arange(most)[None, :] < counts[:, None]
        owner = torch.arange(batch).repeat_interleave(counts)
        return features[keep.to(features.device)], owner.to(features.device), counts.to(features.device)

    def patches(self, audio: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Front-end patches of clips of one length flattened to [B * P, 1, 96, 64], and P."""
        with torch.no_grad():
            features = self.frontend(audio)
        return features.flatten(0, 1), features.shape[1]

    def clip_outputs(self, audio: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, embeddings) [B, ...] of each clip: the mean over every example of the clip (see `examples`)."""
        flat, owner, counts = self.examples(audio, lengths)
        embedding = self.network.forward_until(flat, "embedding")
        output = self.network.forward_from(embedding, "embedding")
        return clip_means(output, owner, counts), clip_means(embedding, owner, counts)

    def rsa_features(self, flat: torch.Tensor, owner: torch.Tensor, counts: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"rsa_features": [B, features]} of `task.rsa_layer` (mean over each clip's examples) when RSA needs a
        layer other than the embedding; {} otherwise."""
        layer = str(self.cfg.task.rsa_layer)
        if not self.cfg.task.dissimilarities or layer == "embedding":
            return {}
        activation = self.network.forward_until(flat, layer).flatten(1)
        return {"rsa_features": clip_means(activation, owner, counts).float()}

    def export_module(self) -> nn.Module:
        return AudioPipeline(self.frontend, self.network)

    def compiled_modules(self) -> list[nn.Module]:
        """The network as training calls it (`__call__`); evaluation's `forward_until`/`forward_from` stay eager."""
        return [self.network]

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
            model_rdm = rdm.rdm(embeddings[order], metric="cosine")
            macro_rdm = rdm.category_rdm([macro[i] for i in order])
            metrics["macro_rdm_correlation"] = rdm.rdm_correlation(model_rdm, macro_rdm, method="spearman")
            figures["rdms"] = rdm_panels({"embedding layer (cosine)": model_rdm, f"{task_cfg.macro_column} (0/1)": macro_rdm},
                                         labels=[macro[i] for i in order])
            arrays["embedding_rdm"] = model_rdm
            arrays["macro_labels"] = np.asarray([macro[i] for i in order])
        if task_cfg.dissimilarities:
            ids = [Path(dataset_row(dataset, int(i)).path).stem for i in indices]
            target, target_ids = rdm.load_dissimilarities(task_cfg.dissimilarities)
            shared = [k for k, sound in enumerate(ids) if sound in set(target_ids)]
            if len(shared) < 6:
                raise DatasetError(f"only {len(shared)} evaluated sounds appear in {task_cfg.dissimilarities}; "
                                   "its ids must be the audio file names without extension")
            position = {sound: j for j, sound in enumerate(target_ids)}
            pick = [position[ids[k]] for k in shared]
            features = embeddings if rsa_features is None else rsa_features
            result = rdm.rsa_cv(rdm.rdm(features[shared], metric="cosine"), target[np.ix_(pick, pick)],
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
    def _word_vectors(self, sentences: list[list[str]]) -> tuple[WordVectors, str]:
        """The word vectors `task.vectors` names, and the resolved source: `trained: ...`, `package: ...` or
        `file: ...`, with the dimension (written to config.yaml, logged, and in summary.json)."""
        task = self.cfg.task
        if task.vectors == "word2vec":
            corpus_note = f"{len(sentences)} training descriptions"
            if task.word2vec_corpus:
                corpus = Path(str(task.word2vec_corpus))
                if not corpus.is_file():
                    raise ConfigError(f"task.word2vec_corpus={str(corpus)!r} does not exist")
                lines = corpus.read_text(encoding="utf-8", errors="replace").splitlines()
                sentences = [words for words in (tokenize(line, lemmatize=bool(task.lemmatize)) for line in lines) if words]
                corpus_note = f"{len(sentences)} sentences of {corpus}"
            vectors = train_word2vec(sentences, vector_size=int(task.word2vec_dim), epochs=int(task.word2vec_epochs),
                                     seed=int(self.cfg.train.seed))
            kind = f"trained: {vectors.source} on {corpus_note}"
        elif task.vectors == "glove-6b-50d":
            vectors = glove_6b_50d()
            kind = f"package: {vectors.source}"
        else:
            vectors = load_word_vectors(str(task.vectors), format=str(task.vectors_format))
            kind = f"file: {vectors.source} (format {task.vectors_format})"
        return vectors, f"{kind}; {vectors.dim}-d, {len(vectors)} words"

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
        check_manifest_splits(cfg.data, manifest)  # leaks and conflicting labels are errors; repeats warn
        if task.ties not in TIES:
            raise ConfigError(f"task.ties={task.ties!r}; choose one of {', '.join(TIES)} (one rule for semDNN and catDNN)")
        train_base = manifest_dataset(cfg.data, manifest.select_folds(list(cfg.data.train_folds)), train=True,
                                      classes=classes, seed=seed, progress=progress)
        valid_base = manifest_dataset(cfg.data, manifest.select_folds(list(cfg.data.valid_folds)), train=False,
                                      classes=classes, seed=seed, progress=progress, whole_clips=True)
        train_words = self._clip_words(train_base)
        vocabulary = Vocabulary.build(train_words, min_count=int(task.min_count), lemmatize=bool(task.lemmatize),
                                      max_words=task.max_words)
        sentences = [tokenize(r.description, lemmatize=bool(task.lemmatize)) or list(w) for r, w in zip(train_base.rows, train_words)]
        vectors, resolved = self._word_vectors(sentences)
        log.info("resolved task.vectors: %s", resolved)
        missing = [w for w in vocabulary.words if w not in vectors]
        if missing:
            log.warning("%d dictionary words have no vector in %s and are dropped: %s", len(missing), vectors.source, missing[:30])
            kept = [w for w in vocabulary.words if w in vectors]
            vocabulary = Vocabulary(kept, {w: vocabulary.counts[w] for w in kept}, vocabulary.lemmatize,
                                    vocabulary.min_count, vocabulary.lemmatizer)
        dictionary = vectors.matrix(vocabulary.words).astype(np.float32)
        self._check_top_n(len(vocabulary))
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
                    "lemmatizer": vocabulary.lemmatizer, "vectors": vectors.source, "embedding_dim": int(dictionary.shape[1]),
                    "resolved": {"task.vectors": resolved}}
        return TaskData(train, valid, metadata, {"dictionary": torch.from_numpy(dictionary)}, sampler)

    def build_eval_data(self, source: str, format: str = "auto", folds: Optional[Sequence[str]] = None) -> Dataset:
        """Any dataset reader's clips, their words (from descriptions, else labels) mapped onto this dictionary."""
        manifest = load_manifest(source, format=format)
        if folds:
            manifest = manifest.select_folds(list(folds))
        base = manifest_dataset(self.cfg.data, manifest, train=False, classes=manifest.class_list("label"),
                                seed=int(self.cfg.train.seed), progress=bool(self.cfg.train.progress), whole_clips=True)
        return self._words_dataset(base, self.vocabulary, self.dictionary.numpy(), Path(source).name)

    def _check_top_n(self, words: int) -> None:
        """task.top_n must fit the dictionary (checked before training and before an evaluation)."""
        top_n = [int(n) for n in self.cfg.task.top_n]
        if not top_n:
            raise ConfigError("task.top_n is empty; give the AMCSS top-N values, e.g. [5, 10, 15]")
        bad = [n for n in top_n if not 1 <= n <= words]
        if bad:
            raise ConfigError(f"task.top_n={top_n}: {bad} not in [1, {words}], the size of the dictionary "
                              f"({words} words); lower task.top_n or grow the dictionary (task.min_count, more data)")

    def evaluation_notes(self) -> dict[str, str]:
        return {"ranking": ranking_description(self.target, str(self.cfg.task.ties))}

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
        flat, _, counts = self.examples(batch["audio"], batch.get("length"))
        target = batch["target"].repeat_interleave(counts, dim=0)  # every example of a clip gets its target
        loss = self.criterion(self.network(flat), target)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per clip (so that gathering over processes sees equal shapes): outputs and embeddings averaged over
        every example of the whole clip, the target and the dataset index."""
        flat, owner, counts = self.examples(batch["audio"], batch.get("length"))
        embedding = self.network.forward_until(flat, "embedding")
        output = self.network.forward_from(embedding, "embedding")
        return {"output": clip_means(output, owner, counts).float(), "embedding": clip_means(embedding, owner, counts).float(),
                "target": batch["target"], "index": batch["index"], **self.rsa_features(flat, owner, counts)}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        """Loss, the ranking score (`task.ties`, one rule for both networks), AMCSS@top_n (ties: the expectation
        over orders of tied words under average ranks), and the RDM measures, over clip-level outputs."""
        task = self.cfg.task
        if task.ties not in TIES:
            raise ConfigError(f"task.ties={task.ties!r}; choose one of {', '.join(TIES)}")
        self._check_top_n(len(self.vocabulary))
        output, indices = outputs["output"], outputs["index"].numpy()
        true_words = [dataset.word_ids[int(i)] for i in indices]
        dictionary = self.dictionary.numpy()
        metrics = {"loss": float(self.criterion(output, outputs["target"])), "examples": float(len(indices))}
        scores, tie_break = ranking.word_scores(output.numpy(), dictionary, target=self.target, ties=str(task.ties),
                                                 top_k=min(int(n) for n in task.top_n))
        metrics["ranking_score"] = float(ranking.ranking_score(scores, true_words, tie_break=tie_break).mean())
        curve = ranking.amcss_curve(scores, true_words, dictionary, top_ns=list(task.top_n), tie_break=tie_break,
                                     ties="average")
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
        check_manifest_splits(cfg.data, manifest)  # leaks and conflicting labels are errors; repeats warn
        splits = [manifest_dataset(cfg.data, manifest.select_folds(list(folds)), train=train, classes=classes,
                                   seed=int(cfg.train.seed), progress=bool(cfg.train.progress), whole_clips=not train)
                  for folds, train in ((cfg.data.train_folds, True), (cfg.data.valid_folds, False))]
        return TaskData(splits[0], splits[1], {})

    def build_eval_data(self, source: str, format: str = "auto", folds: Optional[Sequence[str]] = None) -> Dataset:
        """Any dataset reader's clips, whole (every example of a clip is evaluated)."""
        manifest = load_manifest(source, format=format)
        if folds:
            manifest = manifest.select_folds(list(folds))
        return manifest_dataset(self.cfg.data, manifest, train=False, classes=manifest.class_list("label"),
                                seed=int(self.cfg.train.seed), progress=bool(self.cfg.train.progress), whole_clips=True)

    def build_models(self, metadata: dict[str, Any], arrays: Optional[dict[str, torch.Tensor]] = None) -> None:
        self._build_network(None)
        self.criterion = ReconstructionLoss()

    def metric_names(self) -> list[str]:
        return ["loss", "examples", *self._rdm_metric_names()]

    def step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        flat, _, _ = self.examples(batch["audio"], batch.get("length"))
        loss = self.criterion(self.network(flat), flat)
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def eval_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per clip: reconstruction MSE and embedding averaged over every example of the whole clip."""
        flat, owner, counts = self.examples(batch["audio"], batch.get("length"))
        embedding = self.network.forward_until(flat, "embedding")
        error = (self.network.forward_from(embedding, "embedding") - flat).pow(2).flatten(1).mean(1)
        return {"mse": clip_means(error, owner, counts).float(), "embedding": clip_means(embedding, owner, counts).float(),
                "index": batch["index"], **self.rsa_features(flat, owner, counts)}

    def summarize(self, outputs: dict[str, torch.Tensor], dataset: Dataset) -> EvalResult:
        indices = outputs["index"].numpy()
        metrics = {"loss": float(outputs["mse"].mean()), "examples": float(len(indices))}
        rdm_metrics, figures, arrays = self._rdm_evaluation(outputs["embedding"].numpy(), indices, dataset,
                                                            _numpy_or_none(outputs.get("rsa_features")))
        metrics.update(rdm_metrics)
        return EvalResult(metrics, figures, arrays=arrays)
