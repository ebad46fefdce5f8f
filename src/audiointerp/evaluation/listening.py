"""The listening page: for each clip, the original and each autoencoder's reconstruction side by side.

Autoencoder exports (`ae_finetune`, `reconstruction`) hold their fixed validation clips in `listening/`
(`<class>_<index>_original.wav`, `..._reconstruction.wav` and `clips.csv`). `listening_rows` lines up several
exports (e.g. the autoencoder fine-tuned through MN, DyMN and PaSST, and the one before fine-tuning) clip by clip;
`listening_page` writes them as a report with audio players, like the reference's samples page.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

from omegaconf import OmegaConf

from audiointerp.errors import AudioInterpError
from audiointerp.evaluation.report import Audio, Report

LISTENING_DIR = "listening"


def export_label(export_dir: Path) -> str:
    """A column name for an export: the frozen classifier's name for `ae_finetune`, else the experiment."""
    cfg = OmegaConf.load(Path(export_dir) / "config.yaml")  # an export's resolved config: plain data
    if str(cfg.task.name) != "ae_finetune":
        return str(cfg.experiment)
    classifier = Path(str(cfg.task.classifier))
    if (classifier / "config.yaml").is_file():  # an export of this project: its network's name
        return f"through {OmegaConf.load(classifier / 'config.yaml').model.name}"
    return f"through {cfg.task.classifier}"


def read_clips(export_dir: Path) -> list[dict[str, str]]:
    """The rows of an export's `listening/clips.csv`."""
    path = Path(export_dir) / LISTENING_DIR / "clips.csv"
    if not path.is_file():
        manifest = Path(export_dir) / "manifest.json"
        task = json.loads(manifest.read_text()).get("task") if manifest.is_file() else None
        raise AudioInterpError(f"{export_dir} has no {LISTENING_DIR}/clips.csv: it is not an autoencoder export "
                               f"(task {task!r}), or its validation data was missing when it was exported")
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def listening_rows(exports: Sequence[Path], out: Path, labels: Optional[Sequence[str]] = None) -> tuple[list[str], list[list[object]]]:
    """A table (header, rows): class, index, original, then per export its reconstruction and the frozen
    classifier's prediction on it. WAV files are copied under `out/audio/` so the table stays valid on its own."""
    exports = [Path(e) for e in exports]
    if not exports:
        raise AudioInterpError("no exports to listen to")
    labels = list(labels) if labels else [export_label(e) for e in exports]
    if len(labels) != len(exports):
        raise AudioInterpError(f"{len(labels)} labels for {len(exports)} exports")
    clips = [{(row["index"], row["class"]): row for row in read_clips(e)} for e in exports]
    shared = [key for key in clips[0] if all(key in c for c in clips[1:])]
    if not shared:
        raise AudioInterpError("the exports share no listening clip: were they trained on the same validation data?")
    header = ["class", "index", "original"]
    for label in labels:
        header += [label, "predicted"]
    rows: list[list[object]] = []
    for n, key in enumerate(shared):
        index, name = key
        row: list[object] = [name, int(index), Audio(_copy(exports[0], clips[0][key]["original"], out / "audio" / "original"), "original")]
        for e, (export, table) in enumerate(zip(exports, clips)):
            clip = table[key]
            path = _copy(export, clip["reconstruction"], out / "audio" / f"{e}-{_slug(labels[e])}")
            predicted = clip.get("predicted_reconstruction") or "-"
            before = clip.get("predicted_original")
            row += [Audio(path, labels[e]), predicted if not before else f"{predicted} (original: {before})"]
        rows.append(row)
    return header, rows


def listening_page(exports: Sequence[Path], out: Path, labels: Optional[Sequence[str]] = None,
                   title: str = "Listening: originals and reconstructions") -> Path:
    """Write `out/report.html` (self-contained) and `out/report.md`; returns the HTML page."""
    out = Path(out)
    header, rows = listening_rows(exports, out, labels)
    report = Report(out, title, "The same validation clips through each autoencoder. Predictions are the frozen "
                    "classifier's on the reconstruction, with its prediction on the original in brackets.")
    section = report.section("Clips", "\n".join(f"{label}: {export}" for label, export in
                                                zip(header[3::2], exports)))
    section.tables.append((header, rows))
    _, page = report.write()
    return page


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-") or "export"


def _copy(export: Path, name: str, folder: Path) -> Path:
    source = export / LISTENING_DIR / name
    if not source.is_file():
        raise AudioInterpError(f"{source} is listed in clips.csv but missing")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    shutil.copyfile(source, target)
    return target
