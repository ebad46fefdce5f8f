"""Readers of official dataset layouts; each returns a :class:`~audiointerp.datasets.manifest.Manifest`.

ESC-50
    ``<root>/meta/esc50.csv`` (filename, fold, target, category, esc10, src_file, take) and
    ``<root>/audio/<filename>``. label = category, fold = fold, description = category with "_" -> " ",
    factors target, esc10, src_file, take. Classes are declared in ``target`` order.

UrbanSound8K
    ``<root>/metadata/UrbanSound8K.csv`` (slice_file_name, fsID, start, end, salience, fold, classID, class)
    and ``<root>/audio/fold<fold>/<slice_file_name>``. label = class, fold = fold, factors fsID, start, end,
    salience, classID. Classes are declared in ``classID`` order.

FSD50K
    ``<root>/FSD50K.ground_truth/{dev.csv, eval.csv, vocabulary.csv}`` with audio in
    ``<root>/FSD50K.dev_audio/<fname>.wav`` and ``<root>/FSD50K.eval_audio/<fname>.wav``. ``dev.csv`` has
    fname, labels, mids, split (train/val); ``eval.csv`` has fname, labels, mids; ``vocabulary.csv`` has no
    header (index, label, mid). Multi-label: ``labels`` is split on ",". fold = train / val / eval; factor
    ``mids``. Classes are declared in vocabulary order. Either of dev.csv / eval.csv may be absent.

MSOS (Making Sense of Sounds data challenge, 2018)
    Facts found in public code that reads the released archives (no official README was reachable here):
    the development archive ``MSoS_challenge_2018_Development_v1-00`` holds ``Logsheet_Development.csv``
    with header ``Category,Event,File`` and the audio in ``Development/<Category>/<File>``; the evaluation
    set holds its audio flat in ``Evaluation/<File>`` and, once its labels were released,
    ``Logsheet_EvaluationMaster.csv`` with (at least) ``File`` and ``Category`` columns; the unlabelled
    ``Logsheet_Evaluation.csv`` lists ``File`` only. Categories are Effects, Human, Music, Nature, Urban.
    Unconfirmed details are handled as variants: the logsheets may sit in ``<root>`` or one folder below it
    (e.g. the extracted archive folders side by side); column names are matched case-insensitively; a
    logsheet without a header is read as Category, Event, File; each file is looked up in
    ``<split dir>/<Category>/<File>`` and then ``<split dir>/<File>``, where the split dir is
    ``Development`` / ``Evaluation`` next to the logsheet or the logsheet's own folder. A logsheet without a
    category column is unlabelled and ignored. label = macro category, fold = development / evaluation,
    factor ``event`` (empty when the logsheet has no event column), description = event.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from audiointerp.datasets.manifest import FORMATS, Manifest, ManifestRow, read_manifest
from audiointerp.downloads import resolve_data
from audiointerp.errors import DatasetError

__all__ = [
    "LAYOUT_HINTS",
    "READERS",
    "detect_format",
    "read_esc50",
    "read_fsd50k",
    "read_msos",
    "read_urbansound8k",
    "root_of_metadata_file",
]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".mp3")

LAYOUT_HINTS = {
    "esc50": "meta/esc50.csv and audio/*.wav",
    "urbansound8k": "metadata/UrbanSound8K.csv and audio/fold1..fold10/*.wav",
    "fsd50k": "FSD50K.ground_truth/{dev,eval,vocabulary}.csv, FSD50K.dev_audio/, FSD50K.eval_audio/",
    "msos": "Logsheet_Development.csv with Development/<Category>/*.wav "
    "(or Logsheet_EvaluationMaster.csv with Evaluation/*.wav)",
    "manifest": "manifest.csv (columns path, label, ...)",
}


def _require_file(path: Path, fmt: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{fmt} layout: missing {str(path)!r} (expected {LAYOUT_HINTS[_key(fmt)]})")


def _require_dir(path: Path, fmt: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{fmt} layout: missing folder {str(path)!r} (expected {LAYOUT_HINTS[_key(fmt)]})")


def _key(fmt: str) -> str:
    return fmt.lower().replace("-", "").replace("_", "")


def _table(path: Path, required: tuple[str, ...], fmt: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (row number, {column: stripped value}) of a CSV with a header; check required columns/values."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        for col in required:
            if col not in header:
                raise DatasetError(f"{fmt} metadata {str(path)!r}: missing column {col!r} (header: {header})")
        reader.fieldnames = header
        for number, raw in enumerate(reader, start=1):
            row = {k: (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(row.values()):
                continue
            for col in required:
                if not row.get(col):
                    raise DatasetError(f"{fmt} metadata {str(path)!r}, row {number}: empty value in column {col!r}")
            yield number, row


def _ordered_classes(pairs: dict[int, str]) -> tuple[str, ...]:
    return tuple(pairs[k] for k in sorted(pairs))


def _add_class(pairs: dict[int, str], index: str, name: str, path: Path, number: int, fmt: str, col: str) -> None:
    try:
        k = int(index)
    except ValueError:
        raise DatasetError(f"{fmt} metadata {str(path)!r}, row {number}: {col} {index!r} is not an integer") from None
    if pairs.setdefault(k, name) != name:
        raise DatasetError(
            f"{fmt} metadata {str(path)!r}, row {number}: {col} {k} is {name!r} here but {pairs[k]!r} earlier"
        )


def read_esc50(root: str | os.PathLike[str]) -> Manifest:
    """Read the official ESC-50 layout."""
    root = Path(root)
    meta = root / "meta" / "esc50.csv"
    _require_file(meta, "ESC-50")
    _require_dir(root / "audio", "ESC-50")
    factor_names = ("target", "esc10", "src_file", "take")
    rows, pairs = [], {}
    for number, r in _table(meta, ("filename", "fold", "target", "category"), "ESC-50"):
        _add_class(pairs, r["target"], r["category"], meta, number, "ESC-50", "target")
        rows.append(
            ManifestRow(
                path=f"audio/{r['filename']}",
                labels=(r["category"],),
                description=r["category"].replace("_", " "),
                fold=r["fold"],
                factors={f: r.get(f, "") for f in factor_names},
            )
        )
    if not rows:
        raise DatasetError(f"ESC-50 metadata {str(meta)!r} has no rows")
    return Manifest(root, rows, factor_names, _ordered_classes(pairs), source=str(meta))


def read_urbansound8k(root: str | os.PathLike[str]) -> Manifest:
    """Read the official UrbanSound8K layout."""
    root = Path(root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    _require_file(meta, "UrbanSound8K")
    _require_dir(root / "audio", "UrbanSound8K")
    factor_names = ("fsID", "start", "end", "salience", "classID")
    rows, pairs = [], {}
    for number, r in _table(meta, ("slice_file_name", "fold", "classID", "class"), "UrbanSound8K"):
        _add_class(pairs, r["classID"], r["class"], meta, number, "UrbanSound8K", "classID")
        rows.append(
            ManifestRow(
                path=f"audio/fold{r['fold']}/{r['slice_file_name']}",
                labels=(r["class"],),
                description=r["class"].replace("_", " "),
                fold=r["fold"],
                factors={f: r.get(f, "") for f in factor_names},
            )
        )
    if not rows:
        raise DatasetError(f"UrbanSound8K metadata {str(meta)!r} has no rows")
    return Manifest(root, rows, factor_names, _ordered_classes(pairs), source=str(meta))


def _fsd50k_vocabulary(path: Path) -> tuple[str, ...]:
    pairs: dict[int, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for number, values in enumerate(csv.reader(fh), start=1):
            if not any(v.strip() for v in values):
                continue
            if len(values) < 2:
                raise DatasetError(f"FSD50K vocabulary {str(path)!r}, row {number}: expected index,label,mid")
            index, label = values[0].strip(), values[1].strip()
            if number == 1 and not index.isdigit():
                continue  # tolerate a header line
            _add_class(pairs, index, label, path, number, "FSD50K", "index")
    if not pairs:
        raise DatasetError(f"FSD50K vocabulary {str(path)!r} is empty")
    return tuple(pairs[k] for k in sorted(pairs))


def read_fsd50k(root: str | os.PathLike[str]) -> Manifest:
    """Read the official FSD50K layout (multi-label)."""
    root = Path(root)
    gt = root / "FSD50K.ground_truth"
    _require_dir(gt, "FSD50K")
    vocab_path = gt / "vocabulary.csv"
    _require_file(vocab_path, "FSD50K")
    vocabulary = _fsd50k_vocabulary(vocab_path)
    known = set(vocabulary)
    dev, ev = gt / "dev.csv", gt / "eval.csv"
    if not dev.is_file() and not ev.is_file():
        raise DatasetError(f"FSD50K layout: missing {str(dev)!r} and {str(ev)!r} (expected {LAYOUT_HINTS['fsd50k']})")
    rows: list[ManifestRow] = []
    for meta, audio_dir, default_fold in ((dev, "FSD50K.dev_audio", "train"), (ev, "FSD50K.eval_audio", "eval")):
        if not meta.is_file():
            continue
        _require_dir(root / audio_dir, "FSD50K")
        for number, r in _table(meta, ("fname", "labels"), "FSD50K"):
            labels = tuple(dict.fromkeys(s.strip() for s in r["labels"].split(",") if s.strip()))
            for lab in labels:
                if lab not in known:
                    raise DatasetError(
                        f"FSD50K metadata {str(meta)!r}, row {number}: label {lab!r} is not in {str(vocab_path)!r}"
                    )
            fold = (r.get("split") or default_fold) if meta is dev else "eval"
            rows.append(
                ManifestRow(
                    path=f"{audio_dir}/{r['fname']}.wav",
                    labels=labels,
                    description=", ".join(lab.replace("_", " ") for lab in labels),
                    fold=fold,
                    factors={"mids": r.get("mids", "")},
                )
            )
    if not rows:
        raise DatasetError(f"FSD50K ground truth in {str(gt)!r} has no rows")
    return Manifest(root, rows, ("mids",), vocabulary, source=str(gt))


# --- MSOS --------------------------------------------------------------------------------------

_MSOS_SPLITS = (
    ("development", ("logsheet_development.csv",)),
    ("evaluation", ("logsheet_evaluationmaster.csv", "logsheet_evaluation.csv")),
)


def _csv_files(folder: Path) -> dict[str, Path]:
    try:
        return {p.name.lower(): p for p in folder.iterdir() if p.suffix.lower() == ".csv" and p.is_file()}
    except OSError:
        return {}


def _subdir(folder: Path, name: str) -> Path | None:
    """``folder/name`` matched case-insensitively, or None."""
    exact = folder / name
    if exact.is_dir():
        return exact
    try:
        for p in folder.iterdir():
            if p.name.lower() == name.lower() and p.is_dir():
                return p
    except OSError:
        pass
    return None


def _msos_sheets(root: Path) -> list[tuple[str, Path]]:
    """(fold, logsheet) pairs found in ``root`` or one folder below it."""
    folders = [root]
    try:
        folders += sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        pass
    listing = [(folder, _csv_files(folder)) for folder in folders]
    found = []
    for fold, names in _MSOS_SPLITS:
        for name in names:
            hits = [files[name] for _, files in listing if name in files]
            if hits:
                found.append((fold, hits[0]))
                break
    return found


def _read_logsheet(path: Path) -> tuple[list[tuple[int, str, str, str]], bool] | None:
    """Rows (number, category, event, file) of a logsheet and whether it had an event column.

    Returns None for an unlabelled logsheet (no category column).
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        table = [row for row in csv.reader(fh) if any(v.strip() for v in row)]
    if not table:
        raise DatasetError(f"MSOS logsheet {str(path)!r} is empty")
    first = [v.strip() for v in table[0]]
    lower = [v.lower() for v in first]
    if "file" in lower:
        if "category" not in lower:
            return None
        ci, fi = lower.index("category"), lower.index("file")
        ei = lower.index("event") if "event" in lower else None
        body, start = table[1:], 2
    elif len(first) >= 3 and first[2].lower().endswith(AUDIO_SUFFIXES):
        ci, ei, fi = 0, 1, 2  # headerless: Category, Event, File
        body, start = table, 1
    else:
        raise DatasetError(
            f"MSOS logsheet {str(path)!r}: expected columns Category, Event, File (header found: {first})"
        )
    rows = []
    for number, values in enumerate(body, start=start):
        cells = [v.strip() for v in values]
        cat, event, name = (cells[k] if k is not None and k < len(cells) else "" for k in (ci, ei, fi))
        if not name:
            raise DatasetError(f"MSOS logsheet {str(path)!r}, line {number}: empty value in column 'File'")
        if not cat:
            raise DatasetError(f"MSOS logsheet {str(path)!r}, line {number}: empty value in column 'Category'")
        rows.append((number, cat, event, name))
    return rows, ei is not None


