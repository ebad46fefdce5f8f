"""What every analysis command shares: the shape of its module, its result, and the one CSV writer.

An analysis module (`decode`, `rsa`, `probe`, `concepts`, `manipulate`) exposes:

- `Settings`: a dataclass of everything the analysis takes besides its input folders. Each field's
  `metadata` holds its `help` (so it exists at run time) and, where the command line needs them, hints:
  `flag` (the option, default `--field-name`), `many` for a sequence (`"append"`: the flag repeated, `"+"`:
  values after one flag, `"comma"`: one comma-separated value), `choices`, `metavar`, `required` (a flag that
  must be given although the field has a default), and `convert` (a function from the parsed value to the
  field's value, e.g. `--pair material=wood,metal` to a mapping). `audiointerp analyze NAME` is built from
  these fields.
- `INPUTS`: its positional input folders (`Input`), in the order `run` takes them after the settings.
- `DEFAULT_OUT`: where it writes without `--out`, in words (for the command's help).
- `run(settings, *inputs, out=None, tracking="wandb", progress=True, name=None) -> Result`: computes,
  writes (CSV through `write_csv`, figures) and tracks (`train.tracking.analysis_tracking`).
- `Result`: an `AnalysisResult` with the analysis' own details.
- `summary(result) -> str`: the lines the command prints.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Input:
    """A positional input folder of an analysis command (e.g. the activation store)."""

    name: str  # the command's argument and `run`'s parameter
    help: str
    many: bool = False  # one or more folders (`run` then takes a list)


@dataclass
class AnalysisResult:
    """What every analysis returns: its main table, where it wrote, and every file written."""

    rows: list[dict[str, Any]]  # the main table, as written to its CSV
    out: Path  # the output folder
    files: list[Path]  # every table and figure written, in `out`


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> Path:
    """Write `rows` to the CSV file `path` (its folder is made) and return `path`: a header of `columns`
    (default: every key of the rows, in the order first seen), then a line per row; a key outside `columns` is
    left out, a column a row lacks is left empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
