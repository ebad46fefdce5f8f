"""The shipped YAMLs state only what differs from the schema's defaults (and from their base), each key with its
comment; `show_config` prints the fully resolved config with every key's comment from the dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from audiointerp.configs.schema import ExperimentConfig
from audiointerp.errors import ConfigError
from audiointerp.train.config import available_configs, config_path, field_comments, load_config, restated_keys, show_config
from audiointerp.train.tasks import available_tasks, task_class

REQUIRED: dict[str, list[str]] = {"flow": ["task.layer=layer9"], "flow_latentaudio": ["task.layer=layer9"], "concepts": ["task.layer=output"]}
"""Values a shipped config asks for beyond `data.source`."""


def _given(name: str) -> list[str]:
    """Overrides that give every value `name` requires."""
    return ["data.source=somewhere.csv", *REQUIRED.get(name, [])]


def uncommented_keys(text: str) -> list[str]:
    """Dotted keys of a YAML text whose line carries no `# comment` after the value. A key whose value is a block
    mapping (a section such as `data:`) needs none; every other key does, on the line where its value ends."""
    lines = text.splitlines()
    missing: list[str] = []

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key, value in node.value:
            full = f"{prefix}{key.value}"
            if isinstance(value, yaml.MappingNode) and not value.flow_style and value.value:
                walk(value, full + ".")
                continue
            end = value.end_mark
            line, column = (end.line, end.column) if end.column > 0 or end.line == key.start_mark.line else (end.line - 1, None)
            rest = lines[line][column:] if column is not None else lines[line]
            if "#" not in rest:
                missing.append(full)

    root = yaml.compose(text)
    if isinstance(root, yaml.MappingNode):
        walk(root, "")
    return missing


def _shown(text: str) -> dict[str, str]:
    """dotted key -> comment of each line of `show_config`'s output."""
    shown: dict[str, str] = {}
    path: list[str] = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        entry, _, comment = line.strip().partition("  # ")
        path = [*path[:depth], entry.split(":", 1)[0]]
        shown[".".join(path)] = comment
    return shown


def _schema_fields(klass: type, prefix: str = "") -> list[tuple[str, type, str]]:
    """(dotted key, defining dataclass, field name) of every leaf field of a schema dataclass; sections recurse."""
    out: list[tuple[str, type, str]] = []
    for item in dataclasses.fields(klass):
        factory = item.default_factory
        if isinstance(factory, type) and dataclasses.is_dataclass(factory):
            out.extend(_schema_fields(factory, f"{prefix}{item.name}."))
        elif item.name != "task" or klass is not ExperimentConfig:
            out.append((f"{prefix}{item.name}", klass, item.name))
    return out


# --- (a) no shipped YAML restates a default or its base's value ---------------------------------------------------


@pytest.mark.parametrize("name", available_configs())
def test_no_shipped_yaml_restates_a_default_or_its_base(name: str) -> None:
    assert restated_keys(name) == [], f"{name}.yaml restates these values: remove them (`audiointerp configs show {name}` still shows them)"


