"""The classifier-gradient autoencoder task on the built-in sounds, with tiny networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiointerp.configs import load_config
from audiointerp.train.tasks import Task, task_class
from audiointerp.train.trainer import Trainer

TINY_AE = ["model.params.channels=8", "model.params.num_blocks=[1,1,1,1,1,1]", "task.ae_rate=16000", "task.start=random",
           "task.classifier=small_cnn", "task.classifier_checkpoint=null", "task.classifier_params.widths=[4,8,8,16]",
           "data.format=manifest", "data.sample_rate=16000", "data.seconds=1.0", "data.batch_size=8", "data.eval_batch_size=8",
           "data.num_workers=0", "model.checkpoint=null", "tracking.backend=none", "train.progress=false",
           "tracking.audio_examples=2"]


def overrides(tiny_data: Path, tmp_path: Path) -> list[str]:
    return [*TINY_AE, f"data.source={tiny_data}", f"output_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}"]


def built_task(config: str, overrides: list[str]) -> tuple[Task, dict[str, torch.Tensor]]:
    """The config's task with its models built, in training mode, and a batch of 4 training clips."""
    cfg = load_config(config, overrides)
    task = task_class(str(cfg.task.name))(cfg)
    data = task.build_data()
    task.build_models(data.metadata)
    task.train()
    return task, {k: torch.stack([data.train[i][k] for i in range(4)]) for k in ("audio", "target", "index")}


def test_the_classifier_stays_frozen_in_eval_mode_while_the_autoencoder_learns(tiny_data: Path, tmp_path: Path) -> None:
    task, batch = built_task("ae_finetune_mn10", overrides(tiny_data, tmp_path))
    assert not task.classifier.training and task.autoencoder.training
    assert not any(p.requires_grad for p in task.classifier.parameters())
    classifier_before = {k: v.clone() for k, v in task.classifier.state_dict().items()}
    ae_before = {k: v.clone() for k, v in task.autoencoder.state_dict().items()}
    optimizer = torch.optim.AdamW(task.trainable_parameters(), lr=1e-3)
    loss, logs = task.step(batch)
    loss.backward()
    optimizer.step()
    for key, value in task.classifier.state_dict().items():  # weights and BatchNorm statistics unchanged
        assert torch.equal(value, classifier_before[key]), key
    assert any(not torch.equal(v, ae_before[k]) for k, v in task.autoencoder.state_dict().items())
    assert torch.isfinite(loss) and "accuracy" in logs


def test_decoder_only_training_leaves_the_encoder(tiny_data: Path, tmp_path: Path) -> None:
    cfg = load_config("ae_finetune_mn10", [*overrides(tiny_data, tmp_path), "task.train_part=decoder"])
    task = task_class("ae_finetune")(cfg)
    task.build_models(task.build_data().metadata)
    trained = {n for n, p in task.autoencoder.named_parameters() if p.requires_grad}
    frozen = {n for n, p in task.autoencoder.named_parameters() if not p.requires_grad}
    assert trained and all(n.startswith("autoencoder.decoder.") for n in trained)
    assert frozen and all(n.startswith("autoencoder.encoder.") for n in frozen)
    assert set(map(id, task.trainable_parameters())) == {id(p) for p in task.autoencoder.parameters() if p.requires_grad}


def test_a_short_run_reports_accuracy_on_originals_and_reconstructions(tiny_data: Path, tmp_path: Path) -> None:
    result = Trainer(load_config("ae_finetune_mn10", [*overrides(tiny_data, tmp_path), "train.max_steps=2"])).fit()
    for key in ("accuracy_original", "accuracy_reconstruction", "accuracy_change", "snr_db", "mrstft_distance"):
        assert f"valid/{key}" in result.metrics
    assert result.metrics["valid/examples"] == 24


TINY_RECONSTRUCTION = [o for o in TINY_AE if not o.startswith("task.classifier")]


def reconstruction_overrides(tiny_data: Path, tmp_path: Path) -> list[str]:
    return [*TINY_RECONSTRUCTION, f"data.source={tiny_data}", f"output_dir={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'cache'}"]


