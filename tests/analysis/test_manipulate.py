"""`analyze manipulate`: triplet selection, the edit -> inverse -> forward_from chain, tests, files, refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.analysis import ActivationStore, ExtractSettings, StoreError, extract
from audiointerp.analysis.extraction import layer_activations, store_pipeline
from audiointerp.analysis.manipulate import ManipulateSettings, Manipulator, find_triplets, manipulate
from audiointerp.cli import main
from audiointerp.datasets import load_manifest
from audiointerp.datasets.manifest import ManifestDataset
from audiointerp.train.export import export_run
from audiointerp.train.trainer import Trainer
from tests.train.tasks.test_flow import flow_config

GENEROUS = dict(clips=120, repeats=4, valley_width=1.0, typical_radius=1.5)  # a random flow's classes overlap


@pytest.fixture(scope="module")
def flow_export(small_cnn_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    run = Trainer(flow_config(small_cnn_store, tmp_path_factory.mktemp("flow"))).fit()
    return export_run(run.run_dir)


def test_the_store_continues_to_the_same_outputs_and_an_identity_edit_changes_nothing(
        small_cnn_store: Path, flow_export: Path, tiny_data: Path) -> None:
    store = ActivationStore(small_cnn_store)
    tool = Manipulator(flow_export, store)
    clips = np.array([3, 50, 99])
    manifest = load_manifest(str(tiny_data))
    dataset = ManifestDataset(manifest, sample_rate=16000, seconds=None, train=False,
                              classes=manifest.class_list("label"), progress=False)
    pipeline = store_pipeline(store.meta)  # the seeded random CNN rebuilt from store.json
    with torch.no_grad():
        logits = pipeline(torch.stack([dataset[int(i)]["audio"] for i in clips])).numpy()
    direct = layer_activations(pipeline, torch.stack([dataset[int(i)]["audio"] for i in clips]), ["block3"])["block3"]
    np.testing.assert_allclose(store.load("block3", clips), direct.numpy(), rtol=1e-5, atol=1e-5)
    original = tool.outputs(store.load("block3", clips))
    np.testing.assert_allclose(original, logits, rtol=1e-4, atol=1e-4)  # forward_from on stored activations
    block = tool.task.blocks()["material"]
    identity = np.abs(tool.edited_outputs(clips, clips, block) - original).max()
    moved = np.abs(tool.edited_outputs(clips, clips[::-1].copy(), block) - original).max()  # another clip's block
    assert identity < 1e-5 * np.abs(original).max() and moved > 100 * identity


def test_triplets_are_valley_and_typical_sounds_of_one_class_of_the_other_factor() -> None:
    s = np.array([-1.0, -1.0, -1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0])
    values = np.array(["p"] * 6 + ["q"] * 6 + ["p", "q"])
    within = np.array(["t"] * 12 + ["r", "r"])
    settings = ManipulateSettings(factors=["f"], pairs={"f": [("p", "q")]}, valley_width=0.2, typical_radius=0.3)
    sample = np.arange(100, 114)  # store indices of the sampled clips
    triplets, skipped = find_triplets(s[:, None], sample, values, within, "f", "g", slice(0, 1), settings,
                                      np.random.default_rng(0))
    # class t: p mean -5/6, q mean 1, valley centre 1/12 +- 0.2 holds the p-sound at 0.0; class r: equal means
    assert [(row["class"], row["m"]) for row in triplets] == [("t", 105)]
    assert triplets[0]["P"] in range(100, 105) and triplets[0]["Q"] in range(106, 112)
    assert [(row["class"], row["reason"]) for row in skipped] == [("r", "equal class means")]
    with pytest.raises(StoreError, match="no class z"):
        find_triplets(s[:, None], sample, values, within, "f", "g", slice(0, 1),
                      ManipulateSettings(factors=["f"], pairs={"f": [("p", "z")]}), np.random.default_rng(0))


def test_manipulation_measures_every_triplet_and_tests_them(small_cnn_store: Path, flow_export: Path) -> None:
    store = ActivationStore(small_cnn_store)
    result = manipulate(flow_export, store, ManipulateSettings(factors=["material", "action"], **GENEROUS), progress=False)
    material, action = store.column("material"), store.column("action")
    for row in result.triplets:
        moved, other = (material, action) if row["factor"] == "material" else (action, material)
        assert moved[row["m"]] == moved[row["P"]] == row["p"] and moved[row["Q"]] == row["q"] != row["p"]
        assert other[row["m"]] == other[row["P"]] == other[row["Q"]] == row["class"]  # within one class of the other
        assert all(row[key] >= 0 for key in ("P,M", "P,M->P", "P,M->Q", "Q,M", "Q,M->P", "Q,M->Q"))
    assert {t["factor"] for t in result.tests} == {"material", "action"} and len(result.tests) == 8
    for test in result.tests:
        distances = result.distances(test["factor"])
        assert test["n"] == len(distances["P,M"]) > 1
        assert (test["t"] > 0) == (test["mean_before"] > test["mean_after"])  # t > 0: the edit moved closer
        assert test["p_bonferroni"] == pytest.approx(min(1.0, 4 * test["p"]))
    limited = manipulate(flow_export, store, ManipulateSettings(factors=["material"], max_triplets=3, **GENEROUS),
                         progress=False)
    assert len(limited.triplets) == 3 and limited.tests[0]["df"] == 2


def test_the_command_writes_tables_and_bars(small_cnn_store: Path, flow_export: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "manipulation"
    assert main(["analyze", "manipulate", str(flow_export), str(small_cnn_store), "--factor", "material", "--clips", "120",
                 "--valley-width", "1.0", "--typical-radius", "1.5", "--out", str(out), "--tracking", "none", "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} >= {"triplets.csv", "tests.csv", "skipped.csv", "manipulation.png"}
    with open(out / "tests.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4
    assert "material: d(P,M)" in capsys.readouterr().out


def test_a_flow_of_another_model_or_factor_is_refused(small_cnn_store: Path, flow_export: Path, tiny_data: Path,
                                                      tmp_path: Path) -> None:
    other = extract(ExtractSettings(model="small_cnn", data=str(tiny_data), layers=["block3"], checkpoint=None, seed=3,
                                    dtype="float16"), tmp_path / "other", progress=False)
    with pytest.raises(StoreError, match="no layer|another model"):
        Manipulator(flow_export, ActivationStore(extract(ExtractSettings(model="semdnn", data=str(tiny_data), layers=["block3"]),
                                                         tmp_path / "semdnn", progress=False)))
    Manipulator(flow_export, ActivationStore(other))  # same model, float16: accepted
    with pytest.raises(StoreError, match="no factor 'size'"):
        manipulate(flow_export, ActivationStore(small_cnn_store), ManipulateSettings(factors=["size"], **GENEROUS),
                   progress=False)


def test_no_atypical_sounds_leaves_the_factor_out_and_the_command_says_why(small_cnn_store: Path, flow_export: Path,
                                                                           tmp_path: Path) -> None:
    settings = ManipulateSettings(factors=["material"], clips=120, valley_width=0.0)  # an empty valley
    result = manipulate(flow_export, ActivationStore(small_cnn_store), settings, progress=False)
    assert not result.triplets and not result.tests
    assert result.skipped and {row["reason"] for row in result.skipped} <= {"too few sounds", "class missing"}
    assert main(["analyze", "manipulate", str(flow_export), str(small_cnn_store), "--factor", "material",
                 "--valley-width", "0", "--out", str(tmp_path / "m"), "--tracking", "none", "--quiet"]) != 0
