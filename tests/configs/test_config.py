from __future__ import annotations

from pathlib import Path

import pytest

from audiointerp.errors import ConfigError
from audiointerp.train.config import available_configs, load_config, to_yaml


def test_shipped_configs_load_with_required_values_given() -> None:
    assert "classifier" in available_configs()
    required = {"flow": ["task.layer=layer9"], "flow_latentaudio": ["task.layer=layer9"], "concepts": ["task.layer=output"]}  # values a config asks for beyond the data and the weights
    for name in available_configs():
        cfg = load_config(name, ["data.source=somewhere.csv", "model.checkpoint=weights.pt", *required.get(name, [])])
        assert cfg.experiment and cfg.task.name


def test_overrides_apply_and_types_are_converted() -> None:
    cfg = load_config("classifier", ["data.source=x.csv", "train.epochs=3", "optim.lr=0.5", "data.valid_folds=[2]"])
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.5 and list(cfg.data.valid_folds) == ["2"]
    assert "epochs: 3" in to_yaml(cfg)


def test_unknown_key_names_it_and_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'data.sorce'.*did you mean 'data.source'"):
        load_config("classifier", ["data.sorce=x.csv"])


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("experiment: e\ntask: {name: classifier}\ndata: {source: x.csv}\ntrain: {epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"'train.epoch'.*exp.yaml.*did you mean 'train.epochs'"):
        load_config(path)


def test_required_value_has_no_silent_default() -> None:
    with pytest.raises(ConfigError, match="data.source"):
        load_config("classifier")


def test_bad_type_and_bad_choice_are_errors() -> None:
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config("classifier", ["data.source=x", "train.epochs=many"])
    with pytest.raises(ConfigError, match=r"optim.scheduler.*did you mean 'cosine'"):
        load_config("classifier", ["data.source=x", "optim.scheduler=cosin"])


def test_unknown_task_and_config_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown task 'clasifier'.*did you mean 'classifier'"):
        load_config("classifier", ["data.source=x", "task.name=clasifier"])
    with pytest.raises(ConfigError, match=r"no config named 'clasifier'.*did you mean 'classifier'"):
        load_config("clasifier")


def test_malformed_override() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config("classifier", ["data.source"])


def test_swapping_the_model_on_the_command_line_drops_the_other_models_settings() -> None:
    cfg = load_config("classifier", ["data.source=x.csv", "model.name=mn04"])  # classifier.yaml's widths belong to small_cnn
    assert cfg.model.name == "mn04" and dict(cfg.model.params) == {} and cfg.model.checkpoint is None
    assert dict(cfg.model.frontend_params) == {}  # n_mels belonged to the log-mel front end
    cfg = load_config("classifier", ["data.source=x.csv", "model.name=mn04", "model.params.width_mult=0.1"])
    assert dict(cfg.model.params) == {"width_mult": 0.1}
    kept = load_config("esc50_mn10", ["data.source=x", "model.checkpoint=w.pt", "model.name=dymn10"])
    assert kept.model.frontend_params.augment is True  # the same EfficientAT front end keeps its settings
    assert kept.model.checkpoint == "w.pt"
    same = load_config("classifier", ["data.source=x.csv", "model.name=small_cnn"])
    assert list(same.model.params.widths) == list(load_config("classifier", ["data.source=x.csv"]).model.params.widths)


def test_test_folds_default_to_none_and_the_semantic_configs_rank_with_average_ties() -> None:
    """Every task gets data.test_folds (default: none held out); semDNN and catDNN share the default tie rule."""
    for name in available_configs():
        required = ["task.layer=layer9"] if name.startswith("flow") else ["task.layer=output"] if name == "concepts" else []
        cfg = load_config(name, ["data.source=somewhere.csv", "model.checkpoint=weights.pt", *required])
        assert list(cfg.data.test_folds) == [], name
    for name in ("semdnn", "catdnn", "semdnn_glove", "semdnn_unbalanced", "semdnn_untrained"):
        cfg = load_config(name, ["data.source=x.csv"])
        assert cfg.task.ties == "average" and list(cfg.task.top_n) == list(range(5, 16)), name
    assert list(load_config("semdnn", ["data.source=x.csv", "data.test_folds=[5]"]).data.test_folds) == ["5"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_yaml_whose_top_level_is_not_a_mapping_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"exp\.yaml.*top level.*mapping"):
        load_config(path)
    base = tmp_path / "variant.yaml"  # also as the base of a variant
    base.write_text("base: exp.yaml\ntrain: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml.*top level.*mapping"):
        load_config(base)


@pytest.mark.parametrize(
    ("override", "bound"),
    [
        ("train.epochs=-1", ">= 0"),
        ("train.max_steps=-5", ">= 0"),
        ("train.keep_last=-1", ">= 0"),
        ("data.batch_size=0", ">= 1"),
        ("data.eval_batch_size=-2", ">= 1"),
        ("train.gradient_accumulation_steps=0", ">= 1"),
        ("train.eval_every_epochs=0", ">= 1"),
        ("train.log_every_steps=0", ">= 1"),
        ("train.checkpoint_every_steps=0", ">= 1"),
        ("data.num_workers=-1", ">= 0"),
        ("optim.lr=0", "> 0"),
        ("optim.lr=-0.001", "> 0"),
    ],
)
def test_counts_and_learning_rates_out_of_range_are_named(override: str, bound: str) -> None:
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=rf"config key '{key}' is {value}.*must be {bound}"):
        load_config("classifier", ["data.source=x", override])


def test_zero_epochs_stays_the_untrained_baseline_and_limits_at_their_bounds_load() -> None:
    cfg = load_config("classifier", ["data.source=x", "train.epochs=0", "train.max_steps=0", "train.keep_last=0",
                                     "data.batch_size=1", "data.num_workers=0", "train.log_every_steps=1"])
    assert cfg.train.epochs == 0 and cfg.train.max_steps == 0 and cfg.train.keep_last == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.params.widths=[8,16,abc,16]", r"'widths' is \[8, 16, 'abc', 16\].*sequence of int.*'abc'"),
        ("model.params.widths=8", r"'widths' is 8.*expected a sequence of int"),
        ("model.params.dropout=abc", r"'dropout' is 'abc'.*expected float"),
        ("model.params.dropout=true", r"'dropout' is True.*expected float"),
    ],
)
def test_model_params_of_the_wrong_type_are_config_errors_naming_key_value_and_type(override: str, message: str) -> None:
    from audiointerp.models import build

    cfg = load_config("classifier", ["data.source=x", "model.name=small_cnn", override])
    with pytest.raises(ConfigError, match=rf"model 'small_cnn'.*{message}"):
        build(str(cfg.model.name), num_classes=3, **cfg.model.params)
