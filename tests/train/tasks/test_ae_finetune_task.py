"""The classifier-gradient autoencoder task on the built-in sounds, with tiny networks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audiointerp.train.config import load_config
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


NARROW = {"channels": 8, "multipliers": [1, 2, 2], "factors": [2, 2], "num_blocks": [1, 1]}  # the quickstart's


def hub_file(tmp_path: Path, seed: int = 1) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny autoencoder's random weights saved as the hub file is laid out (pytorch_model.bin, keys prefixed
    `autoencoder.`); returns the file and the bare (unprefixed) state dict."""
    from audiointerp.models import build
    from audiointerp.models.archisound import initialise

    torch.manual_seed(seed)
    bare = initialise(build("autoencoder1d-at-v1", **NARROW), "random")
    for parameter in bare.parameters():  # GroupNorm 1/0 and zero biases would hide a layer that was not loaded
        parameter.data.add_(0.01 * torch.randn_like(parameter))
    state = {k: v.clone() for k, v in bare.state_dict().items()}
    path = tmp_path / "autoencoder1d-AT-v1" / "pytorch_model.bin"
    path.parent.mkdir(parents=True)
    torch.save({f"autoencoder.{k}": v for k, v in state.items()}, path)
    return path, state


def test_reconstruction_esc50_is_the_thesis_pretraining_of_the_hub_weights(tiny_data: Path, tmp_path: Path) -> None:
    """pretrain_autoencoder.py: the hub autoencoder, AdamW lr 3e-5 without weight decay, cosine over 70 epochs,
    batch 4 x accumulation 16; the shipped config starts from `model.checkpoint`, not from random weights."""
    from audiointerp.train.export import export_run

    path, hub = hub_file(tmp_path)
    thesis = [o for o in TINY_RECONSTRUCTION if not o.startswith(("task.start", "model.", "data.batch_size"))]
    thesis += [f"model.params.{k}=[{','.join(map(str, v))}]" if isinstance(v, list) else f"model.params.{k}={v}"
               for k, v in NARROW.items()]
    cfg = load_config("reconstruction_esc50", [*thesis, f"data.source={tiny_data}", f"output_dir={tmp_path / 'runs'}",
                                               f"data.cache_dir={tmp_path / 'cache'}", f"model.checkpoint={path}"])
    assert cfg.task.start == "pretrained"
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.scheduler) == ("adamw", 3e-5, 0.0, "cosine")
    assert (cfg.train.epochs, cfg.data.batch_size, cfg.train.gradient_accumulation_steps) == (70, 4, 16)
    task = task_class("reconstruction")(cfg)
    task.build_models(task.build_data().metadata)
    loaded = task.autoencoder.autoencoder.state_dict()
    assert loaded.keys() == hub.keys() and all(torch.equal(loaded[k], hub[k]) for k in hub)

    # one update (of one batch, to keep the test short): Adam's first step moves every weight with a gradient by
    # lr, and weight decay 0 adds nothing
    run = Trainer(load_config(cfg, ["train.max_steps=1", "train.gradient_accumulation_steps=1"])).fit()
    from safetensors.torch import load_file

    trained = load_file(str(export_run(run.run_dir) / "model.safetensors"))
    change = torch.cat([(trained[f"autoencoder.{k}"] - v).abs().flatten() for k, v in hub.items() if v.is_floating_point()])
    assert float(change.max()) <= 3e-5 * 1.01  # float32 rounding of weights near 1
    assert float(change.median()) == pytest.approx(3e-5, rel=0.01)


def test_reconstruction_needs_the_hub_file_unless_it_starts_at_random(tiny_data: Path, tmp_path: Path) -> None:
    from audiointerp.errors import ConfigError

    base = [o for o in reconstruction_overrides(tiny_data, tmp_path) if not o.startswith(("task.start", "model.checkpoint"))]
    with pytest.raises(Exception, match="model.checkpoint"):  # the thesis start needs the hub file
        task_class("reconstruction")(load_config("reconstruction_esc50", base)).build_data()
    with pytest.raises(ConfigError, match="task.start=pretrained needs model.checkpoint"):
        task_class("reconstruction")(load_config("reconstruction_esc50", [*base, "model.checkpoint=null"])).build_data()
    task = task_class("reconstruction")(load_config("reconstruction_esc50", [*base, "task.start=random", "model.checkpoint=null"]))
    task.build_models(task.build_data().metadata)
    norms = [m for m in task.autoencoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)


def test_the_spectral_term_of_reconstruction_adds_its_weight_times_the_stft_distance(tiny_data: Path, tmp_path: Path) -> None:
    task, batch = built_task("reconstruction_esc50", reconstruction_overrides(tiny_data, tmp_path))
    task.eval()
    with torch.no_grad():
        plain, plain_logs = task.step(batch)
        task.cfg.task.spectral_weight = 0.5
        weighted, logs = task.step(batch)
        reconstruction = task.autoencoder(batch["audio"])
        expected_mse = torch.nn.functional.mse_loss(reconstruction, batch["audio"])
        distance = task.stft_distance(reconstruction, batch["audio"]).mean()
    torch.testing.assert_close(plain, expected_mse)
    torch.testing.assert_close(weighted, expected_mse + 0.5 * distance)
    assert "mrstft_distance" not in plain_logs and float(logs["mrstft_distance"]) == pytest.approx(float(distance))
