"""`audiointerp quickstart`: the main job on the built-in data, end to end, in a few minutes on a laptop CPU.

1. synthesize the impact-sound set (and a held-out test set from another seed);
2. train the classifier task on it;
3. evaluate on validation and on the held-out set, export the model;
4. semantic labels: semDNN against catDNN on the descriptions' words, with the CAE beside them;
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
it); stage 8 is `audiointerp.quickstart.reporting`, which writes everything from those results. This module says
what each stage needs (`stage_specs`): `audiointerp.quickstart.parallel` runs them, WORKERS at a time in their own
processes (train, evaluate, latent and probing one after the other; semantic and the autoencoder beside them), and
times them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from audiointerp.quickstart.parallel import StageRun, StageSpec, cores, critical_order, planned_order, run_stages
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
    PROBE_SOUNDS,
    PROBING_BOOTSTRAP,
    PROBING_SOUNDS,
    RECONSTRUCTION_OVERRIDES,
    RECONSTRUCTION_STEPS,
    SEMANTIC_OVERRIDES,
    STAGES,
    TEST_SEED,
    WORD_OVERRIDES,
    AutoencoderResult,
    AutoencoderSummary,
    ClassifierResult,
    EvaluationResult,
    LatentResult,
    ProbingResult,
    QuickstartResults,
    SemanticResult,
    SemdnnProbing,
    SynthResult,
    TimedRun,
    TrainedRun,
    ae_classifier_part,
    ae_finetune_part,
    ae_reconstruction_part,
    autoencoder_stage,
    evaluate_stage,
    glove_installed,
    latent_stage,
    probing_stage,
    semantic_stage,
    semdnn_probing_part,
    synth_stage,
    train_stage,
)

__all__ = [
    "AE_CLASSIFIER_EPOCHS", "AE_CLASSIFIER_OVERRIDES", "AE_OVERRIDES", "AE_STEPS", "CLASSIFIER_OVERRIDES", "COSTS",
    "DATA_SEED", "FINETUNE_OVERRIDES", "FLOW_EPOCHS", "FLOW_OVERRIDES", "LATENT_CLIPS_PER_CLASS",
    "LATENT_DECODE_INSTANCES", "LATENT_SEED", "LOGS", "MANIPULATION_RADIUS", "MANIPULATION_VALLEY", "PROBE_SOUNDS",
    "PROBING_BOOTSTRAP", "PROBING_SOUNDS", "RECONSTRUCTION_OVERRIDES", "RECONSTRUCTION_STEPS", "RESULTS", "SEMANTIC_KEYS",
    "SEMANTIC_OVERRIDES", "STAGES", "STEPS", "SUMMARY_FILE", "TEST_SEED", "WORD_OVERRIDES", "WORKERS",
    "AutoencoderResult", "AutoencoderSummary", "ClassifierResult", "EvaluationResult", "LatentResult", "ProbingResult",
    "QuickstartResults", "SemanticResult", "SemdnnProbing", "StageRun", "StageSpec", "SynthResult", "TimedRun",
    "TrainedRun", "ae_classifier_part", "ae_finetune_part", "ae_reconstruction_part", "autoencoder_stage",
    "critical_order", "evaluate_stage", "planned_order", "glove_installed", "latent_stage", "probing_stage", "quickstart_summary",
    "run_quickstart", "run_stages", "semantic_stage", "semdnn_probing_part", "stage_specs", "stage_times",
    "synth_stage", "train_stage", "write_report",
]

STEPS = len(STAGES) + 1  # the stages, then the report
WORKERS = 2  # jobs at a time, each in its own process (the quickstart's target: 2 cores)
LOGS = "logs"  # under the quickstart's folder: each job's output when jobs run in parallel
# Each job's CPU seconds on one core (measured on a loaded 2-core machine, single-threaded: roughly its seconds on a
# quiet one), the estimates `planned_order` plans the run with: a job's real seconds may differ.
COSTS = {"synth": 15, "train": 80, "evaluate": 3, "semantic": 90, "ae-classifier": 75, "ae-reconstruction": 70,
         "ae-finetune": 85, "latent": 85, "probing-semdnn": 45, "probing-classifier": 30}
RESULTS = {"autoencoder": "ae-finetune", "probing": "probing-classifier"}  # the job whose result is the stage's (else
# the job of the stage's own key)


def stage_specs(out: Path, overrides: Sequence[str], tracking: str, clips_per_class: int, mn_epochs: int,
                ae_steps: int, latent_clips_per_class: int, flow_epochs: int) -> list[StageSpec]:
    """The quickstart's jobs with the jobs each needs and its arguments, made from their results: a job per stage
    (STAGES' keys), but the autoencoder stage in three (its classifier and its reconstruction need nothing of each
    other; `ae-finetune` needs both) and the probing stage in two (`probing-semdnn`, semDNN's half, needs only the
    semantic stage and the latent set, which the synth stage makes; `probing-classifier` the latent stage too)."""
    return [
        StageSpec("synth", "synthesizing the built-in impact-sound sets", (), synth_stage,
                  lambda r: (out, clips_per_class, latent_clips_per_class), COSTS["synth"]),
        StageSpec("train", "training the classifier task", ("synth",), train_stage,
                  lambda r: (out, r["synth"].manifest, tracking, tuple(overrides)), COSTS["train"]),
        StageSpec("evaluate", "evaluating and exporting", ("train",), evaluate_stage,
                  lambda r: (r["train"].run_dir, r["synth"].test_manifest), COSTS["evaluate"]),
        StageSpec("semantic", "semantic labels: semDNN, catDNN and the CAE, compared", ("synth",), semantic_stage,
                  lambda r: (out, r["synth"].manifest, r["synth"].test_manifest, tracking), COSTS["semantic"]),
        StageSpec("ae-classifier", "autoencoder: the robust 32 kHz classifier", ("synth",), ae_classifier_part,
                  lambda r: (out, r["synth"].manifest, tracking, mn_epochs), COSTS["ae-classifier"], "autoencoder"),
        StageSpec("ae-reconstruction", "autoencoder: the narrow autoencoder trained to reconstruct", ("synth",),
                  ae_reconstruction_part, lambda r: (out, r["synth"].manifest, tracking, ae_steps),
                  COSTS["ae-reconstruction"], "autoencoder"),
        StageSpec("ae-finetune", "autoencoder: fine-tuned through the classifier, before and after",
                  ("ae-classifier", "ae-reconstruction"), ae_finetune_part,
                  lambda r: (out, r["synth"].manifest, tracking, r["ae-classifier"], r["ae-reconstruction"], ae_steps),
                  COSTS["ae-finetune"], "autoencoder"),
        StageSpec("latent", "latent factors: extract the classifier's layers, decode, train the flow, manipulate",
                  ("evaluate",), latent_stage,
                  lambda r: (out, r["evaluate"].export_dir, tracking, latent_clips_per_class, flow_epochs),
                  COSTS["latent"]),
        StageSpec("probing-semdnn", "probing: semDNN's layers, their RSA, concept decompositions", ("semantic",),
                  semdnn_probing_part,
                  lambda r: (out, r["synth"].analysis_manifest, r["semantic"].runs["semdnn"], tracking),
                  COSTS["probing-semdnn"], "probing"),
        StageSpec("probing-classifier", "probing: the classifier's RSA, a transfer probe", ("latent", "probing-semdnn"),
                  probing_stage, lambda r: (out, r["latent"], r["probing-semdnn"], tracking), COSTS["probing-classifier"],
                  "probing"),
    ]


def stage_times(runs: dict[str, StageRun], specs: Sequence[StageSpec],
                ) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, list[str]]]:
    """Per stage (STAGES' keys): its jobs' seconds added up, the start of its first job (seconds after the run's
    start), its jobs' CPU seconds added up, and its jobs' keys in the order they started."""
    jobs: dict[str, list[str]] = {key: [] for key in STAGES}
    for spec in sorted(specs, key=lambda spec: runs[spec.key].started):
        jobs[spec.group].append(spec.key)
    seconds = {key: sum(runs[job].seconds for job in jobs[key]) for key in STAGES}
    first = {key: min(runs[job].started for job in jobs[key]) for key in STAGES}
    cpu = {key: sum(runs[job].cpu_seconds for job in jobs[key]) for key in STAGES}
    return seconds, first, cpu, jobs


def run_quickstart(out: Path = Path("runs/quickstart"), overrides: Sequence[str] = (), tracking: str = "wandb",
                   clips_per_class: int = 40, mn_epochs: int = AE_CLASSIFIER_EPOCHS, ae_steps: int = AE_STEPS,
                   latent_clips_per_class: int = LATENT_CLIPS_PER_CLASS, flow_epochs: int = FLOW_EPOCHS,
                   workers: int = WORKERS) -> Path:
    """Run every stage into `out` and write the report; returns the path of report.html (report.md and
    SUMMARY_FILE beside it). `overrides` apply to the first classifier stage; `clips_per_class` sizes the training
    set, `mn_epochs` and `ae_steps` the autoencoder stage, `latent_clips_per_class` and `flow_epochs` the latent
    stage. `tracking` is every run's tracking backend (wandb, none...). Up to `workers` jobs (`stage_specs`) run
    at a time (capped by the cores), each in its own process with its output in `out/logs/<job>.log`; 1: one after
    the other in this process, their progress on the console. The report gives each stage's seconds, when it ran
    and its CPU seconds, and the whole run's seconds."""
    started = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = stage_specs(out, overrides, tracking, clips_per_class, mn_epochs, ae_steps, latent_clips_per_class,
                        flow_epochs)
    workers = max(1, min(workers, cores()))
    runs = run_stages(specs, workers, out / LOGS, list(STAGES))
    print(f"[{STEPS}/{STEPS}] writing the report", flush=True)
    seconds, first, cpu, jobs = stage_times(runs, specs)
    parts = {key: {job: (runs[job].started, runs[job].seconds) for job in keys} for key, keys in jobs.items()
             if len(keys) > 1}
    stage = {key: runs[RESULTS.get(key, key)].result for key in STAGES}
    results = QuickstartResults(synth=stage["synth"], classifier=stage["train"], evaluation=stage["evaluate"],
                                semantic=stage["semantic"], autoencoder=stage["autoencoder"], latent=stage["latent"],
                                probing=stage["probing"], timings=seconds, total_seconds=time.time() - started,
                                started=first, cpu_seconds=cpu, workers=workers, parts=parts)
    report = write_report(out, results)
    run_dir, export_dir, synth = results.classifier.run_dir, results.evaluation.export_dir, results.synth
    logs = f"\n  logs        {(out / LOGS).resolve()}   (each job's output)" if workers > 1 else ""
    print(f"""
Done in {time.time() - started:.0f} s.
  report      {report.resolve()}
  report (md) {(out / 'report.md').resolve()}
  summary     {(out / SUMMARY_FILE).resolve()}   (the headline figures as numbers)
  run         {run_dir.resolve()}   (config.yaml, metrics.jsonl, checkpoints/, events.log)
  export      {export_dir.resolve()}   (load with audiointerp.load_export)
  data        {synth.manifest.parent.resolve()}{logs}
  W&B         {"offline files in " + str((run_dir / 'wandb').resolve()) + " (wandb sync to upload)" if (run_dir / 'wandb').exists() else tracking}
""", flush=True)
    return report