def read_msos(root: str | os.PathLike[str]) -> Manifest:
    """Read the Making Sense of Sounds challenge layout (see the module docstring for the variants)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"MSOS layout: {str(root)!r} is not a folder (expected {LAYOUT_HINTS['msos']})")
    rows: list[ManifestRow] = []
    sources = []
    for fold, sheet in _msos_sheets(root):
        parsed = _read_logsheet(sheet)
        if parsed is None:
            continue
        entries, _ = parsed
        split_folder = "Development" if fold == "development" else "Evaluation"
        bases = [b for b in (_subdir(sheet.parent, split_folder), sheet.parent) if b is not None]
        sources.append(str(sheet))
        for _, cat, event, name in entries:
            candidates = [p for b in bases for p in (b / cat / name, b / name)]
            chosen = next((p for p in candidates if p.is_file()), candidates[0])
            rows.append(
                ManifestRow(
                    path=Path(os.path.relpath(chosen, root)).as_posix(),
                    labels=(cat,),
                    description=event or cat,
                    fold=fold,
                    factors={"event": event},
                )
            )
    if not rows:
        raise DatasetError(
            f"MSOS layout: no labelled logsheet in {str(root)!r} or one folder below it "
            f"(expected {LAYOUT_HINTS['msos']}; Logsheet_Evaluation.csv without a Category column has no labels)"
        )
    classes = tuple(sorted({r.labels[0] for r in rows}))
    return Manifest(root, rows, ("event",), classes, source="; ".join(sources))


READERS: dict[str, Callable[[Path], Manifest]] = {
    "esc50": read_esc50,
    "urbansound8k": read_urbansound8k,
    "fsd50k": read_fsd50k,
    "msos": read_msos,
}


def detect_format(root: Path) -> str | None:
    """Name of the official layout found in ``root`` (or ``"manifest"`` for a manifest.csv), else None."""
    root = Path(root)
    if (root / "meta" / "esc50.csv").is_file():
        return "esc50"
    if (root / "metadata" / "UrbanSound8K.csv").is_file():
        return "urbansound8k"
    if (root / "FSD50K.ground_truth").is_dir():
        return "fsd50k"
    if _msos_sheets(root):
        return "msos"
    if (root / "manifest.csv").is_file():
        return "manifest"
    return None


def root_of_metadata_file(path: Path, fmt: str | None) -> tuple[str, Path] | None:
    """(format, dataset root) for an official metadata file such as ``meta/esc50.csv``, else None."""
    path = Path(path)
    name, parent = path.name.lower(), path.parent
    if name == "esc50.csv" and parent.name == "meta":
        found = ("esc50", parent.parent)
    elif name == "urbansound8k.csv" and parent.name == "metadata":
        found = ("urbansound8k", parent.parent)
    elif parent.name == "FSD50K.ground_truth":
        found = ("fsd50k", parent.parent)
    elif name.startswith("logsheet_"):
        found = ("msos", parent)
    else:
        return None
    if fmt is not None and found[0] != fmt:
        return None
    return found


def _is_generic_csv(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except OSError:
        return False
    return "path" in header and "label" in header


def load_manifest(source: str | os.PathLike[str], format: str = "auto") -> Manifest:
    """Load a manifest CSV or an official dataset root.

    ``format`` is one of ``auto``, ``manifest``, ``esc50``, ``urbansound8k``, ``fsd50k``, ``msos``.
    ``auto`` reads a CSV in the generic format (or an official metadata CSV such as ``meta/esc50.csv``),
    and for a directory detects the official layout from the files present (or a ``manifest.csv`` in it).
    ``data:NAME`` (e.g. ``data:esc50``) is that data set's folder in the data cache, downloaded on first use unless
    ``AUDIOINTERP_OFFLINE=1`` (``audiointerp data fetch NAME``).
    """
    fmt = str(format).lower().replace("-", "").replace("_", "")
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; valid formats: {list(FORMATS)}")
    src = Path(resolve_data(source)).expanduser()  # data:NAME is a fetched data set (downloads/data_catalog.py)
    if not src.exists():
        raise DatasetError(f"dataset source {str(src)!r} does not exist (expected a manifest .csv or a dataset root)")
    if src.is_file():
        if fmt == "manifest" or (fmt == "auto" and _is_generic_csv(src)):
            return read_manifest(src)
        root = root_of_metadata_file(src, None if fmt == "auto" else fmt)
        if root is None and fmt == "auto" and src.suffix.lower() == ".csv":
            # a .csv that is no official metadata file is meant as a manifest: say what is wrong with it
            # (missing column, empty, another separator) exactly as format=manifest does
            return read_manifest(src)
        if root is None:
            raise DatasetError(
                f"{str(src)!r} is neither a generic manifest (columns 'path', 'label') nor a known "
                f"official metadata file; pass the dataset root directory and a format from {list(FORMATS)}"
            )
        fmt, src = root
    if fmt == "manifest":
        csv_path = src / "manifest.csv"
        if not csv_path.is_file():
            raise DatasetError(f"format 'manifest' expects {str(csv_path)!r} in the directory {str(src)!r}")
        return read_manifest(csv_path)
    if fmt == "auto":
        detected = detect_format(src)
        if detected is None:
            raise DatasetError(
                f"cannot detect the dataset layout of {str(src)!r}: expected one of "
                + "; ".join(f"{name}: {hint}" for name, hint in LAYOUT_HINTS.items())
            )
        fmt = detected
        if fmt == "manifest":
            return read_manifest(src / "manifest.csv")
    return READERS[fmt](src)
