"""The quickstart's report, written from its stages' results: `report.md`, a self-contained `report.html` (one
section per stage, the figures and clips they reference copied or left under the quickstart's folder) and
`summary.json` (the report's headline figures as numbers, for scripts and CI).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from audiointerp.datasets import load_manifest
from audiointerp.evaluation.listening import listening_rows
from audiointerp.evaluation.report import Audio, Report, metrics_table
from audiointerp.quickstart.stages import (
    LATENT_DECODE_INSTANCES,
    LATENT_SEED,
    MANIPULATION_RADIUS,
    MANIPULATION_VALLEY,
    PROBE_SOUNDS,
    PROBING_BOOTSTRAP,
    PROBING_SOUNDS,
    STAGES,
    AutoencoderResult,
    LatentResult,
    ProbingResult,
    QuickstartResults,
)
from audiointerp.train.checkpoint import write_json_atomic
from audiointerp.train.config import load_config
from audiointerp.train.export import load_export_task

SUMMARY_FILE = "summary.json"  # the report's headline figures as numbers, beside report.md
SEMANTIC_KEYS = ("ranking_score", "amcss@5", "amcss@10", "amcss@15", "macro_rdm_correlation", "examples")


def write_report(out: Path, results: QuickstartResults) -> Path:
    """Write `report.md`, `report.html` and SUMMARY_FILE into `out` from the stages' results; returns the path of
    report.html. The report's example and prediction clips are written under `out/audio`."""
    summary = quickstart_summary(results)
    page = _write_pages(out, results, summary["seconds"]["total"])
    write_json_atomic(out / SUMMARY_FILE, summary)
    return page


def _number(value: Any) -> Any:
    """A JSON number (NaN and infinities as null)."""
    value = float(value)
    return value if np.isfinite(value) else None


def quickstart_summary(results: QuickstartResults) -> dict[str, Any]:
    """The report's headline figures as numbers (`summary.json`): seconds per stage (`seconds`: STAGES' keys and
    `total`), the classifier (`classifier`), semDNN and catDNN (`semantic`: validation fold, `heldout` beside it,
    and each run's `resolved` word vectors and tie rule), the autoencoder before and after fine-tuning
    (`autoencoder`), the latent factors' best layers and manipulation tests (`latent`), and the probing results
    (`probing`). NaN and infinities are null."""
    valid, held_out = results.evaluation.valid, results.evaluation.held_out
    semantic: dict[str, Any] = {name: {"resolved": dict(notes)} for name, notes in results.semantic.resolved.items()}
    for row in results.semantic.comparison:
        name = str(row["model"]).removeprefix("quickstart-")
        figures = {key: _number(row[key]) for key in SEMANTIC_KEYS if key in row}
        if row.get("set") == "valid":
            semantic.setdefault(name, {}).update(figures)
        else:
            semantic.setdefault(name, {})["heldout"] = figures
    latent, probing = results.latent, results.probing
    decoding, flow = latent.decoding, latent.flow_metrics
    factors = list(decoding.best)
    return {
        "seconds": {**{key: round(float(results.timings[key]), 1) for key in STAGES if key in results.timings},
                    "total": round(float(results.total_seconds), 1)},
        "classifier": {"valid_accuracy": _number(valid["valid/accuracy"]),
                       "heldout_accuracy": _number(held_out["accuracy"]),
                       "valid_balanced_accuracy": _number(valid.get("valid/balanced_accuracy", float("nan"))),
                       "heldout_balanced_accuracy": _number(held_out.get("balanced_accuracy", float("nan")))},
        "semantic": semantic,
        "autoencoder": {key: _number(value) for key, value in asdict(results.autoencoder.summary).items()},
        "latent": {
            "best_layer": {factor: decoding.best[factor] for factor in factors},
            "best_layer_accuracy": {factor: _number(decoding.scores[factor][decoding.best[factor]].mean()) for factor in factors},
            "flow_layer": latent.best,
            "flow_knn": {f"{factor}@{block}": _number(flow.get(f"valid/knn_{factor}@{block}", float("nan")))
                         for factor in factors for block in ("residual", *factors, f"{factor}_coordinate")},
            "manipulation": [{"factor": t["factor"], "reference": t["reference"], "moved_to": t["moved_to"], "n": int(t["n"]),
                              "t": _number(t["t"]), "df": int(t["df"]), "p_bonferroni": _number(t["p_bonferroni"]),
                              "as_expected": bool(t["confirmed"])} for t in latent.manipulation.tests],
        },
        "probing": {
            "rsa_best": [{"model": Path(str(row["model"])).name, "target": row["target"], "layer": row["layer"],
                          "spearman": _number(row["spearman"]),
                          "spearman_low": _number(row.get("spearman_low", float("nan"))),
                          "spearman_high": _number(row.get("spearman_high", float("nan")))}
                         for row in _best_rsa(probing.rsa, by_name=True)],
            "probe": [{"layer": r["layer"], "split": r["split"], "accuracy": _number(r["accuracy"]), "chance": _number(r["chance"])}
                      for r in probing.probe],
            "concepts": [{"l1": _number(r["l1"]), "concepts_per_sound": _number(r["nonzero"]), "cosine": _number(r["cosine"]),
                          "sparse_accuracy": _number(r.get("sparse_accuracy", float("nan")))} for r in probing.concepts["rows"]],
            "concepts_dense_accuracy": _number(probing.concepts["dense_accuracy"]),
        },
    }


