"""Manifests (lists of labelled audio files) and the dataset that reads them.

The generic manifest format is a CSV with one required column, ``path``, and optional ``label``, ``description``
and ``fold``; every other column is a *factor* (e.g. ``material``, ``action``). A command needs a label column only
where it uses one (``train`` needs the one it is told; ``extract`` and ``analyze`` need none), and checks it then.
Multi-label rows join their labels with ``;``. Paths are relative to the CSV's folder unless absolute.
Official dataset layouts (ESC-50, UrbanSound8K, FSD50K, MSOS) are read by :mod:`.readers`.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from audiointerp.datasets import audio as _audio
from audiointerp.datasets.cache import AudioCache
from audiointerp.datasets.lengths import pad_batch
from audiointerp.datasets.sampling import SharedEpoch
from audiointerp.errors import AudioFileError, ConfigError, DatasetError

__all__ = [
    "FORMATS",
    "LABEL_SEPARATOR",
    "Manifest",
    "ManifestDataset",
    "ManifestRow",
    "ManifestWarning",
    "SkippedAudioWarning",
    "SplitReport",
    "check_splits",
    "collate_clips",
    "read_manifest",
]

LABEL_SEPARATOR = ";"
RESERVED_COLUMNS = ("path", "label", "description", "fold")
FORMATS = ("auto", "manifest", "esc50", "urbansound8k", "fsd50k", "msos")


class SkippedAudioWarning(UserWarning):
    """Some audio files were skipped (``on_error="skip"``); the dataset's ``skipped`` lists them."""


class ManifestWarning(UserWarning):
    """A manifest lists a file more than once, or has rows that no selected fold uses (see :func:`check_splits`)."""


@dataclass(frozen=True)
class ManifestRow:
    """One audio file: its path, label(s), free-text description, fold and factor values."""

    path: str
    labels: tuple[str, ...]
    description: str = ""
    fold: str = ""
    factors: Mapping[str, str] = field(default_factory=dict, hash=False)


def _preview(values: Sequence[str], limit: int = 60) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


