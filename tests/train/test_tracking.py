from __future__ import annotations

import json
from pathlib import Path

from audiointerp.train.config import load_config
from audiointerp.train.tracking import wandb_mode, wandb_run_id
from audiointerp.train.trainer import Trainer


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
    artifacts: list[tuple[str, list[str]]] = []
    real_init = wandb.init

    def recording_init(*args, **kwargs):
        inits.append(kwargs)
        return real_init(*args, **kwargs)

    real_log_artifact = wandb.Run.log_artifact

    def recording_log_artifact(self, artifact, *args, aliases=None, **kwargs):
        artifacts.append((artifact.type, list(aliases or [])))
        return real_log_artifact(self, artifact, *args, aliases=aliases, **kwargs)

    monkeypatch.setattr(wandb, "init", recording_init)
    monkeypatch.setattr(wandb.Run, "log_artifact", recording_log_artifact)
    cfg = load_config("classifier", [*tiny_overrides, "tracking.backend=wandb", "tracking.mode=offline",
                                     "train.epochs=1", "tracking.audio_examples=3", "run_id=r1"])
    run = Trainer(cfg).fit().run_dir

    assert len(inits) == 1
    init = inits[0]
    assert init["project"] == "audiointerp" and init["group"] == "classifier" and init["job_type"] == "train"
    assert init["id"] == wandb_run_id("classifier", "r1") and init["resume"] == "allow" and init["mode"] == "offline"
    assert {"classifier", "small_cnn", "impacts0"} <= set(init["tags"])  # family, model, the data set's folder
    assert Path(init["dir"]) == run
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
