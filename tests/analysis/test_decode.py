"""Per-layer decoding on a store whose answer is known."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from audiointerp.analysis import ActivationStore
from audiointerp.analysis.decode import DecodeSettings, decode
from audiointerp.cli import main
from audiointerp.datasets.store import write_store

MATERIALS = ["wood", "metal", "glass"]
ACTIONS = ["tapping", "rubbing"]


def known_store(folder: Path, clips: int = 300) -> Path:
    """Layer `early` is noise; `middle` adds a prototype per material; `late` one per material and one per action."""
    rng = np.random.default_rng(0)
    material = rng.integers(0, 3, clips)
    action = rng.integers(0, 2, clips)
    noise = lambda: rng.normal(size=(clips, 8))  # noqa: E731
    material_prototypes, action_prototypes = rng.normal(size=(3, 8)), rng.normal(size=(2, 8))
    middle = noise() + 3.0 * material_prototypes[material]
    late = noise() + 3.0 * material_prototypes[material] + 3.0 * action_prototypes[action]
    layers = {"early": noise(), "middle": middle, "late": late}
    labels = [f"{MATERIALS[m]}_{ACTIONS[a]}" for m, a in zip(material, action)]
    return write_store(folder, layers, {"label": labels, "material": [MATERIALS[m] for m in material],
                                        "action": [ACTIONS[a] for a in action]})


def test_decoding_finds_the_layers_that_encode_each_factor(tmp_path: Path) -> None:
    store = ActivationStore(known_store(tmp_path / "store"))
    result = decode(store, DecodeSettings(factors=["material", "action"], instances=240), progress=False)
    means = {f: {layer: s.mean() for layer, s in per.items()} for f, per in result.scores.items()}
    assert means["material"]["early"] < 0.5 < 0.9 < means["material"]["middle"]  # chance 1/3
    assert means["action"]["early"] < 0.7 and means["action"]["middle"] < 0.7 < 0.9 < means["action"]["late"]
    assert result.best["action"] == "late" and result.best["material"] in ("middle", "late")
    assert all(len(s) == 10 for per in result.scores.values() for s in per.values())
    first_vs_best = next(t for t in result.tests if t["factor"] == "action" and (t["layer_a"], t["layer_b"]) == ("early", "late"))
    assert first_vs_best["significant"] and first_vs_best["t"] > 0
    assert all(t["p_bonferroni"] >= t["p"] for t in result.tests)


def test_the_command_writes_tables_and_a_figure(tmp_path: Path, capsys) -> None:
    folder = known_store(tmp_path / "store")
    assert main(["analyze", "decode", str(folder), "--factor", "material", "--instances", "200", "--tracking", "none",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "material: best" in out and "Bonferroni p" in out
    for name in ("decoding.csv", "decoding_summary.csv", "tests.csv", "decoding.png"):
        assert (folder / "decoding" / name).is_file(), name
    rows = list(csv.DictReader(open(folder / "decoding" / "decoding.csv")))
    assert len(rows) == 3 * 10 and {r["layer"] for r in rows} == {"early", "middle", "late"}
