from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from audiointerp.datasets.synth import synthesize
from audiointerp.quickstart import AE_STEPS, MN_EPOCHS, RECONSTRUCTION_STEPS, autoencoder_stage, run_quickstart


def test_quickstart_runs_every_stage_and_its_report_references_exist(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    page = run_quickstart(out, overrides=["train.epochs=1", "model.params.widths=[4,8,8,16]", "train.progress=false"],
                          tracking="none", clips_per_class=5, mn_epochs=1, ae_steps=2, latent_clips_per_class=5,
                          flow_epochs=2)
    markdown = (out / "report.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", markdown)
    figures = [t for t in targets if t.endswith(".png")]
    audio = [t for t in targets if t.endswith(".wav")]
    manipulated = (out / "latent" / "manipulation" / "manipulation.png").is_file()  # tiny, untrained: maybe no triplets
    # classifier 3, semantic comparison 3, autoencoder 3, latent: decoding, scatter, flow curves (and the bars),
    # probing: RSA, probe, concepts
    assert len(figures) == 15 + manipulated
    assert len(audio) >= 24 + 8 + 6 * 3  # classes, predictions, listening (original, before, after)
    for target in targets:
        assert (out / target).is_file(), target
    html = page.read_text()
    assert html.count("data:image/png;base64,") == len(figures)
    assert html.count("data:audio/wav;base64,") == len(audio)
    assert "held-out set" in markdown and "accuracy" in markdown
    assert "| quickstart-semdnn | validation |" in markdown and "| quickstart-catdnn | data-test |" in markdown
    assert "Classifier-gradient autoencoder fine-tuning" in markdown and "| accuracy_reconstruction |" in markdown
    for name in ("quickstart-ae-classifier", "quickstart-ae-reconstruction", "quickstart-ae-before", "quickstart-ae-after"):
        assert (next((out / "runs" / name).iterdir()) / "export" / "manifest.json").is_file(), name
    assert "Latent factors" in markdown and "| material |" in markdown
    assert "Probing: RSA, transfer probes, concepts" in markdown and "| transfer |" in markdown
    assert (out / "probing" / "concepts" / "top_concepts.csv").is_file()
    assert (out / "store" / "store.json").is_file() and (out / "latent" / "decoding" / "decoding.csv").is_file()
    assert (next((out / "runs" / "quickstart-flow").iterdir()) / "export" / "arrays.safetensors").is_file()
    run = next((out / "runs" / "quickstart-classifier").iterdir())
    assert (run / "export" / "model.safetensors").is_file()
    assert (run / "eval" / "held-out" / "metrics.json").is_file()


def test_the_autoencoder_stage_fine_tunes_the_reconstruction_export_and_is_deterministic(tmp_path: Path) -> None:
    """Tiny sizes: the stage's "before" run starts from the reconstruction run's export (task.start=esc50), its
    summary holds the validation metrics, and a second run with the same seed gives the same numbers."""
    from safetensors.torch import load_file

    manifest = synthesize(tmp_path / "data", clips_per_class=5, seed=0, progress=False)
    stages = [autoencoder_stage(tmp_path / name, manifest, "none", mn_epochs=1, ae_steps=2) for name in ("a", "b")]
    stage = stages[0]
    assert stage["ae_cfg"].task.start == "esc50" and stage["reconstruction_cfg"].task.name == "reconstruction"
    assert int(stage["reconstruction_cfg"].train.max_steps) == round(RECONSTRUCTION_STEPS * 2 / AE_STEPS)
    pretrained = load_file(str(stage["reconstruction_export"] / "model.safetensors"))
    before = load_file(str(stage["before_export"] / "model.safetensors"))
    after = load_file(str(stage["after_export"] / "model.safetensors"))
    assert before.keys() == pretrained.keys() and all(torch.equal(before[k], pretrained[k]) for k in pretrained)
    assert any(not torch.equal(after[k], pretrained[k]) for k in pretrained)
    summary = stage["summary"]
    assert set(summary) == {"accuracy_original", "accuracy_reconstruction_before", "accuracy_reconstruction_after",
                            "snr_db_before", "snr_db_after"}
    assert summary["accuracy_reconstruction_before"] == stage["before_metrics"]["valid/accuracy_reconstruction"]
    assert summary["snr_db_after"] == stage["after_metrics"]["valid/snr_db"]
    assert stages[1]["summary"] == summary


@pytest.mark.slow
def test_fine_tuning_through_the_robust_classifier_raises_its_accuracy_on_reconstructions(tmp_path: Path) -> None:
    """The quickstart's autoencoder stage at its real size (about 4 minutes on 2 free cores), on the validation
    fold: the issue's thresholds (originals >= 0.85; SNR before > 0 dB; reconstructions before >= 0.25, chance being
    1/24; after at least 0.10 above before)."""
    manifest = synthesize(tmp_path / "data", clips_per_class=40, seed=0, progress=False)
    summary = autoencoder_stage(tmp_path, manifest, "none", MN_EPOCHS, AE_STEPS)["summary"]
    assert summary["accuracy_original"] >= 0.85
    assert summary["snr_db_before"] > 0.0
    assert summary["accuracy_reconstruction_before"] >= 0.25
    assert summary["accuracy_reconstruction_after"] >= summary["accuracy_reconstruction_before"] + 0.10