@dataclass
class Manifest:
    """Rows of a dataset; row paths are relative to ``root`` unless absolute.

    ``classes`` optionally declares the official class order of the ``label`` column (readers of official
    datasets set it, e.g. ESC-50's ``target`` order); empty means "sorted label values".
    """

    root: Path
    rows: list[ManifestRow]
    factor_names: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.rows = list(self.rows)
        self.factor_names = tuple(self.factor_names)
        self.classes = tuple(self.classes)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def resolve(self, row: ManifestRow | int) -> Path:
        """Absolute path of ``row`` (a row or a row index)."""
        r = self.rows[row] if isinstance(row, (int, np.integer)) else row
        p = Path(r.path).expanduser()
        return p if p.is_absolute() else self.root / p

    def column_values(self, row: ManifestRow, column: str) -> tuple[str, ...]:
        """The value(s) of ``column`` for ``row``: labels, fold, description, or a factor."""
        if column == "label":
            return row.labels
        if column == "fold":
            return (row.fold,)
        if column == "description":
            return (row.description,)
        if column not in self.factor_names:
            raise DatasetError(
                f"unknown column {column!r} in manifest {self.source or self.root}; "
                f"available: 'label', 'fold', 'description'" + "".join(f", {f!r}" for f in self.factor_names)
            )
        return (row.factors.get(column, ""),)

    def label_values(self, column: str = "label") -> list[str]:
        """Sorted unique values of ``label`` (every label of multi-label rows) or of a factor column."""
        values: set[str] = set()
        for row in self.rows:
            values.update(self.column_values(row, column))
        return sorted(values)

    def class_list(self, column: str = "label") -> list[str]:
        """The classes of a column: the declared official order for ``label``, else the sorted values."""
        if column == "label" and self.classes:
            return list(self.classes)
        return self.label_values(column)

    def select_folds(self, folds: Sequence[str | int] | str | int) -> Manifest:
        """Rows whose fold is in ``folds`` (compared as strings); an empty result raises DatasetError.

        The subset keeps the class list of the whole manifest (declared, or its sorted labels), so that
        training and validation subsets index classes alike even when a fold lacks a class.
        """
        if isinstance(folds, (str, int)):
            folds = [folds]
        wanted = {str(f) for f in folds}
        rows = [r for r in self.rows if r.fold in wanted]
        if not rows:
            available = sorted({r.fold for r in self.rows}, key=lambda s: (len(s), s))
            raise DatasetError(
                f"no rows in folds {sorted(wanted)} of manifest {self.source or self.root}; "
                f"folds available: {available}"
            )
        classes = self.classes or tuple(self.label_values("label"))
        return Manifest(self.root, rows, self.factor_names, classes, self.source)

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Write the generic CSV format; paths are written relative to the CSV's folder when possible."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        base = out.parent.absolute()
        tmp = out.with_name(out.name + f".tmp{os.getpid()}")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow([*RESERVED_COLUMNS, *self.factor_names])
                for row in self.rows:
                    for lab in row.labels:
                        if LABEL_SEPARATOR in lab:
                            raise DatasetError(
                                f"label {lab!r} of {row.path!r} contains {LABEL_SEPARATOR!r}, "
                                "which the manifest format uses to separate labels"
                            )
                    absolute = self.resolve(row).absolute()
                    try:
                        rel = os.path.relpath(absolute, base)
                        written = rel if not rel.startswith("..") else str(absolute)
                    except ValueError:
                        written = str(absolute)
                    writer.writerow(
                        [
                            Path(written).as_posix(),
                            LABEL_SEPARATOR.join(row.labels),
                            row.description,
                            row.fold,
                            *(row.factors.get(f, "") for f in self.factor_names),
                        ]
                    )
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest in the generic CSV format (see the module docstring).

    Only ``path`` is required: a row without a label (no ``label`` column, or an empty value) has ``labels == ()``
    and a row without a fold has ``fold == ""``. Whoever uses the labels checks them (``ManifestDataset`` with a
    ``label_column`` names the file whose label is empty). Raises DatasetError for a missing file, no ``path``
    column, an empty path, a row longer than the header, duplicate columns, or no rows.
    """
    src = Path(path)
    if not src.is_file():
        raise DatasetError(f"manifest {str(src)!r} not found")
    with open(src, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)  # blank lines before the header
        if header is None:
            raise DatasetError(f"manifest {str(src)!r} is empty: expected a header with at least the column 'path'")
        header = [h.strip() for h in header]
        if "path" not in header:
            _check_separator(src, header)
            raise DatasetError(
                f"manifest {str(src)!r}: missing required column 'path' (header: {header}); "
                "the generic format needs 'path' (and optionally 'label', 'description', 'fold' and factor columns)"
            )
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DatasetError(f"manifest {str(src)!r}: duplicate columns {dupes}")
        col = {h: k for k, h in enumerate(header)}
        factor_names = tuple(h for h in header if h not in RESERVED_COLUMNS and h)
        rows: list[ManifestRow] = []
        for number, values in enumerate(reader, start=1):
            if not any(v.strip() for v in values):
                continue
            where = f"manifest {str(src)!r}, row {number} (line {reader.line_num})"
            if len(values) > len(header):
                raise DatasetError(f"{where}: {len(values)} fields but the header has {len(header)}")
            values = values + [""] * (len(header) - len(values))
            record = {name: values[k].strip() for name, k in col.items()}

            rel = record.get("path", "")
            if not rel:
                raise DatasetError(f"{where}: missing value in column 'path'")
            pieces = (s.strip() for s in record.get("label", "").split(LABEL_SEPARATOR))
            labels = tuple(dict.fromkeys(s for s in pieces if s))  # () without a label: checked where one is used
            rows.append(
                ManifestRow(
                    path=rel,
                    labels=labels,
                    description=record.get("description", ""),
                    fold=record.get("fold", ""),
                    factors={f: record.get(f, "") for f in factor_names},
                )
            )
    if not rows:
        raise DatasetError(f"manifest {str(src)!r} has a header but no rows")
    return Manifest(src.parent, rows, factor_names, source=str(src))


_OTHER_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


def _check_separator(src: Path, header: list[str]) -> None:
    """Raise DatasetError when a header lacking 'path' or 'label' has them joined by another separator."""
    for sep, name in _OTHER_SEPARATORS.items():
        cells = {c.strip() for h in header for c in h.split(sep)}
        if any(sep in h for h in header) and "path" in cells:
            raise DatasetError(
                f"manifest {str(src)!r} uses {name} to separate columns (header: {header}); the manifest format is "
                f"comma-separated (';' only joins the labels of a multi-label row): save it as a comma-separated CSV"
            )


# -------------------------------------------------------------------------------------------------
# Split checks
# -------------------------------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")
_EXAMPLES = 5  # files named in a message


@dataclass(frozen=True)
class SplitReport:
    """What :func:`check_splits` found in a manifest that passed it.

    ``rows``: rows per split (``train``, ``valid``, ``test``; a file listed twice counts twice);
    ``repeated_rows``: rows whose file (resolved path) an earlier row already lists; ``repeated_files``: those
    files, as first written; ``unselected``: rows in none of the selected folds, per fold value (``""``: no fold).
    """

    rows: dict[str, int]
    repeated_rows: int = 0
    repeated_files: tuple[str, ...] = ()
    unselected: dict[str, int] = field(default_factory=dict)


def _fold_key(fold: str) -> tuple[int, str]:
    return (len(fold), fold)


def _rows_text(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def _files_text(n: int) -> str:
    return f"{n} file" + ("" if n == 1 else "s")


class _FileKeys:
    """The resolved path of every row (symlinks followed), each folder resolved once: cheap for 50k rows."""

    def __init__(self, manifest: Manifest) -> None:
        self._root = os.path.abspath(manifest.root)
        self._folders: dict[str, str] = {}

    def __call__(self, row: ManifestRow) -> str:
        path = os.path.expanduser(row.path)  # as Manifest.resolve, with os.path (a third of the time)
        path = os.path.normpath(path if os.path.isabs(path) else os.path.join(self._root, path))
        folder, name = os.path.split(path)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = os.path.realpath(folder)
        joined = os.path.join(real_folder, name)
        return os.path.realpath(joined) if os.path.islink(joined) else joined


def check_splits(
    manifest: Manifest,
    train_folds: Sequence[str | int],
    valid_folds: Sequence[str | int],
    test_folds: Sequence[str | int] = (),
    *,
    allow_duplicates: bool = False,
    label_column: str = "label",
) -> SplitReport:
    """Check that the train, valid and test folds of ``manifest`` split its files cleanly; warn about waste.

    Files are compared by resolved path (relative spellings such as ``a/../x.wav`` and symlinks name the same
    file). Folds are compared as strings.

    Raises:
        ConfigError: a fold is in two of the fold lists (every file of it would be in two splits).
        DatasetError: a file is in rows of two of the splits (a leak: e.g. validated on a file it trained on),
            whatever ``allow_duplicates`` says; or, unless ``allow_duplicates``, a file is listed under
            different values of ``label_column`` (multi-label rows compared as sets). The message gives the
            count, and the first files with their folds and labels.

    Warns:
        ManifestWarning: unless ``allow_duplicates``, rows repeating a file an earlier row lists (same labels;
            within one split or in an unused fold), with their count and the first files; and rows whose fold
            is in none of the three lists (not used), with the count per fold.

    ``allow_duplicates=True`` means a file may be listed more than once on purpose (e.g. oversampling, or one
    row per annotator): no repeat warning and no label error. The rows are never changed or dropped here.
    """
    lists = {name: [str(f) for f in folds] for name, folds in zip(SPLITS, (train_folds, valid_folds, test_folds))}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        shared = sorted(set(lists[a]) & set(lists[b]), key=_fold_key)
        if shared:
            raise ConfigError(
                f"fold(s) {shared} are in both the {a} and the {b} folds (data.{a}_folds, data.{b}_folds); "
                "a fold must belong to one split only"
            )
    split_of = {fold: name for name, folds in lists.items() for fold in folds}
    where = manifest.source or str(manifest.root)
    key_of = _FileKeys(manifest)

    counts = {name: 0 for name in SPLITS}
    unselected: dict[str, int] = {}
    spellings: dict[str, list[str]] = {}  # file -> its paths as written, first first
    folds_of: dict[str, dict[str, str | None]] = {}  # file -> {fold: split or None}
    labels_of: dict[str, dict[frozenset[str], str]] = {}  # file -> {label set: first fold}
    repeated: dict[str, int] = {}  # file -> rows after its first
    for row in manifest.rows:
        key = key_of(row)
        split = split_of.get(row.fold)
        if split is None:
            unselected[row.fold] = unselected.get(row.fold, 0) + 1
        else:
            counts[split] += 1
        written = spellings.setdefault(key, [])
        if row.path not in written:
            written.append(row.path)
        if key in folds_of:
            repeated[key] = repeated.get(key, 0) + 1
        folds_of.setdefault(key, {}).setdefault(row.fold, split)
        labels_of.setdefault(key, {}).setdefault(frozenset(manifest.column_values(row, label_column)), row.fold)

    def name(key: str) -> str:
        return " = ".join(repr(p) for p in spellings[key])

    def fold_text(fold: str) -> str:
        return f"fold {fold!r}" if fold else "no fold"

    leaks = [k for k in repeated if len({s for s in folds_of[k].values() if s is not None}) > 1]
    if leaks:
        shown = "; ".join(
            f"{name(k)} in "
            + ", ".join(f"{fold_text(f)} ({s})" for f, s in sorted(folds_of[k].items(), key=lambda i: _fold_key(i[0])) if s)
            for k in leaks[:_EXAMPLES]
        )
        more = f"; ... ({len(leaks)} in all)" if len(leaks) > _EXAMPLES else ""
        raise DatasetError(
            f"manifest {where}: {_files_text(len(leaks))} {'is' if len(leaks) == 1 else 'are'} in more than one of "
            f"the train, valid and test splits (a leak: the splits must share no file): "
            f"{shown}{more}. Give each file one fold, or change the fold lists (train {lists['train']}, valid "
            f"{lists['valid']}, test {lists['test']})"
        )
    conflicts = [] if allow_duplicates else [k for k in repeated if len(labels_of[k]) > 1]
    if conflicts:
        shown = "; ".join(
            f"{name(k)}: " + ", ".join(f"{'/'.join(sorted(labs)) or '(empty)'!r} ({fold_text(f)})" for labs, f in labels_of[k].items())
            for k in conflicts[:_EXAMPLES]
        )
        more = f"; ... ({len(conflicts)} in all)" if len(conflicts) > _EXAMPLES else ""
        raise DatasetError(
            f"manifest {where}: {_files_text(len(conflicts))} {'is' if len(conflicts) == 1 else 'are'} listed under "
            f"different labels ({label_column!r}): {shown}{more}. Give each file one row (join the labels of a "
            "multi-label file with ';'), or set data.allow_duplicates=true if the rows are meant"
        )
    n_repeated = sum(repeated.values())
    if n_repeated and not allow_duplicates:
        shown = ", ".join(
            f"{name(k)} ({_rows_text(n + 1)}; " + ", ".join(fold_text(f) for f in folds_of[k]) + ")"
            for k, n in list(repeated.items())[:_EXAMPLES]
        )
        more = ", ..." if len(repeated) > _EXAMPLES else ""
        warnings.warn(
            ManifestWarning(
                f"manifest {where}: {_rows_text(n_repeated)} {'repeats' if n_repeated == 1 else 'repeat'} a file listed "
                f"earlier ({_files_text(len(repeated))}), e.g. {shown}{more}; each repeat is trained or scored again. "
                "Remove the repeats, or set data.allow_duplicates=true if they are meant"
            ),
            stacklevel=2,
        )
    if unselected:
        n_unused = sum(unselected.values())
        per_fold = ", ".join(f"{fold_text(f)} ({_rows_text(n)})" for f, n in sorted(unselected.items(), key=lambda i: (not i[0], _fold_key(i[0]))))
        warnings.warn(
            ManifestWarning(
                f"manifest {where}: {n_unused} of {_rows_text(len(manifest))} {'is' if n_unused == 1 else 'are'} in no selected fold "
                f"and {'is' if n_unused == 1 else 'are'} not used: "
                f"{per_fold} (train folds {lists['train']}, valid {lists['valid']}, test {lists['test']})"
            ),
            stacklevel=2,
        )
    return SplitReport(counts, n_repeated, tuple(spellings[k][0] for k in repeated), unselected)


# -------------------------------------------------------------------------------------------------
# Dataset
# -------------------------------------------------------------------------------------------------


def collate_clips(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Batch whole clips of different lengths: ``audio`` zero-padded at the end to the longest clip
    ``[B, C, T_max]``, ``length`` int64 ``[B]`` (each clip's own samples, so a task can mask the padding),
    and every other key stacked as the default collate does.

    Contract: ``batch["audio"][k, :, :length[k]]`` is item k's audio unchanged and the rest is zeros.
    Raises DatasetError when an item has no ``audio`` or the items disagree on the channel count.
    """
    if not items:
        raise DatasetError("cannot collate an empty batch")
    if any("audio" not in item for item in items):
        raise DatasetError("collate_clips needs items with an 'audio' tensor [C, T]")
    channels = {int(item["audio"].shape[0]) for item in items}
    if len(channels) != 1:
        raise DatasetError(f"clips of one batch have different channel counts {sorted(channels)}")
    audio, lengths = pad_batch([item["audio"] for item in items])
    batch: dict[str, torch.Tensor] = {"audio": audio, "length": lengths}
    for key in items[0]:
        if key not in ("audio", "length"):
            batch[key] = torch.stack([torch.as_tensor(item[key]) for item in items])
    return batch


