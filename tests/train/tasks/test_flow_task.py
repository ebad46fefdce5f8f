"""The `flow` task: trained by the shared trainer on a store layer, exported with its PCA pipeline, invertible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from audiointerp.analysis import ActivationStore
from audiointerp.datasets.store import write_store
from audiointerp.errors import ConfigError
from audiointerp.train.config import load_config
from audiointerp.train.export import export_run, load_export_task
from audiointerp.train.tasks.flow_task import FactorPairs, IndependentPairs, factor_axis
from audiointerp.train.trainer import Trainer

FLOW_TINY = [
    "task.components=8",
    "task.factor_dims=[6,1,1]",
    "task.knn_folds=3",
    "task.knn_neighbors=3",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "train.epochs=2",
    "train.progress=false",
    "tracking.backend=none",
    "model.params.blocks=1",
    "model.params.householder=2",
]


def flow_config(store: Path, out: Path, *overrides: str):
    return load_config("flow", [*FLOW_TINY, f"data.source={store}", "task.layer=block3", f"output_dir={out}", *overrides])


def test_flow_trains_on_a_store_layer_and_its_export_inverts_the_whole_pipeline(small_cnn_store: Path, tmp_path: Path) -> None:
    result = Trainer(flow_config(small_cnn_store, tmp_path / "runs")).fit()
    for key in ("valid/loss", "valid/bits_per_dim", "valid/knn_material@material", "valid/knn_action@residual",
                "valid/chance_material", "valid/knn_material@material_coordinate"):
        assert np.isfinite(result.metrics[key]), key
    assert (result.run_dir / "figures" / "factor_coordinates.png").is_file()
    export = export_run(result.run_dir)
    assert (export / "arrays.safetensors").is_file() and "material:" in (export / "factors.txt").read_text()
    task, metadata = load_export_task(export)
    assert sum(metadata["estimated_factor_dims"]) == 8 and metadata["layer"] == "block3"
    assert sum(result.metrics[f"valid/estimated_dims_{b}"] for b in ("residual", "material", "action")) == 8
    store = ActivationStore(small_cnn_store)
    x = store.load("block3", np.arange(0, 120, 7))
    z, remainder = task.encode(x)
    assert z.shape == (len(x), 8) and remainder.shape == (len(x), x[0].size)
    back = task.decode(z, remainder)
    assert back.shape == x.shape
    assert np.linalg.norm(back - x) / np.linalg.norm(x) < 1e-4  # store -> PCA -> flow -> inverse -> store
    assert all(bool(layer.initialised) for layer in task.flow.layers if hasattr(layer, "initialised"))


@pytest.mark.parametrize("loss", ["pairs", "supervised"])
def test_flow_puts_each_factor_in_its_own_block(tmp_path: Path, loss: str) -> None:
    """On activations where material and action add their own prototypes, each factor's block decodes its factor
    far above chance and the other factor's block does not, with either loss."""
    rng = np.random.default_rng(0)
    clips = 600
    material, action = rng.integers(0, 3, clips), rng.integers(0, 3, clips)
    x = rng.normal(size=(clips, 20)) + 3.0 * rng.normal(size=(3, 20))[material] + 3.0 * rng.normal(size=(3, 20))[action]
    store = write_store(tmp_path / "store", {"hidden": x}, {
        "label": [f"{m}_{a}" for m, a in zip(material, action)], "fold": [str(1 + i % 5) for i in range(clips)],
        "material": [f"m{m}" for m in material], "action": [f"a{a}" for a in action]})
    torch.manual_seed(0)
    cfg = load_config("flow", [*FLOW_TINY, f"data.source={store}", "task.layer=hidden", f"output_dir={tmp_path / 'runs'}",
                               "train.epochs=40", "train.eval_every_epochs=40", "data.batch_size=64", "optim.lr=0.003",
                               "model.params.blocks=2", "model.params.hidden=32", f"task.loss={loss}",
                               "data.train_folds=[2,3,4]", "data.test_folds=[5]"])
    result = Trainer(cfg).fit()
    metrics = {**result.metrics, **json.loads((result.run_dir / "summary.json").read_text())["test"]}
    for split in ("valid", "test"):  # fold 1 chose the best checkpoint; fold 5 was never seen
        assert metrics[f"{split}/knn_material@material"] > 0.8 and metrics[f"{split}/knn_action@action"] > 0.8  # chance 1/3
        assert metrics[f"{split}/knn_material@action"] < 0.6 and metrics[f"{split}/knn_action@material"] < 0.6
        assert metrics[f"{split}/knn_material@material_coordinate"] > 0.8
        assert metrics[f"{split}/knn_action@action_coordinate"] > 0.8
    assert metrics["test/examples"] == 120