def test_reconstruction_training_lowers_the_mse(tiny_data: Path, tmp_path: Path) -> None:
    task, batch = built_task("reconstruction_esc50", reconstruction_overrides(tiny_data, tmp_path))
    optimizer = torch.optim.Adam(task.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss, _ = task.step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_esc50_start_exports_listening_clips_and_starts_ae_finetune(tiny_data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from audiointerp.evaluation.listening import listening_page, read_clips
    from audiointerp.train.export import export_run

    run = Trainer(load_config("reconstruction_esc50", [*reconstruction_overrides(tiny_data, tmp_path),
                                                       "train.max_steps=3", "optim.lr=0.001"])).fit()
    assert (run.run_dir / "figures" / "spectrograms.png").is_file()
    assert {"valid/loss", "valid/snr_db", "valid/mrstft_distance"} <= set(run.metrics)
    pretrained = export_run(run.run_dir)
    clips = read_clips(pretrained)
    assert len(clips) == 2 and clips[0]["original"] == f"{clips[0]['class']}_0000_original.wav"
    assert int(clips[1]["index"]) == 23 and clips[0]["class"] != clips[1]["class"]  # spread over the validation set
    assert all((pretrained / "listening" / c[k]).is_file() for c in clips for k in ("original", "reconstruction"))

    # the esc50 start loads exactly the exported autoencoder
    cfg = load_config("ae_finetune_mn10", [*overrides(tiny_data, tmp_path), "task.start=esc50",
                                           f"model.checkpoint={pretrained}", "experiment=from-esc50"])
    task = task_class("ae_finetune")(cfg)
    task.build_models(task.build_data().metadata)
    exported = load_file(str(pretrained / "model.safetensors"))
    assert all(torch.equal(v, exported[k]) for k, v in task.autoencoder.state_dict().items())

    finetuned = export_run(Trainer(load_config(cfg, ["train.max_steps=2"])).fit().run_dir)
    tuned_clips = read_clips(finetuned)
    assert [c["index"] for c in tuned_clips] == [c["index"] for c in clips]
    assert all(c["predicted_original"] and c["predicted_reconstruction"] for c in tuned_clips)
    page = listening_page([pretrained, finetuned], tmp_path / "listen")
    html = page.read_text()
    assert html.count("<audio") == 2 * 3 and "through small_cnn" in html  # original + two reconstructions per clip


def test_esc50_start_refuses_an_export_of_another_task(tiny_data: Path, tmp_path: Path) -> None:
    from audiointerp.errors import ConfigError
    from audiointerp.train.export import export_run

    classifier = export_run(Trainer(load_config("classifier", [
        f"data.source={tiny_data}", f"output_dir={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'cache'}",
        "model.params.widths=[4,8,8,16]", "train.max_steps=1", "tracking.backend=none", "train.progress=false",
        "data.batch_size=8"])).fit().run_dir)
    cfg = load_config("ae_finetune_mn10", [*overrides(tiny_data, tmp_path), "task.start=esc50", f"model.checkpoint={classifier}"])
    with pytest.raises(ConfigError, match="needs the export of a `reconstruction` run"):
        task_class("ae_finetune")(cfg).build_data()
    cfg = load_config("ae_finetune_mn10", [*overrides(tiny_data, tmp_path), "task.start=esc50"])
    with pytest.raises(ConfigError, match="task.start=esc50 needs model.checkpoint"):
        task_class("ae_finetune")(cfg).build_data()


def test_an_autoencoder_export_gives_its_encoder_layers_to_a_store(tiny_data: Path, tmp_path: Path) -> None:
    from audiointerp.analysis import ActivationStore, ExtractSettings, extract
    from audiointerp.datasets import load_manifest
    from audiointerp.datasets.manifest import ManifestDataset
    from audiointerp.train.export import export_run, load_export

    run = Trainer(load_config("reconstruction_esc50", [*reconstruction_overrides(tiny_data, tmp_path),
                                                       "train.max_steps=1"])).fit()
    exported = export_run(run.run_dir)
    store = ActivationStore(extract(ExtractSettings(model=str(exported), data=str(tiny_data), layers=["down1", "latent"],
                                                    chunk_size=64), tmp_path / "store", progress=False))
    assert store.layers == ["down1", "latent"]
    wrapper = load_export(exported)
    manifest = load_manifest(str(tiny_data))
    audio = ManifestDataset(manifest, sample_rate=wrapper.input_rate, seconds=None, train=False,
                            classes=manifest.class_list("label"), progress=False)[7]["audio"]
    with torch.no_grad():
        expected = wrapper.encode(audio[None])  # the export's own encoder on the same clip
    torch.testing.assert_close(torch.from_numpy(store.load("latent", [7])[0, 0]), expected[0], rtol=1e-4, atol=1e-5)