def test_the_check_flags_a_restated_default(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(
        "experiment: exp  # differs: required\n"
        "task:\n  name: classifier  # picks the schema\n  label_smoothing: 0.0  # restates the task's default\n"
        "  mixup_alpha: 0.2  # differs\n"
        "data:\n  seconds: 1  # restates 1.0, as the schema types it\n  batch_size: 16  # differs\n"
        "model:\n  name: small_cnn  # differs\n  checkpoint: ???  # has no effect over a default of null\n"
        "  params: {dropout: 0.1}  # differs: the builder's keyword arguments\n"
        "optim:\n  scheduler: cosine  # restates the default\n"
    )
    assert restated_keys(path) == ["task.label_smoothing", "data.seconds", "model.checkpoint", "optim.scheduler"]


def test_the_check_flags_a_value_its_base_already_gives(tmp_path: Path) -> None:
    (tmp_path / "parent.yaml").write_text(
        "experiment: parent\ntask: {name: classifier}\nmodel: {name: small_cnn, params: {dropout: 0.1, widths: [8, 16]}}\n"
        "optim: {lr: 0.01}\n"
    )
    child = tmp_path / "child.yaml"
    child.write_text(
        "base: parent.yaml\nexperiment: child\ntask: {name: classifier}\n"
        "model: {params: {dropout: 0.1, widths: [8, 32]}}\noptim: {lr: 0.01, weight_decay: 0.0}\n"
    )
    assert restated_keys(child) == ["task.name", "model.params.dropout", "optim.lr", "optim.weight_decay"]
    child.write_text("base: parent.yaml\nexperiment: child\noptim: {lr: 0.02}\n")
    assert restated_keys(child) == []
    assert restated_keys(tmp_path / "parent.yaml") == []  # task.name picks the schema: not a restatement without a base


# --- (b) every key left in a shipped YAML has its comment ------------------------------------------------------------


@pytest.mark.parametrize("name", available_configs())
def test_every_key_of_a_shipped_yaml_has_a_comment(name: str) -> None:
    assert uncommented_keys(config_path(name).read_text()) == [], f"{name}.yaml: say why each of these differs"


def test_the_comment_check_flags_a_bare_key() -> None:
    text = "a: 1  # why\nb:\n  c: [1, 2]  # why\n  d: x\n  e: [1,\n     2]  # why, where the value ends\nf: {g: 1}\ng: null\n"
    assert uncommented_keys(text) == ["b.d", "f", "g"]


def test_every_schema_and_task_field_has_a_comment() -> None:
    undocumented = [key for key, klass, name in _schema_fields(ExperimentConfig) if not field_comments(klass).get(name)]
    for task in available_tasks():
        config = task_class(task).Config
        undocumented += [f"task.{name} ({task})" for name in (f.name for f in dataclasses.fields(config)) if not field_comments(config).get(name)]
    assert undocumented == []


# --- (c) show_config ---------------------------------------------------------------------------------------------------


def test_show_config_lists_every_schema_key_with_its_comment() -> None:
    text = show_config("classifier")
    shown = _shown(text)
    task_config = task_class("classifier").Config
    expected = _schema_fields(ExperimentConfig) + _schema_fields(task_config, "task.")
    for key, klass, name in expected:
        assert key in shown, f"{key} is missing from `configs show classifier`"
        assert field_comments(klass)[name] in shown[key], key
    assert shown["optim.lr"].startswith("(default: 0.001) ")  # classifier.yaml's 0.002 differs from the default
    assert shown["data.source"].startswith("(required) ")
    assert "(default" not in shown["optim.name"]  # adamw is the default
    assert yaml.safe_load(text)["data"]["source"] == "???"  # shown even though not given


@pytest.mark.parametrize("name", available_configs())
def test_show_config_parses_back_to_the_resolved_config(name: str) -> None:
    overrides = [*_given(name), "train.epochs=3"]
    text = show_config(name, overrides)
    assert yaml.safe_load(text) == OmegaConf.to_container(load_config(name, overrides), resolve=True)
    assert "train.epochs=3" in text.splitlines()[0]


def test_show_config_refuses_what_load_config_refuses() -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'train.epochs'"):
        show_config("classifier", ["train.epoch=3"])
    with pytest.raises(ConfigError, match="optim.scheduler"):
        show_config("classifier", ["optim.scheduler=cosin"])
    with pytest.raises(ConfigError, match="no config named"):
        show_config("clasifier")


# --- (d) the papers' values, as the shipped YAMLs stated them before they were cut to what differs ------------------

PINNED: dict[str, dict[str, Any]] = {
    "semdnn": {"task.target": "embedding", "task.vectors": "word2vec", "task.word2vec_dim": 300, "task.balanced": True,
               "task.clusters": 300, "task.top_n": list(range(5, 16)), "data.sample_rate": 16000, "data.seconds": 0.975,
               "data.batch_size": 32, "optim.name": "adam", "optim.lr": 0.001, "optim.scheduler": "cosine",
               "optim.warmup_steps": 100, "optim.grad_clip": 5.0, "train.epochs": 30, "train.best_metric": "valid/ranking_score"},
    "catdnn": {"task.target": "multi_hot", "optim.lr": 0.001, "train.epochs": 30, "data.seconds": 0.975},
    "semdnn_untrained": {"train.epochs": 0, "optim.lr": 0.001},
    "cae": {"optim.lr": 0.001, "train.epochs": 30, "train.best_metric": "valid/loss", "data.batch_size": 32},
    "esc50_mn10": {"optim.name": "adam", "optim.lr": 6e-5, "optim.weight_decay": 0.0, "optim.scheduler": "exp_warmup_linear_down",
                   "optim.warmup_epochs": 10.0, "optim.rampdown_start_epoch": 10.0, "optim.rampdown_epochs": 65.0,
                   "optim.last_lr_ratio": 0.01, "optim.grad_clip": None, "data.batch_size": 128, "train.epochs": 80,
                   "task.mixup_alpha": 0.3, "task.roll_samples": 4000, "task.gain_db": 12, "data.valid_folds": ["1"]},
    "esc50_dymn10": {"optim.lr": 4e-5, "model.name": "dymn10", "train.epochs": 80},
    "esc50_passt": {"optim.name": "adamw", "optim.lr": 1e-5, "optim.weight_decay": 1e-4, "optim.warmup_epochs": 5.0,
                    "optim.rampdown_start_epoch": 50.0, "optim.rampdown_epochs": 50.0, "optim.last_lr_ratio": 0.01,
                    "data.batch_size": 12, "train.epochs": 10, "task.roll_samples": 50, "task.gain_db": 7},
    "ae_finetune_mn10": {"optim.name": "adamw", "optim.lr": 3e-5, "optim.weight_decay": 1e-5, "optim.scheduler": "cosine",
                         "optim.warmup_steps": 0, "data.batch_size": 4, "train.epochs": 100, "task.reconstruction_weight": 0.0,
                         "task.ae_rate": 48000, "task.train_part": "both", "data.train_folds": ["2", "3", "4", "5"]},
    "reconstruction_esc50": {"optim.lr": 3e-5, "optim.weight_decay": 0.0, "train.epochs": 70,
                             "train.gradient_accumulation_steps": 16, "data.batch_size": 4, "task.spectral_weight": 0.0},
    "flow": {"task.rho": 0.975, "task.loss": "pairs", "task.components": 64, "optim.lr": 0.0005, "data.batch_size": 2048},
    "flow_latentaudio": {"task.loss": "supervised", "task.rho": 0.9, "task.factor_dims": [62, 1, 1], "task.components": 64,
                         "task.centre_spacing": 4.0, "task.centre_scale": 1.0, "data.batch_size": 2048, "model.params.blocks": 3,
                         "model.params.coupling": "additive", "model.params.mask": "checkerboard",
                         "model.params.householder": 8, "optim.name": "adam", "optim.lr": 0.0005},
    "concepts": {"task.l1": 0.05, "task.vectors": "glove-6b-50d", "optim.lr": 0.003, "train.epochs": 30},
    "classifier": {"optim.lr": 0.002, "train.epochs": 12, "data.sample_rate": 16000, "data.seconds": 1.0},
}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_papers_values_hold(name: str) -> None:
    cfg = OmegaConf.to_container(load_config(name, _given(name)), resolve=True)
    got = {key: OmegaConf.select(OmegaConf.create(cfg), key) for key in PINNED[name]}
    got = {key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value for key, value in got.items()}
    assert got == PINNED[name]