def test_pairs_share_the_drawn_factor_and_are_redrawn_each_epoch() -> None:
    codes = np.stack([np.arange(60) % 3, np.arange(60) // 20], 1)
    pairs = FactorPairs(torch.arange(60.0)[:, None], codes, seed=1, length=200)
    first = [pairs.pair(i) for i in range(len(pairs))]
    for a, b, factor in first:
        assert a != b and codes[a, factor] == codes[b, factor]
    assert {factor for _, _, factor in first} == {0, 1}
    assert first == [pairs.pair(i) for i in range(len(pairs))]  # reproducible
    pairs.set_epoch(1)
    assert first != [pairs.pair(i) for i in range(len(pairs))]
    item = pairs[5]
    assert item["factor"] in (1, 2) and item["x_a"].item() == 5.0  # factors 1-based, as the loss's blocks


@pytest.mark.parametrize("override,message", [
    ("task.layer=blok3", "did you mean 'block3'"),
    ("task.factor_dims=[5,1,1]", "summing to task.components=8"),
    ("model.params.hiden=3", "did you mean 'hidden'"),
    ("task.factors=[material,size]", "no column 'size'"),
])
def test_bad_flow_configs_name_the_cause(small_cnn_store: Path, tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(Exception, match=message) as info:
        Trainer(flow_config(small_cnn_store, tmp_path / "runs", override)).fit()
    assert isinstance(info.value, (ConfigError, ValueError)) or "StoreError" in type(info.value).__name__


def test_independent_pairs_mark_every_factor_they_share() -> None:
    """LatentAudio's pairs: a runs over the clips, b is any clip drawn independently, and the pair shares each
    factor whose values agree (possibly none, possibly both); reproducible, redrawn each epoch."""
    codes = np.stack([np.arange(60) % 3, np.arange(60) // 20], 1)
    pairs = IndependentPairs(torch.arange(60.0)[:, None], codes, seed=1, length=600)
    drawn = [pairs.pair(i) for i in range(len(pairs))]
    assert [a for a, _ in drawn] == [i % 60 for i in range(600)]
    items = [pairs[i] for i in range(len(pairs))]
    for (a, b), item in zip(drawn, items):
        assert item["shared"].tolist() == (codes[a] == codes[b]).tolist() and item["x_b"].item() == float(b)
    shared = np.array([item["shared"].tolist() for item in items])
    assert 0.2 < shared[:, 0].mean() < 0.5 and 0.2 < shared[:, 1].mean() < 0.5  # 1/3 each, drawn independently
    assert (~shared.any(1)).any() and shared.all(1).any()
    assert drawn == [pairs.pair(i) for i in range(len(pairs))]
    pairs.set_epoch(1)
    assert drawn != [pairs.pair(i) for i in range(len(pairs))]


def test_factor_coordinate_axis_comes_from_training_clips() -> None:
    """The coordinate of a block wider than one dimension: the axis along which the training clips' class means
    spread most, then applied to validation clips whatever their labels say."""
    rng = np.random.default_rng(0)
    labels_train = np.repeat([0, 1, 2], 50)
    train = rng.normal(scale=0.1, size=(150, 3))
    train[:, 0] += 2.0 * labels_train  # training classes spread along the first axis
    axis = factor_axis(train, labels_train)
    assert abs(abs(axis[0]) - 1.0) < 1e-3
    labels_valid = np.repeat([0, 1, 2], 20)
    valid = rng.normal(scale=0.1, size=(60, 3))
    valid[:, 1] += 2.0 * labels_valid  # validation labels alone would pick the second axis
    assert abs(abs(factor_axis(valid, labels_valid)[1]) - 1.0) < 1e-3
    assert np.abs(valid @ axis - valid[:, 0] * np.sign(axis[0])).max() < 0.01
    assert factor_axis(train[:, :1], labels_train).tolist() == [1.0]


def test_the_correlation_is_rho_and_latentaudios_sigma_is_refused(small_cnn_store: Path, tmp_path: Path) -> None:
    """LatentAudio's `sigma` is the correlation of paired factor codes (rho here): a value copied into task.sigma
    would silently mean sqrt(1 - sigma^2) and is refused, naming task.rho."""
    with pytest.raises(ConfigError, match=r"task\.rho"):
        Trainer(flow_config(small_cnn_store, tmp_path / "runs", "task.sigma=0.9")).fit()


def test_the_latentaudio_config_uses_the_supervised_loss() -> None:
    cfg = load_config("flow_latentaudio", ["data.source=store", "task.layer=layer9"])
    assert cfg.task.loss == "supervised" and cfg.task.rho == 0.9 and cfg.task.sigma is None
    assert list(cfg.task.factor_dims) == [62, 1, 1] and cfg.task.components == 64
    assert cfg.task.centre_spacing == 4.0 and cfg.task.centre_scale == 1.0
    assert cfg.data.batch_size == 2048 and cfg.optim.lr == 0.0005 and cfg.model.params.blocks == 3
    assert cfg.model.params.coupling == "additive" and cfg.model.params.householder == 8
    assert load_config("flow", ["data.source=store", "task.layer=layer9"]).task.loss == "pairs"


def test_the_export_records_the_clips_the_flow_and_its_pca_trained_on(small_cnn_store: Path, tmp_path: Path) -> None:
    export = export_run(Trainer(flow_config(small_cnn_store, tmp_path / "runs", "train.epochs=1")).fit().run_dir)
    _, metadata = load_export_task(export)
    folds = ActivationStore(small_cnn_store).column("fold")
    assert sorted(metadata["train_indices"]) == np.flatnonzero(np.isin(folds, ["2", "3", "4", "5"])).tolist()
    assert set(metadata["pca_indices"]) <= set(metadata["train_indices"])
    assert metadata["valid_indices"] == np.flatnonzero(folds == "1").tolist() and metadata["store_clips"] == 120


def test_a_batch_of_pairs_is_drawn_at_once_and_equals_the_items_drawn_one_by_one() -> None:
    """`__getitems__` (what the DataLoader calls) draws the batch vectorised; each item is the same as drawn
    alone, in any batch; the shared factor is drawn uniformly and the partner among a's group, never a itself."""
    codes = np.stack([np.arange(60) % 3, np.arange(60) // 20], 1)
    pairs = FactorPairs(torch.arange(60.0)[:, None], codes, seed=3, length=6000)
    batch = pairs.__getitems__(list(range(6000)))
    alone = [pairs[i] for i in (0, 17, 5999)]
    for i, item in zip((0, 17, 5999), alone):
        assert all(torch.equal(batch[key][i], item[key]) for key in item)
    shuffled = pairs.__getitems__([5999, 17, 0])
    assert torch.equal(shuffled["x_b"], batch["x_b"][[5999, 17, 0]])
    a, b = batch["x_a"][:, 0].long().numpy(), batch["x_b"][:, 0].long().numpy()
    factor = batch["factor"].numpy() - 1
    assert (a != b).all() and (codes[a, factor] == codes[b, factor]).all()
    assert abs((factor == 0).mean() - 0.5) < 0.03  # two factors, drawn uniformly
    partners = np.bincount(b[(a == 0) & (factor == 0)], minlength=60)[codes[:, 0] == 0]  # clip 0's group: 20 clips
    assert partners[0] == 0 and partners[1:].min() > 0  # never itself; every other member drawn
    loader = torch.utils.data.DataLoader(pairs, batch_size=500, collate_fn=pairs.collate_fn)
    assert torch.equal(next(iter(loader))["x_b"], batch["x_b"][:500])


def test_a_checkpoint_or_export_evaluated_later_fits_the_same_coordinate_axes(small_cnn_store: Path, tmp_path: Path) -> None:
    """`audiointerp evaluate` of a flow run (its last checkpoint, or its export) does not run `build_data`: the
    coordinate axes are fitted on the same training clips, read from the run's store, so every metric over the
    validation clips' codes equals the trainer's own final evaluation. A store with another clip table is refused."""
    from audiointerp.datasets.store import StoreError
    from audiointerp.train.evaluate import evaluate

    result = Trainer(flow_config(small_cnn_store, tmp_path / "runs")).fit()
    export = export_run(result.run_dir)
    code_metrics = [key for key in result.metrics if "knn_" in key or "chance_" in key]
    assert "valid/knn_material@material_coordinate" in code_metrics
    for source, options in ((result.run_dir, {"checkpoint": "last"}), (export, {})):
        metrics = evaluate(source, out_dir=tmp_path / "eval" / source.name, progress=False, **options).metrics
        assert {key: metrics[key.removeprefix("valid/")] for key in code_metrics} == {
            key: result.metrics[key] for key in code_metrics}, source
    store = ActivationStore(small_cnn_store)
    shuffled = write_store(tmp_path / "shuffled", {"block3": store.load("block3")[::-1]},
                           {name: store.column(name)[::-1].tolist() for name in ("label", "fold", "material", "action")})
    task, _ = load_export_task(export)
    task.run_metadata = {**task.run_metadata, "store": str(shuffled)}
    with pytest.raises(StoreError, match="clip table is not the one the flow trained on"):
        task.coordinate_axes()
