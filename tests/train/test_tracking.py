from __future__ import annotations

import json
from pathlib import Path

import pytest

from audiointerp.train.config import load_config
from audiointerp.train.tracking import flat_config, summary_goal, wandb_mode, wandb_run_id
from audiointerp.train.trainer import Trainer


@pytest.mark.parametrize("name, goal", [
    ("valid/accuracy", "max"), ("test/top5_accuracy", "max"), ("valid/balanced_accuracy", "max"),
    ("valid/mAP", "max"), ("valid/ranking_score", "max"), ("valid/amcss@5", "max"),
    ("valid/macro_rdm_correlation", "max"), ("valid/rsa_r2cv", "max"), ("valid/snr_db", "max"),
    ("valid/knn_material@material_coordinate", "max"), ("valid/accuracy_change", "max"), ("test/f1", "max"),
    ("valid/auc", "max"), ("valid/spearman", "max"), ("valid/r2", "max"),
    ("valid/loss", "min"), ("train/loss", "min"), ("valid/ce_reconstruction", "min"),
    ("valid/mrstft_distance", "min"), ("valid/reconstruction_mse", "min"), ("valid/nll_a", "min"),
    ("valid/bits_per_dim", "min"), ("test/error_rate", "min"),
    ("train/lr", None), ("valid/examples", None), ("valid/chance_material", None), ("valid/estimated_dims_a", None),
    ("valid/loss_correlation", None),  # both kinds of word: no side taken
])
def test_the_summary_rule_takes_the_best_value_where_the_name_says_which_way_is_better(name: str, goal) -> None:
    assert summary_goal(name) == goal


def test_the_config_goes_to_wandb_flat() -> None:
    nested = {"optim": {"lr": 0.1}, "model": {"params": {"widths": [4, 8]}, "frontend_params": {}},
              "tracking": {"condition": "optim.lr=0.1"}, "run_id": None}
    assert flat_config(nested) == {"optim.lr": 0.1, "model.params.widths": [4, 8], "model.frontend_params": {},
                                   "tracking.condition": "optim.lr=0.1", "run_id": None}


def test_mode_auto_is_offline_without_credentials_and_online_with_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("online") == "online"


def test_run_id_is_stable_and_valid() -> None:
    assert wandb_run_id("sem dnn/v2", "20260101-000000-ab12") == "sem-dnn-v2-20260101-000000-ab12"


def test_an_offline_wandb_run_gets_metadata_scalars_figures_audio_and_the_best_checkpoint(
    tiny_overrides: list[str], monkeypatch
) -> None:
    import wandb

    inits: list[dict] = []
    runs: list = []
    artifacts: list[tuple[str, list[str]]] = []
    metrics: list[tuple[str, dict]] = []
    real_init = wandb.init

    def recording_init(*args, **kwargs):
        inits.append(kwargs)
        runs.append(real_init(*args, **kwargs))
        return runs[-1]

    real_define_metric = wandb.Run.define_metric

    def recording_define_metric(self, name, *args, **kwargs):
        metrics.append((name, kwargs))
        return real_define_metric(self, name, *args, **kwargs)

    real_log_artifact = wandb.Run.log_artifact

    def recording_log_artifact(self, artifact, *args, aliases=None, **kwargs):
        artifacts.append((artifact.type, list(aliases or [])))
        return real_log_artifact(self, artifact, *args, aliases=aliases, **kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    monkeypatch.setattr(wandb.Run, "log_artifact", recording_log_artifact)
    monkeypatch.setattr(wandb.Run, "define_metric", recording_define_metric)
    cfg = load_config("classifier", [*tiny_overrides, "tracking.backend=wandb", "tracking.mode=offline",
                                     "train.epochs=1", "tracking.audio_examples=3", "run_id=r1"])
    run = Trainer(cfg).fit().run_dir

    assert len(inits) == 1
    init = inits[0]
    assert init["project"] == "audiointerp" and init["group"] == "classifier" and init["job_type"] == "train"
    assert init["id"] == wandb_run_id("classifier", "r1") and init["resume"] == "allow" and init["mode"] == "offline"
    assert {"classifier", "small_cnn", "impacts0"} <= set(init["tags"])  # family, model, the data set's folder
    assert Path(init["dir"]) == run
    config = dict(runs[0].config)  # flat: every key filters and groups on its own
    assert config["optim.lr"] == cfg.optim.lr and config["tracking.condition"] is None and "optim" not in config
    defined = dict(metrics)
    assert defined["train/*"] == {"step_metric": "step"} and defined["valid/*"] == {"step_metric": "step"}
    assert defined["valid/accuracy"] == {"step_metric": "step", "summary": "max"}
    assert defined["valid/loss"] == {"step_metric": "step", "summary": "min"}
    assert "valid/examples" not in defined and "train/loss" not in defined  # no side, and training keeps the last
    assert [a for a in artifacts if a[0] == "model"] == [("model", ["best", "latest"])]
    assert ("run_table", []) in artifacts  # wandb stores the audio table (with its clips) as a run artifact

    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(wandb_run_id("classifier", "r1"))
    media = offline[0] / "files" / "media"
    assert list((media / "images" / "valid").glob("confusion_matrix_*.png"))
    table = json.loads(next((media / "table" / "valid").glob("examples_*.table.json")).read_text())
    assert table["columns"] == ["index", "audio", "true", "predicted", "confidence"] and len(table["data"]) == 3
    assert (run / "metrics.jsonl").stat().st_size > 0  # written whatever the tracker

    from audiointerp.train.evaluate import evaluate

    evaluate(run, progress=False)  # an evaluation is a W&B run of its own, in the same group
    assert len(inits) == 2 and inits[1]["job_type"] == "eval" and inits[1]["group"] == "classifier"
    assert inits[1]["id"] == wandb_run_id("classifier", "r1-eval-validation")
    assert list((run / "eval" / "validation" / "wandb").glob("offline-run-*"))
