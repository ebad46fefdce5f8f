from __future__ import annotations

import re
from pathlib import Path

from audiointerp.quickstart import run_quickstart


def test_quickstart_runs_every_stage_and_its_report_references_exist(tmp_path: Path) -> None:
    out = tmp_path / "quickstart"
    page = run_quickstart(out, overrides=["train.epochs=1", "model.params.widths=[4,8,8,16]", "train.progress=false"],
                          tracking="none", clips_per_class=5)
    markdown = (out / "report.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", markdown)
    figures = [t for t in targets if t.endswith(".png")]
    audio = [t for t in targets if t.endswith(".wav")]
    assert len(figures) == 6 and len(audio) >= 24 + 8  # classifier 3, semantic comparison 3
    for target in targets:
        assert (out / target).is_file(), target
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 6
    assert html.count("data:audio/wav;base64,") == len(audio)
    assert "held-out set" in markdown and "accuracy" in markdown
    assert "| quickstart-semdnn | validation |" in markdown and "| quickstart-catdnn | data-test |" in markdown
    run = next((out / "runs" / "quickstart-classifier").iterdir())
    assert (run / "export" / "model.safetensors").is_file()
    assert (run / "eval" / "held-out" / "metrics.json").is_file()
