"""`analyze manipulate`: triplet selection, the edit -> inverse -> forward_from chain, tests, files, refusals."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.analysis import ActivationStore, ExtractSettings, StoreError, extract
from audiointerp.analysis import manipulate as manipulate_module
from audiointerp.analysis.extraction import layer_activations, store_pipeline
from audiointerp.analysis.manipulate import ManipulateSettings, Manipulator, find_triplets, manipulate
from audiointerp.cli import main
from audiointerp.datasets import load_manifest
from audiointerp.datasets.manifest import ManifestDataset
from audiointerp.datasets.store import write_store
from audiointerp.train.export import export_run
from audiointerp.train.trainer import Trainer
from tests.train.tasks.test_flow_task import flow_config

GENEROUS = dict(clips=120, repeats=4, valley_width=1.0, typical_radius=1.5)  # a random flow's classes overlap


@pytest.fixture(scope="module")
def flow_export(small_cnn_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    # trained on folds 2 and 3: folds 1, 4 and 5 (72 clips, 3 per class) are held out for the manipulation
    run = Trainer(flow_config(small_cnn_store, tmp_path_factory.mktemp("flow"), "data.train_folds=[2,3]")).fit()
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


class HandMadeTask:
    """An identity 'PCA and flow' on 3-d activations: code = activation; blocks residual 0, material 1, action 2."""

    factors = ["material", "action"]

    class flow:
        dim = 3

    def blocks(self) -> dict[str, slice]:
        return {"residual": slice(0, 1), "material": slice(1, 2), "action": slice(2, 3)}

    def encode(self, activations: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        return torch.as_tensor(np.asarray(activations, dtype=np.float32)), np.zeros((len(activations), 0))

    def decode(self, z: torch.Tensor, remainder: np.ndarray) -> np.ndarray:
        return z.numpy().astype(np.float64)


class HandMadeManipulator(Manipulator):
    """The hand-made flow and a linear 'network' whose logits read the material coordinate three times as strongly
    as the other dimensions: moving M's material coordinate to P's value must bring its logits closer to P's.
    Clips 0..159 are the flow's training clips, the rest held out."""

    def __init__(self, flow_export: str | Path, store: ActivationStore, output: str = "logits",
                 batch_size: int = 256) -> None:
        self.task, self.store, self.layer, self.output, self.batch_size = HandMadeTask(), store, "hidden", output, batch_size
        self.held_out = np.arange(160, len(store))
        self.weights = np.array([[1.0, 0.0, 0.0], [0.0, 3.0, -3.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.0]]).T

    def outputs(self, activations: np.ndarray) -> np.ndarray:
        return np.asarray(activations, dtype=np.float64) @ self.weights


