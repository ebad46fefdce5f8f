"""The one shape of every analysis command (`analysis.command`) and the one CSV writer."""

from __future__ import annotations

import csv
import dataclasses
import inspect
from pathlib import Path

import pytest

from audiointerp.analysis.command import AnalysisResult, Input, write_csv
from audiointerp.analysis.decode import Result, Settings, run, summary
from audiointerp.analysis.extraction import ExtractSettings
from audiointerp.cli import ANALYSES, analysis_module
from tests.analysis.test_decode import known_store


def test_write_csv_writes_every_key_in_order_or_the_columns_asked_for(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": 0.5}, {"a": 2, "c": True}]
    path = write_csv(tmp_path / "new" / "t.csv", rows)
    assert path == tmp_path / "new" / "t.csv"
    assert path.read_text().splitlines() == ["a,b,c", "1,0.5,", "2,,True"]
    assert write_csv(tmp_path / "u.csv", rows, ["c", "a"]).read_text().splitlines() == ["c,a", ",1", "True,2"]
    assert write_csv(tmp_path / "e.csv", [], ["factor"]).read_text().splitlines() == ["factor"]


@pytest.mark.parametrize("name", list(ANALYSES))
def test_every_analysis_has_the_one_shape(name: str) -> None:
    module = analysis_module(name)
    assert dataclasses.is_dataclass(module.Settings) and issubclass(module.Result, AnalysisResult)
    for field in dataclasses.fields(module.Settings):
        assert field.metadata.get("help"), f"{name}: {field.name} has no help"
    assert module.INPUTS and all(isinstance(item, Input) for item in module.INPUTS) and module.DEFAULT_OUT
    parameters = list(inspect.signature(module.run).parameters)
    assert parameters == ["settings", *(item.name for item in module.INPUTS), "out", "tracking", "progress", "name"]
    assert list(inspect.signature(module.summary).parameters) == ["result"]


def test_extraction_settings_carry_their_help() -> None:
    assert all(field.metadata.get("help") for field in dataclasses.fields(ExtractSettings))


def test_run_computes_writes_and_returns_the_table_it_wrote(tmp_path: Path) -> None:
    folder = known_store(tmp_path / "store")
    result = run(Settings(factors=["material", "action"], instances=200), folder, tracking="none", progress=False)
    assert isinstance(result, Result) and result.out == folder / "decoding" and result.layers == ["early", "middle", "late"]
    assert [p.name for p in result.files] == ["decoding.csv", "decoding_summary.csv", "tests.csv", "decoding.png"]
    assert all(p.is_file() for p in result.files)
    with open(folder / "decoding" / "decoding_summary.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [{k: str(v) for k, v in row.items()} for row in result.rows] == written and len(written) == 2 * 3
    assert result.decoding.best["action"] == "late"
    best = next(row for row in result.rows if row["factor"] == "action" and row["best"])
    assert best["layer"] == "late" and best["mean_accuracy"] == pytest.approx(result.decoding.scores["action"]["late"].mean())
    text = summary(result)
    assert text.splitlines()[0].startswith("material: best ") and text.endswith(f"wrote {folder / 'decoding'}")
    assert (folder / "decoding" / "metrics.jsonl").is_file()  # tracked (tracking none: metrics.jsonl only)
