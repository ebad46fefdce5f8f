from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiointerp.evaluation.plots import confusion_figure, save_figure
from audiointerp.evaluation.report import Audio, Report, metrics_table


def test_report_writes_markdown_with_relative_links_and_self_contained_html(tmp_path: Path) -> None:
    figure = save_figure(confusion_figure(np.eye(3, dtype=int) * 4, ["a", "b", "c"]), tmp_path / "figs" / "cm.png")
    clip = tmp_path / "audio" / "x.wav"
    clip.parent.mkdir()
    sf.write(clip, np.zeros(800, dtype=np.float32), 8000)
    report = Report(tmp_path, "Title", "Intro text.")
    section = report.section("Results", "Some <b>text</b>.")
    section.figures.append((figure, "confusion"))
    section.tables.append(metrics_table({"accuracy": 0.5, "loss": 1.25}))
    section.tables.append((["clip"], [[Audio(clip, "silence")]]))
    md, page = report.write()
    text = md.read_text()
    assert "![confusion](figs/cm.png)" in text and "[silence](audio/x.wav)" in text and "| accuracy | 0.5000 |" in text
    html = page.read_text()
    assert "data:image/png;base64," in html and "data:audio/wav;base64," in html
    assert "&lt;b&gt;text&lt;/b&gt;" in html  # text is escaped
    assert set(report.referenced_files()) == {figure.resolve(), clip.resolve()} or len(report.referenced_files()) == 2


def test_report_refuses_missing_files(tmp_path: Path) -> None:
    report = Report(tmp_path, "T")
    report.section("S").figures.append((tmp_path / "nope.png", "x"))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        report.write()
