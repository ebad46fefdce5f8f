from __future__ import annotations

import re
from pathlib import Path

import pytest

from audiointerp.datasets.synth import synthesize
from audiointerp.quickstart import AE_STEPS, MN_EPOCHS, autoencoder_stage, run_quickstart


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
    for name in ("quickstart-mn", "quickstart-ae-before", "quickstart-ae-after"):
        assert (next((out / "runs" / name).iterdir()) / "export" / "manifest.json").is_file(), name
    assert "Latent factors" in markdown and "| material |" in markdown
    assert "Probing: RSA, transfer probes, concepts" in markdown and "| transfer |" in markdown
    assert (out / "probing" / "concepts" / "top_concepts.csv").is_file()
    assert (out / "store" / "store.json").is_file() and (out / "latent" / "decoding" / "decoding.csv").is_file()
    assert (next((out / "runs" / "quickstart-flow").iterdir()) / "export" / "arrays.safetensors").is_file()
    run = next((out / "runs" / "quickstart-classifier").iterdir())
    assert (run / "export" / "model.safetensors").is_file()
    assert (run / "eval" / "held-out" / "metrics.json").is_file()


@pytest.mark.slow
def test_fine_tuning_through_the_narrow_mn_raises_its_accuracy_on_reconstructions(tmp_path: Path) -> None:
    """The quickstart's autoencoder stage at its real size (about 5 minutes on 2 cores)."""
    manifest = synthesize(tmp_path / "data", clips_per_class=40, seed=0, progress=False)
    stage = autoencoder_stage(tmp_path, manifest, "none", MN_EPOCHS, AE_STEPS)
    assert stage["mn_metrics"]["valid/accuracy"] > 0.5
    before, after = stage["before_metrics"], stage["after_metrics"]
    assert after["valid/accuracy_reconstruction"] > before["valid/accuracy_reconstruction"] + 0.03