class ManifestDataset(Dataset):
    """Audio examples of a manifest as ``{"audio", "target", "index"}`` dicts.

    ``audio`` is float32 ``[channels, n]`` with ``n = round(seconds * sample_rate)`` (the full clip when
    ``seconds`` is None). Training crops start at an offset drawn from ``default_rng([seed, epoch, i])``;
    evaluation crops start at 0; short clips are zero-padded at the end. ``target`` is the int64 class
    index, or a float32 multi-hot vector with ``multi_label=True``; with ``label_column=None`` (a command that needs
    no labels, such as ``extract``) no label is read or checked, ``classes`` is empty and ``target`` is -1. Files are checked at construction
    (``on_error="skip"`` drops bad ones into ``skipped``); with ``cache_dir`` the decoded audio is cached
    once on disk (:class:`~audiointerp.datasets.cache.AudioCache`) and read back from a memmap. Without a
    cache, a file whose header checks out but whose samples fail to decode raises AudioFileError when read.
    """

    epoch = SharedEpoch()  # the epoch of the random crops; seen by persistent workers

    def __init__(
        self,
        manifest: Manifest,
        *,
        sample_rate: int,
        seconds: float | None,
        channels: int = 1,
        train: bool = False,
        label_column: str | None = "label",
        classes: Sequence[str] | None = None,
        multi_label: bool = False,
        cache_dir: str | Path | None = None,
        on_error: str = "raise",
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        _audio.check_audio_params(sample_rate, channels)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if seconds is not None and (isinstance(seconds, bool) or not float(seconds) > 0):
            raise ValueError(f"seconds must be positive or None (full clips), got {seconds!r}")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not isinstance(manifest, Manifest):
            raise TypeError(f"manifest must be a Manifest, got {type(manifest).__name__}")
        if len(manifest) == 0:
            raise DatasetError(f"manifest {manifest.source or manifest.root} has no rows")
        self.manifest = manifest
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.seconds = None if seconds is None else float(seconds)
        self.n_samples: int | None = None if seconds is None else max(1, round(float(seconds) * self.sample_rate))
        self.train = bool(train)
        self.label_column = label_column
        self.multi_label = bool(multi_label)
        self.on_error = on_error
        self.seed = int(seed)
        self.epoch = 0
        self.progress = bool(progress)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

        self.classes: list[str] = [] if label_column is None else self._choose_classes(classes)
        self.class_to_index = {c: k for k, c in enumerate(self.classes)}
        label_sets = [() if label_column is None else self._row_targets(k, row) for k, row in enumerate(manifest.rows)]

        paths = [manifest.resolve(r).absolute() for r in manifest.rows]
        self.skipped: list[tuple[str, str]] = []
        # with a cache, header checks are needed only when the cache has to be built
        keep = self._check_files(paths, read_header=self.cache_dir is None)
        if not keep:
            raise DatasetError(
                f"every audio file of manifest {manifest.source or manifest.root} was skipped "
                f"(first: {self.skipped[0][0]!r}: {self.skipped[0][1]})"
            )
        self.cache: AudioCache | None = None
        self.cache_built = False
        self._cache_keep: list[int] = []
        if self.cache_dir is not None:
            keep = self._open_cache(paths, keep)
        self.rows: list[ManifestRow] = [manifest.rows[k] for k in keep]
        self.paths: list[Path] = [paths[k] for k in keep]
        self._targets: list[tuple[int, ...]] = [label_sets[k] for k in keep]
        self._cache_pos: list[int] | None = None
        if self.cache is not None:
            pos = {k: j for j, k in enumerate(self._cache_keep)}
            self._cache_pos = [pos[k] for k in keep]
        if self.skipped:
            first_path, first_reason = self.skipped[0]
            warnings.warn(
                SkippedAudioWarning(
                    f"skipped {len(self.skipped)} of {len(manifest)} audio files that cannot be read "
                    f"(first: {first_path!r}: {first_reason}); see dataset.skipped"
                ),
                stacklevel=2,
            )
        if not self.rows:
            raise DatasetError(f"every audio file of manifest {manifest.source or manifest.root} was skipped")

    # --- construction helpers ----------------------------------------------------------------
    def _choose_classes(self, classes: Sequence[str] | None) -> list[str]:
        if classes is not None:
            chosen = [str(c) for c in classes]
            dupes = sorted({c for c in chosen if chosen.count(c) > 1})
            if dupes:
                raise DatasetError(f"classes contain duplicates: {dupes}")
            if not chosen:
                raise DatasetError("classes is empty")
            return chosen
        return self.manifest.class_list(self.label_column)

    def _row_targets(self, k: int, row: ManifestRow) -> tuple[int, ...]:
        where = f"manifest {self.manifest.source or self.manifest.root}, file {row.path!r}"
        values = self.manifest.column_values(row, self.label_column)
        if not values:
            known = ", ".join(repr(c) for c in ("label", *self.manifest.factor_names))
            raise DatasetError(f"{where}: its {self.label_column!r} is empty (columns that can label: {known}; "
                               "training takes the one in data.label_column, e.g. data.label_column=material)")
        if not self.multi_label and len(values) != 1:
            raise DatasetError(
                f"{where} has {len(values)} labels {list(values)}; set data.multi_label=true for multi-label data"
            )
        out = []
        for v in values:
            if not str(v).strip():
                raise DatasetError(f"{where}: its {self.label_column!r} is empty")
            if v not in self.class_to_index:
                raise DatasetError(
                    f"{where}: {self.label_column} {v!r} is not a known class; valid classes: {_preview(self.classes)}"
                )
            out.append(self.class_to_index[v])
        return tuple(out)

    @staticmethod
    def _file_problems(paths: list[Path], *, read_header: bool) -> list[str | None]:
        """Why each file cannot be used (None: fine), from cheap checks; threaded for long lists."""

        def check(p: Path) -> str | None:
            try:
                _audio.check_audio_file(p, read_header=read_header)
            except AudioFileError as exc:
                return exc.reason
            return None

        workers = max(1, min(8, os.cpu_count() or 1))
        if read_header and len(paths) > 64 and workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(check, paths, chunksize=64))
        return [check(p) for p in paths]

    def _check_files(self, paths: list[Path], *, read_header: bool) -> list[int]:
        """Indices of the usable files; a bad one raises (``on_error="raise"``) or is recorded in ``skipped``."""
        keep = []
        for k, reason in enumerate(self._file_problems(paths, read_header=read_header)):
            if reason is None:
                keep.append(k)
            elif self.on_error == "raise":
                raise AudioFileError(paths[k], reason)
            else:
                self.skipped.append((str(paths[k]), reason))
        return keep

    def _open_cache(self, paths: list[Path], keep: list[int]) -> list[int]:
        """Open (or build) the cache of the files in ``keep``; return the indices whose audio it holds.

        A valid cache already knows which files failed; otherwise headers are checked before building,
        and files with bad headers are recorded in the cache as failed without being decoded.
        """
        assert self.cache_dir is not None
        cache = AudioCache(self.cache_dir, [paths[k].resolve() for k in keep], self.sample_rate, self.channels)
        if cache.load():
            self.cache_built = False
            if cache.silent:  # decoding warned when the cache was built; say it again on every use
                names = [str(paths[keep[j]]) for j in cache.silent[:5]]
                warnings.warn(_audio.SilentAudioWarning(
                    f"{len(cache.silent)} audio file(s) are all zeros, e.g. {', '.join(names)}"), stacklevel=3)
        else:
            known: dict[int, str] = {}
            problems = self._file_problems([paths[k] for k in keep], read_header=True)
            for j, reason in enumerate(problems):
                if reason is not None:
                    if self.on_error == "raise":
                        raise AudioFileError(paths[keep[j]], reason)
                    known[j] = reason
            self.cache_built = cache.ensure(on_error=self.on_error, progress=self.progress, known_failures=known)
        self._cache_keep = list(keep)
        kept = []
        for j, k in enumerate(keep):
            reason = cache.failures.get(j)
            if reason is None:
                kept.append(k)
            elif self.on_error == "raise":
                raise AudioFileError(paths[k], reason)
            else:
                self.skipped.append((str(paths[k]), reason))
        self.cache = cache
        return kept

    # --- public ------------------------------------------------------------------------------
    @property
    def collate_fn(self) -> Callable[[Sequence[Mapping[str, torch.Tensor]]], dict[str, torch.Tensor]] | None:
        """:func:`collate_clips` for whole clips (``seconds=None``: lengths differ), else None (the DataLoader's
        default collate, for crops of one length). Loaders built by the trainer use it."""
        return collate_clips if self.n_samples is None else None

    def clip_samples(self) -> list[int]:
        """The number of samples ``__getitem__`` returns for each example, without decoding: ``n_samples`` for
        crops; for whole clips the cache's lengths, or, without a cache, what the file's header predicts at
        ``sample_rate`` (ceil(frames x rate / file rate), as resampling gives; 0 where the header cannot be read).
        Without a cache it is a prediction (e.g. an MP3's frame count): callers that need the exact length take
        it from the decoded audio."""
        if self.n_samples is not None:
            return [self.n_samples] * len(self)
        if self.cache is not None and self._cache_pos is not None:
            return [int(self.cache.lengths[j]) for j in self._cache_pos]
        out = []
        for path in self.paths:
            try:
                info = sf.info(str(path))
                out.append(-(-int(info.frames) * self.sample_rate // int(info.samplerate)))
            except Exception:  # an unreadable header: decoding will say why
                out.append(0)
        return out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def targets(self) -> list[tuple[int, ...]]:
        """Class indices of every example (one per label), e.g. for balanced samplers."""
        return list(self._targets)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random crops ``__getitem__`` returns (training only)."""
        if int(epoch) < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def _crop_offset(self, i: int, length: int) -> int:
        n = self.n_samples
        if n is None or not self.train or length <= n:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return int(rng.integers(0, length - n + 1))

    def _audio(self, i: int) -> torch.Tensor:
        n = self.n_samples
        if self.cache is not None:
            assert self._cache_pos is not None
            j = self._cache_pos[i]
            length = int(self.cache.lengths[j])
            start = self._crop_offset(i, length)
            x = torch.from_numpy(self.cache.read(j, start, n))
            return x if n is None else _audio.fit_length(x, n)
        x = _audio.load_audio(self.paths[i], self.sample_rate, self.channels)
        if n is None:
            return x
        out = _audio.fit_length(x, n, self._crop_offset(i, x.shape[-1]))
        return out.clone() if x.shape[-1] > n else out  # a crop must not keep the whole clip alive

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for a dataset of {len(self)} examples")
        target_ids = self._targets[i]
        if self.label_column is None:
            target = torch.tensor(-1, dtype=torch.int64)
        elif self.multi_label:
            target = torch.zeros(len(self.classes), dtype=torch.float32)
            target[list(target_ids)] = 1.0
        else:
            target = torch.tensor(target_ids[0], dtype=torch.int64)
        return {"audio": self._audio(i), "target": target, "index": torch.tensor(i, dtype=torch.int64)}