def _best_rsa(rows: list[dict[str, Any]], by_name: bool = False) -> list[dict[str, Any]]:
    """Per model and target, the RSA row (layer) of the highest Spearman correlation, in the order the pairs first
    appear; `by_name`: models told apart by their folder's name only."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (Path(str(row["model"])).name if by_name else str(row["model"]), str(row["target"]))
        if key not in best or row["spearman"] > best[key]["spearman"]:
            best[key] = row
    return list(best.values())


# --- the report ------------------------------------------------------------------------------------------------

def _write_pages(out: Path, results: QuickstartResults, total_seconds: float) -> Path:
    """report.md and report.html in `out`, a section per stage and the seconds each took; returns report.html."""
    report = Report(out, "audiointerp quickstart",
                    "The built-in synthetic impact sounds (6 materials x 4 actions), a small log-mel CNN trained on "
                    "them with the one Accelerate trainer, evaluated on the validation fold and on a held-out set "
                    "synthesized from another seed, then exported for analysis.")
    _classifier_sections(report, out, results)
    _semantic_section(report, results)
    _autoencoder_section(report, out, results.autoencoder)
    _latent_section(report, results.latent)
    _probing_section(report, results.probing)
    run_dir = results.classifier.run_dir
    export = report.section("Export", f"{run_dir / 'export'}: model.safetensors, config.yaml, labels.txt, "
                            "metrics.json and manifest.json (sha256 of every file). Load it with "
                            "audiointerp.load_export(path).")
    export.bullets += _timing_bullets(results)
    export.bullets.append(f"total: {total_seconds:.1f} s")
    _, page = report.write()
    return page


def _timing_bullets(results: QuickstartResults) -> list[str]:
    """How the stages ran, then one line per stage in the order they started: its seconds (a stage run as several
    jobs: theirs added up, each listed) and, where known, when it started and ended (seconds after the run's start)
    and its CPU seconds."""
    order = sorted(results.timings, key=lambda stage: results.started.get(stage, 0.0))
    lines = [f"jobs ran in {results.workers} processes, each starting once the jobs it needs had ended: stage times "
             "overlap, and the total is the wall time from start to report" if results.workers > 1
             else "stages ran one after the other in one process"]
    for stage in order:
        seconds = results.timings[stage]
        notes = []
        if stage in results.parts:
            notes.append(", ".join(f"{job} {length:.0f} s from {start:.0f} s"
                                    for job, (start, length) in results.parts[stage].items()))
        elif stage in results.started:
            notes.append(f"from {results.started[stage]:.0f} s to {results.started[stage] + seconds:.0f} s")
        if stage in results.cpu_seconds:
            notes.append(f"{results.cpu_seconds[stage]:.0f} CPU s")
        lines.append(f"{stage} ({STAGES.get(stage, stage)}): {seconds:.1f} s" + (f" ({'; '.join(notes)})" if notes else ""))
    return lines


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
    task, metadata = load_export_task(run_dir / "export")
    dataset = task.build_eval_data(str(task.cfg.data.source), str(task.cfg.data.format), list(task.cfg.data.valid_folds))
    rows: list[list[object]] = []
    rng = np.random.default_rng(0)
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


def _classifier_sections(report: Report, out: Path, results: QuickstartResults) -> None:
    """Data (one example per class), Training (curves, validation metrics) and Evaluation (validation fold against
    the held-out set, confusion matrices, predicted clips)."""
    manifest, cfg, run_dir = results.synth.manifest, results.classifier.cfg, results.classifier.run_dir
    valid, held_out = results.evaluation.valid, results.evaluation.held_out
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


def _semantic_section(report: Report, results: QuickstartResults) -> None:
    """semDNN against catDNN: the comparison's table and figures."""
    resolved, comparison = results.semantic.resolved, results.semantic.comparison
    comparison_dir = results.semantic.comparison_dir
    semantic = report.section(
        "Semantic labels: semDNN against catDNN and the CAE",
        f"The same narrow VGGish-like network trained on the descriptions' words: semDNN regresses the normalised mean "
        f"of their word vectors ({resolved['semdnn'].get('task.vectors', '?')}; the paper's figures need the pretrained "
        "300-d GoogleNews word2vec) with the angular distance, balanced over Ward clusters of the dictionary; catDNN "
        "has one sigmoid unit per dictionary word (BCE); the CAE is the same encoder with a mirrored decoder trained "
        "to reconstruct its log-mel patches (MSE), without words. All three are scored on whole clips (every 0.96 s "
        "example, averaged per sound). Ranking score (semDNN and catDNN): rank of the true words among the "
        "dictionary, 1 = top, 0.5 = chance; "
        f"semDNN by {resolved['semdnn'].get('ranking', '?')}; catDNN by {resolved['catdnn'].get('ranking', '?')}. "
        "AMCSS: best cosine similarity between each true word and the top-N predicted words. Macro RDM correlation "
        "(all three): Spearman correlation of the embedding layer's cosine RDM with the 0/1 RDM of material. Set: "
        "valid is the validation fold, external the held-out set synthesized with another seed.")
    semantic.tables.append((["model", "data", "set", *SEMANTIC_KEYS],
                            [[row["model"], row["data"], row.get("set", "?"), *(row.get(k, float("nan")) for k in SEMANTIC_KEYS)]
                             for row in comparison]))
    for figure, caption in (("ranking_score.png", "Ranking score per data set"), ("amcss.png", "AMCSS against top-N"),
                            ("rdms.png", "Embedding-layer RDMs (cosine), sounds sorted by material")):
        if (comparison_dir / figure).is_file():
            semantic.figures.append((comparison_dir / figure, caption))


def _autoencoder_section(report: Report, out: Path, stage: AutoencoderResult) -> None:
    """The classifier-gradient fine-tuning: how each run was set up, validation metrics before and after, a
    listening table (clips under `out/audio/autoencoder`) and the runs' figures."""
    cfg, pretrain, summary = stage.ae_cfg, stage.reconstruction_cfg, stage.summary
    before, after = stage.before.metrics, stage.after.metrics
    classifier = load_config(stage.classifier.run_dir / "config.yaml")
    rise = summary.accuracy_reconstruction_after - summary.accuracy_reconstruction_before
    section = report.section(
        "Classifier-gradient autoencoder fine-tuning",
        "The thesis' pipeline in kind (there: the ArchiSound hub autoencoder fine-tuned with MSE on ESC-50, then "
        "fine-tuned through a frozen EfficientAT classifier). Here, on the built-in set:\n\n"
        f"1. a classifier at 32 kHz ({classifier.model.name} on EfficientAT's mel front end, "
        f"{int(classifier.train.epochs)} epochs) trained to be robust (noise of spectral exponent "
        f"{list(classifier.task.noise_exponent)} at "
        f"{list(classifier.task.noise_snr_db)} dB SNR on {classifier.task.noise_prob:.0%} of the training clips) "
        f"reaches validation accuracy {stage.classifier.metrics.get('valid/accuracy', float('nan')):.3f};\n"
        f"2. a narrow ArchiSound autoencoder (channels {cfg.model.params.channels}, running at {cfg.task.ae_rate} Hz) "
        f"trained from a random start to reconstruct the clips (MSE + {pretrain.task.spectral_weight} x multi-resolution "
        f"STFT distance, {int(pretrain.train.max_steps)} updates of "
        f"{pretrain.data.batch_size} clips, AdamW lr {pretrain.optim.lr}) and exported: the `esc50`-style start;\n"
        f"3. from that export, fine-tuned through the frozen classifier (eval mode, no gradients) on its "
        f"cross-entropy on the reconstructions alone, for {int(cfg.train.max_steps)} updates of {cfg.data.batch_size} "
        f"clips (AdamW lr {cfg.optim.lr}).\n\n"
        f"On the validation fold the classifier recognises {summary.accuracy_original:.3f} of the originals and "
        f"{summary.accuracy_reconstruction_before:.3f} of the reconstructions before fine-tuning (SNR "
        f"{summary.snr_db_before:.1f} dB), {summary.accuracy_reconstruction_after:.3f} after ({rise:+.3f}; SNR "
        f"{summary.snr_db_after:.1f} dB). Chance is {1 / len(stage.classes):.3f}.")
    keys = ["accuracy_original", "accuracy_reconstruction", "accuracy_change", "ce_original", "ce_reconstruction",
            "snr_db", "mrstft_distance"]
    section.tables.append((["validation metric", "before fine-tuning", "after fine-tuning"],
                           [[k, before.get(f"valid/{k}", float("nan")), after.get(f"valid/{k}", float("nan"))] for k in keys]))
    section.bullets += [f"{step}: {value:.1f} s" for step, value in stage.seconds.items()]
    section.tables.append(listening_rows([stage.before.export, stage.after.export], out / "audio" / "autoencoder",
                                         labels=["before fine-tuning", "after fine-tuning"]))
    for run, figure, caption in ((stage.after.run_dir, "spectrograms.png", "Mel spectrograms (the classifier's front end): "
                                  "originals and reconstructions after fine-tuning"),
                                 (stage.after.run_dir, "learning_curves.png", "Autoencoder fine-tuning curves"),
                                 (stage.classifier.run_dir, "learning_curves.png", "Classifier training curves")):
        if (run / "figures" / figure).is_file():
            section.figures.append((run / "figures" / figure, caption))


def _latent_section(report: Report, stage: LatentResult) -> None:
    """Per-layer decoding, the flow's factor blocks and the manipulation's tests (when it found any triplets)."""
    store, decoding, best = stage.store, stage.decoding, stage.best
    cfg, metrics, manipulation, folder = stage.flow_cfg, stage.flow_metrics, stage.manipulation, stage.folder
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
    section.figures.append((stage.flow_run / "figures" / "factor_coordinates.png",
                            "The flow's material and action coordinates (each block on the axis along which its class "
                            "means spread most on training clips), validation clips (cf. the paper's Fig. 1)"))
    section.figures.append((stage.flow_run / "figures" / "learning_curves.png", "Flow training curves"))
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


def _probing_section(report: Report, stage: ProbingResult) -> None:
    """RSA (best layer per model and target), the transfer probe, and semDNN's concept decompositions."""
    folder, concepts, settings = stage.folder, stage.concepts, stage.concept_settings
    section = report.section(
        "Probing: RSA, transfer probes, concepts",
        f"RSA (Bost et al. 2024): cosine RDMs of every layer of the classifier and of semDNN over {PROBING_SOUNDS} of "
        "the latent stage's clips, against the 0/1 ground-truth RDMs of material and of action (Spearman, bootstrap "
        f"95 % intervals over sounds, {PROBING_BOOTSTRAP} resamples). Probe: on {PROBE_SOUNDS} of those clips, L2 logistic "
        "regression per classifier layer, C by inner cross-validation, trained on tapping and rubbing and tested on whirling and destructing, "
        "against a random split of the same sizes (no transfer) and the majority class (chance). Concepts (Zhang, "
        f"Thomaz & Lu 2025): semDNN's output decomposed over the {stage.vocabulary_size} concepts of the shipped "
        "vocabulary that its own dictionary can embed.")
    section.figures.append((folder / "rsa" / "rsa.png", "RDM correlation against relative layer depth"))
    section.tables.append((["model", "target", "best layer", "Spearman", "95 % interval"],
                           [[Path(str(r["model"])).name, r["target"], r["layer"], r["spearman"],
                             f"[{r.get('spearman_low', float('nan')):.3f}, {r.get('spearman_high', float('nan')):.3f}]"]
                            for r in _best_rsa(stage.rsa)]))
    section.figures.append((folder / "probe" / "probe.png", "Material probe: transfer across actions"))
    section.tables.append((["layer", "split", "accuracy", "chance"],
                           [[r["layer"], r["split"], r["accuracy"], r["chance"]] for r in stage.probe]))
    section.figures.append((folder / "concepts" / "concepts.png", "Concepts: reconstruction against sparsity, and a "
                            "material probe on the sparse weights against the dense output"))
    paths = stage.semdnn_store.column("path")
    materials, actions = stage.semdnn_store.column("material"), stage.semdnn_store.column("action")
    shown = np.linspace(0, len(concepts["top"]) - 1, 8).astype(int)
    rows = [(concepts["sounds"][k], concepts["top"][k]) for k in shown]
    section.tables.append((["sound", "material", "action", f"top concepts (l1 {settings.report_l1})"],
                           [[Path(paths[i]).name, materials[i], actions[i],
                             ", ".join(f"{name} ({weight:.2f})" for name, weight in top)] for i, top in rows]))
    sweep = concepts["rows"]
    section.tables.append((["l1", "concepts per sound", "reconstruction cosine", "material accuracy (sparse)"],
                           [[r["l1"], r["nonzero"], r["cosine"], r.get("sparse_accuracy", float("nan"))] for r in sweep]
                           + [["dense output (no decomposition)", "-", 1.0, concepts["dense_accuracy"]]]))
