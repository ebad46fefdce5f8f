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
8. write `report.md`, a self-contained `report.html` and `summary.json`, and print where everything is.

Stages 1-7 are `audiointerp.quickstart.stages` (each returns a typed result; the settings sizing it sit beside
it); stage 8 is `audiointerp.quickstart.reporting`, which writes everything from those results. This module runs
them in order and times them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from audiointerp.quickstart.reporting import SEMANTIC_KEYS, SUMMARY_FILE, quickstart_summary, write_report
from audiointerp.quickstart.stages import (
    AE_CLASSIFIER_EPOCHS,
    AE_CLASSIFIER_OVERRIDES,
    AE_OVERRIDES,
    AE_STEPS,
    CLASSIFIER_OVERRIDES,
    DATA_SEED,
    FINETUNE_OVERRIDES,
    FLOW_EPOCHS,
    FLOW_OVERRIDES,
    LATENT_CLIPS_PER_CLASS,
    LATENT_DECODE_INSTANCES,
    LATENT_SEED,
    MANIPULATION_RADIUS,
    MANIPULATION_VALLEY,
    PROBING_BOOTSTRAP,
    PROBING_SOUNDS,
    RECONSTRUCTION_OVERRIDES,
    RECONSTRUCTION_STEPS,
    SEMANTIC_OVERRIDES,
    STAGES,
    TEST_SEED,
    AutoencoderResult,
    AutoencoderSummary,
    ClassifierResult,
    EvaluationResult,
    LatentResult,
    ProbingResult,
    QuickstartResults,
    SemanticResult,
    SynthResult,
    TrainedRun,
    autoencoder_stage,
    evaluate_stage,
    glove_installed,
    latent_stage,
    probing_stage,
    semantic_stage,
    synth_stage,
    train_stage,
)

__all__ = [
    "AE_CLASSIFIER_EPOCHS", "AE_CLASSIFIER_OVERRIDES", "AE_OVERRIDES", "AE_STEPS", "CLASSIFIER_OVERRIDES", "DATA_SEED",
    "FINETUNE_OVERRIDES", "FLOW_EPOCHS", "FLOW_OVERRIDES", "LATENT_CLIPS_PER_CLASS", "LATENT_DECODE_INSTANCES",
    "LATENT_SEED", "MANIPULATION_RADIUS", "MANIPULATION_VALLEY", "PROBING_BOOTSTRAP", "PROBING_SOUNDS",
    "RECONSTRUCTION_OVERRIDES", "RECONSTRUCTION_STEPS", "SEMANTIC_KEYS", "SEMANTIC_OVERRIDES", "STAGES", "SUMMARY_FILE",
    "TEST_SEED", "AutoencoderResult", "AutoencoderSummary", "ClassifierResult", "EvaluationResult", "LatentResult",
    "ProbingResult", "QuickstartResults", "SemanticResult", "SynthResult", "TrainedRun", "autoencoder_stage",
    "evaluate_stage", "glove_installed", "latent_stage", "probing_stage", "quickstart_summary", "run_quickstart",
    "semantic_stage", "synth_stage", "train_stage", "write_report",
]

T = TypeVar("T")
STEPS = len(STAGES) + 1  # the stages, then the report


def _timed(timings: dict[str, float], key: str, message: str, stage: Callable[[], T]) -> T:
    """Announce stage `key` (its number among STEPS, then `message`), run it, and record its seconds in `timings`."""
    print(f"[{list(STAGES).index(key) + 1}/{STEPS}] {message}", flush=True)
    t0 = time.time()
    result = stage()
    timings[key] = time.time() - t0
    return result


def run_quickstart(out: Path = Path("runs/quickstart"), overrides: Sequence[str] = (), tracking: str = "wandb",
                   clips_per_class: int = 40, mn_epochs: int = AE_CLASSIFIER_EPOCHS, ae_steps: int = AE_STEPS,
                   latent_clips_per_class: int = LATENT_CLIPS_PER_CLASS, flow_epochs: int = FLOW_EPOCHS) -> Path:
    """Run every stage into `out` and write the report; returns the path of report.html (report.md and
    SUMMARY_FILE beside it). `overrides` apply to the first classifier stage; `clips_per_class` sizes the training
    set, `mn_epochs` and `ae_steps` the autoencoder stage, `latent_clips_per_class` and `flow_epochs` the latent
    stage. `tracking` is every run's tracking backend (wandb, none...)."""
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    synth = _timed(timings, "synth", "synthesizing the built-in impact-sound set", lambda: synth_stage(out, clips_per_class))
    classifier = _timed(timings, "train", "training the classifier task",
                        lambda: train_stage(out, synth.manifest, tracking, overrides))
    evaluation = _timed(timings, "evaluate", "evaluating and exporting",
                        lambda: evaluate_stage(classifier.run_dir, synth.test_manifest))
    semantic = _timed(timings, "semantic", "semantic labels: semDNN against catDNN",
                      lambda: semantic_stage(out, synth.manifest, synth.test_manifest, tracking))
    autoencoder = _timed(timings, "autoencoder", "classifier-gradient autoencoder fine-tuning: a robust 32 kHz "
                         "classifier, a narrow autoencoder trained to reconstruct, then fine-tuned through the classifier",
                         lambda: autoencoder_stage(out, synth.manifest, tracking, mn_epochs, ae_steps))
    latent = _timed(timings, "latent", "latent factors: extract the classifier's layers, decode, train the flow, manipulate",
                    lambda: latent_stage(out, evaluation.export_dir, tracking, latent_clips_per_class, flow_epochs))
    probing = _timed(timings, "probing", "probing: RSA, a transfer probe, concept decompositions",
                     lambda: probing_stage(out, latent, semantic.runs["semdnn"], tracking))

    print(f"[{STEPS}/{STEPS}] writing the report", flush=True)
    results = QuickstartResults(synth=synth, classifier=classifier, evaluation=evaluation, semantic=semantic,
                                autoencoder=autoencoder, latent=latent, probing=probing, timings=timings,
                                total_seconds=time.time() - started)
    report = write_report(out, results)
    run_dir, export_dir = classifier.run_dir, evaluation.export_dir
    print(f"""
Done in {time.time() - started:.0f} s.
  report      {report.resolve()}
  report (md) {(out / 'report.md').resolve()}
  summary     {(out / SUMMARY_FILE).resolve()}   (the headline figures as numbers)
  run         {run_dir.resolve()}   (config.yaml, metrics.jsonl, checkpoints/, events.log)
  export      {export_dir.resolve()}   (load with audiointerp.load_export)
  data        {synth.manifest.parent.resolve()}
  W&B         {"offline files in " + str((run_dir / 'wandb').resolve()) + " (wandb sync to upload)" if (run_dir / 'wandb').exists() else tracking}
""", flush=True)
    return report