def hand_made_store(folder: Path) -> Path:
    """400 clips, materials p/q/r at coordinates -1/+1/+3 (each with a valley sound every fifth clip), actions
    t/u at -1/+1; the first 160 clips are the flow's training clips."""
    rng = np.random.default_rng(0)
    clips = 400
    material = np.array(["p", "q", "r"])[np.arange(clips) % 3]
    action = np.array(["t", "u"])[(np.arange(clips) // 3) % 2]
    centre = {"p": -1.0, "q": 1.0, "r": 3.0}
    x = rng.normal(scale=0.5, size=(clips, 3))
    x[:, 1] = [centre[m] for m in material] + rng.normal(scale=0.1, size=clips)
    valley = np.arange(clips) % 5 == 0  # atypical: halfway to the next material's centre
    x[valley, 1] += 1.0
    x[:, 2] = np.where(action == "t", -1.0, 1.0) + rng.normal(scale=0.1, size=clips)
    return write_store(folder, {"hidden": x}, {"label": [f"{m}{a}" for m, a in zip(material, action)],
                                               "fold": [""] * clips, "material": material, "action": action})


def test_known_answer_moving_m_to_p_brings_its_logits_to_p_each_m_once_held_out_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-made flow and network where the answer is known: for every triplet, M with P's material coordinate
    has logits closer to P's and M with Q's farther (swapping the donors flips every sign). Each atypical M enters
    the tests once, every M, P and Q is a held-out clip, and n is the number of distinct M sounds."""
    monkeypatch.setattr(manipulate_module, "Manipulator", HandMadeManipulator)
    store = ActivationStore(hand_made_store(tmp_path / "store"))
    settings = ManipulateSettings(factors=["material"], repeats=6, valley_width=0.3, typical_radius=0.3, clips=400)
    result = manipulate(tmp_path / "no-export", store, settings, progress=False)
    rows = result.triplets
    m = [row["m"] for row in rows]
    assert len(m) == len(set(m)) >= 10  # each atypical sound once, although pairs repeat across the 6 draws
    assert all(min(row["m"], row["P"], row["Q"]) >= 160 for row in rows)  # held-out clips only
    material = store.column("material")
    assert all(material[row["m"]] == material[row["P"]] == row["p"] != material[row["Q"]] for row in rows)
    distances = result.distances("material")
    assert (distances["P,M->P"] < distances["P,M"]).all() and (distances["P,M->Q"] > distances["P,M"]).all()
    tests = {(t["reference"], t["moved_to"]): t for t in result.tests}
    for (reference, moved), test in tests.items():
        assert test["n"] == test["distinct_m"] == len(set(m)) and test["significant"]
        assert (test["t"] > 0) == (reference == moved) and test["confirmed"]
    # --max-triplets subsamples distinct M sounds, the same ones for the same seed
    few = [manipulate(tmp_path / "no-export", store, ManipulateSettings(**{**settings.__dict__, "max_triplets": 5}),
                      progress=False) for _ in range(2)]
    assert [row["m"] for row in few[0].triplets] == [row["m"] for row in few[1].triplets]
    assert len({row["m"] for row in few[0].triplets}) == 5 and few[0].tests[0]["n"] == 5


def test_manipulated_sounds_are_clips_the_flow_never_saw(small_cnn_store: Path, flow_export: Path) -> None:
    """The export records the flow's (and its PCA's) training clips; manipulate draws M, P and Q from the others
    only, and a store with another clip table is refused (its held-out clips cannot be known)."""
    store = ActivationStore(small_cnn_store)
    result = manipulate(flow_export, store, ManipulateSettings(factors=["material", "action"], **GENEROUS), progress=False)
    held_out = set(np.flatnonzero(np.isin(store.column("fold"), ["1", "4", "5"])).tolist())
    assert result.triplets and all({row["m"], row["P"], row["Q"]} <= held_out for row in result.triplets)
    for factor in ("material", "action"):
        m = [row["m"] for row in result.triplets if row["factor"] == factor]
        assert len(m) == len(set(m))


def test_a_coordinate_edit_sets_the_coordinate_and_keeps_the_rest_of_the_block(small_cnn_store: Path,
                                                                                flow_export: Path) -> None:
    """edit="coordinate" on a block wider than one dimension: M's code moves along the axis to the donor's
    coordinate, and the block's part orthogonal to the axis (and every other block) stays M's."""
    store = ActivationStore(small_cnn_store)
    tool = Manipulator(flow_export, store)
    tool.outputs = lambda activations: tool.task.encode(activations)[0].double().numpy()  # read the edited codes back
    m, donors = np.array([72, 80, 100]), np.array([0, 5, 30])
    block = tool.task.blocks()["residual"]  # 6 dimensions
    axis = np.random.default_rng(0).normal(size=6)
    axis /= np.linalg.norm(axis)
    edited = tool.edited_outputs(m, donors, block, np.tile(axis, (3, 1)))
    before, donor = tool.codes(m), tool.codes(donors)
    np.testing.assert_allclose(edited[:, block] @ axis, donor[:, block] @ axis, atol=2e-3)
    orthogonal = lambda z: z[:, block] - np.outer(z[:, block] @ axis, axis)  # noqa: E731
    np.testing.assert_allclose(orthogonal(edited), orthogonal(before), atol=2e-3)
    np.testing.assert_allclose(edited[:, 6:], before[:, 6:], atol=2e-3)
    assert np.abs(edited[:, block] @ axis - before[:, block] @ axis).min() > 0.05
