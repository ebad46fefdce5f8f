"""The trainer's DataLoaders: workers persist over epochs and still see each epoch's crops; pinned memory on CUDA;
`data.prefetch_factor` batches ahead."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from audiointerp.datasets import load_manifest
from audiointerp.train.config import load_config
from audiointerp.train.trainer import loader_options, make_loader


def crops(loader: torch.utils.data.DataLoader) -> torch.Tensor:
    return torch.cat([batch["audio"] for batch in loader])


def test_persistent_workers_give_each_epoch_the_crops_of_a_loader_without_workers(tiny_data: Path) -> None:
    """Known answer: epoch k's random training crops depend on (seed, epoch, index). Workers started in epoch 0
    and kept alive must return epoch 1's and 2's crops, equal to those a loader without workers returns."""
    from audiointerp.datasets import ManifestDataset

    manifest = load_manifest(str(tiny_data))
    dataset = ManifestDataset(manifest, sample_rate=16000, seconds=0.25, train=True, classes=manifest.class_list("label"),
                              seed=0, progress=False)
    persistent = make_loader(dataset, 16, False, 2, seed=0)
    plain = make_loader(dataset, 16, False, 0, seed=0)
    assert persistent.persistent_workers and persistent.prefetch_factor == 2 and not plain.persistent_workers
    epochs = []
    for epoch in range(3):
        dataset.set_epoch(epoch)
        with_workers = crops(persistent)
        epochs.append(with_workers)
        assert torch.equal(with_workers, crops(plain)), f"epoch {epoch}"
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_loader_options_pin_memory_on_cuda_and_take_the_prefetch_factor(tiny_overrides: list[str]) -> None:
    cfg = load_config("classifier", [*tiny_overrides, "data.prefetch_factor=6", "data.num_workers=1"])
    cuda = SimpleNamespace(device=torch.device("cuda", 0))
    cpu = SimpleNamespace(device=torch.device("cpu"))
    assert loader_options(cfg, cuda) == {"pin_memory": True, "prefetch_factor": 6}
    assert loader_options(cfg, cpu) == {"pin_memory": False, "prefetch_factor": 6}
    loader = make_loader(torch.utils.data.TensorDataset(torch.zeros(4)), 2, False, 1, 0, **loader_options(cfg, cpu))
    assert loader.prefetch_factor == 6 and loader.persistent_workers and not loader.pin_memory


def test_the_next_epoch_started_before_the_evaluation_gives_the_same_batches(tiny_overrides: list[str],
                                                                            monkeypatch) -> None:
    """`start_next_epoch` begins loading epoch k+1 before epoch k's evaluation and checkpoint (the workers fill
    their queues meanwhile); the batches it yields are exactly those of a loader started afterwards."""
    from audiointerp.train.tasks.classifier_task import ClassifierTask
    from audiointerp.train.trainer import Trainer, _Loop

    def batches(prefetch: bool, run_id: str) -> list[torch.Tensor]:
        seen: list[torch.Tensor] = []
        step = ClassifierTask.step

        def recorded(self, batch):
            seen.append(batch["audio"].clone())
            return step(self, batch)

        with monkeypatch.context() as patch:
            patch.setattr(ClassifierTask, "step", recorded)
            if not prefetch:
                patch.setattr(_Loop, "start_next_epoch", lambda self: None)
            Trainer(load_config("classifier", [*tiny_overrides, "train.epochs=3", "data.num_workers=2",
                                               f"run_id={run_id}"])).fit()
        return seen

    started_early, started_late = batches(True, "early"), batches(False, "late")
    assert len(started_early) == len(started_late) == 3 * 6  # 96 training clips, batch 16
    assert all(torch.equal(a, b) for a, b in zip(started_early, started_late))


def test_a_run_resumes_with_other_workers_to_the_weights_of_one_without(tiny_overrides: list[str]) -> None:
    """`data.num_workers` and `data.prefetch_factor` may change on resume (e.g. a flow run from before flow.yaml
    asked for a worker): epoch 1 without workers, epoch 2 resumed with two, ends with the weights and metrics of
    an uninterrupted run without workers (a flat learning rate, since train.epochs changes too)."""
    from safetensors.torch import load_file

    from audiointerp.train.trainer import Trainer

    flat = [*tiny_overrides, "optim.scheduler=constant", "optim.warmup_steps=0"]
    plain = Trainer(load_config("classifier", [*flat, "train.epochs=2", "data.num_workers=0", "run_id=plain"])).fit()
    Trainer(load_config("classifier", [*flat, "train.epochs=1", "data.num_workers=0", "run_id=resumed"])).fit()
    resumed = Trainer(load_config("classifier", [*flat, "train.epochs=2", "data.num_workers=2", "data.prefetch_factor=3",
                                                 "run_id=resumed"])).fit()
    assert resumed.metrics == plain.metrics
    ours, theirs = (load_file(str(run.run_dir / "checkpoints" / "step-00000012" / "model.safetensors"))
                    for run in (resumed, plain))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
