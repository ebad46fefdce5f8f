from __future__ import annotations

from pathlib import Path

import pytest

from audiointerp.configs import available_configs, load_config, to_yaml
from audiointerp.errors import ConfigError


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
