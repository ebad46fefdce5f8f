"""Stochastic weight averaging (Izmailov et al., UAI 2018), as PaSST's ESC-50 recipe uses it.

`train.swa=true` keeps the equal-weight mean of the task's export module's floating-point parameters as they are
after each epoch from `train.swa_start_epoch` to `train.swa_end_epoch` (1-based; null: to the last epoch).
Buffers (BatchNorm statistics) are not averaged: the averaged weights are evaluated with the live model's buffers.
PaSST's callback evaluates a copy made at the start whose buffers never change; for PaSST both are the same (its
buffers are constants). For networks with BatchNorm it is an approximation (a warning says so; torch's
`update_bn` pass is not run).

The reference, kkoutini/PaSST `ex_esc50.py` with `helpers/swa_callback.py` (`swa_epoch_start=2`, `swa_freq=1`),
adds the weights at the start of every epoch from the second on: the weights after epochs 1 to 9 of its 10, never
those after the last; the learning-rate schedule is not changed (its SWALR is never stepped). That is
`swa_start_epoch: 1, swa_end_epoch: 9` here (configs/esc50_passt.yaml).

Each evaluation after the first averaged epoch also scores the mean (`valid/swa_<metric>`, swapped into the
module and back), so `train.best_metric` may be one of those; after training the final mean is scored on the test
folds too (`test/swa_<metric>`). Every checkpoint holds the mean so far and its count in `swa.safetensors`, so a
resumed run continues the same mean; `audiointerp export RUN --swa` exports the last checkpoint's (all of it).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch
from omegaconf import DictConfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from audiointerp.errors import CheckpointError, ConfigError

log = logging.getLogger("audiointerp")

SWA_FILE = "swa.safetensors"  # a checkpoint's mean of the averaged parameters, with their count in its metadata
PREFIX = "swa_"  # the averaged weights' metrics: valid/swa_accuracy, test/swa_loss, ...


def check_swa(train: DictConfig) -> None:
    """ConfigError for SWA epochs that cannot be: a start below 1, an end before the start, or a start after the
    last epoch (nothing would ever be averaged)."""
    if not train.swa:
        return
    start, end, epochs = int(train.swa_start_epoch), train.swa_end_epoch, int(train.epochs)
    if start < 1:
        raise ConfigError(f"train.swa_start_epoch={start}: epochs count from 1 (the weights after the first epoch)")
    if end is not None and int(end) < start:
        raise ConfigError(f"train.swa_end_epoch={end} is before train.swa_start_epoch={start}")
    if start > epochs:
        raise ConfigError(f"train.swa_start_epoch={start} is after the last epoch (train.epochs={epochs}): nothing "
                          "would be averaged; lower it or set train.swa=false")


def check_swa_reached(train: DictConfig, total_updates: int, updates_per_epoch: int) -> None:
    """ConfigError when `train.best_metric` is an averaged weights' metric (`valid/swa_*`) but the run's updates
    (`train.max_steps`) end before the first averaged epoch does: no checkpoint could ever be chosen as best."""
    if not train.swa or not str(train.best_metric).startswith(f"valid/{PREFIX}"):
        return
    needed = int(train.swa_start_epoch) * updates_per_epoch
    if total_updates < needed:
        raise ConfigError(f"train.best_metric={train.best_metric} needs averaged weights, but the run ends after "
                          f"{total_updates} updates, before epoch {train.swa_start_epoch} (update {needed}) is "
                          "averaged: choose a valid/ metric of the live weights")


def averaged_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters SWA averages: every floating-point parameter of `module`, by name."""
    return {name: p for name, p in module.named_parameters() if p.is_floating_point()}


class WeightAverage:
    """The running equal-weight mean of a module's floating-point parameters over chosen epochs (module docstring).

    `module` is the one whose parameters are averaged (the task's export module); the mean lives beside them, on
    their device and in their dtype."""

    def __init__(self, module: nn.Module, start_epoch: int, end_epoch: Optional[int]) -> None:
        self.module = module
        self.start_epoch, self.end_epoch = int(start_epoch), None if end_epoch is None else int(end_epoch)
        self.mean = {name: p.detach().clone() for name, p in averaged_parameters(module).items()}
        self.count = 0
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            log.warning("train.swa: %s has BatchNorm layers; the averaged weights are scored with the live model's "
                        "running statistics (torch's update_bn pass is not run)", type(module).__name__)

    def wants(self, epoch: int) -> bool:
        """Whether the weights after (1-based) `epoch` enter the mean."""
        return epoch >= self.start_epoch and (self.end_epoch is None or epoch <= self.end_epoch)

    @torch.no_grad()
    def update(self) -> None:
        """Add the module's current parameters to the mean (the first call copies them)."""
        for name, p in averaged_parameters(self.module).items():
            mean = self.mean[name]
            if self.count == 0:
                mean.copy_(p)
            else:
                mean.add_(p.detach() - mean, alpha=1.0 / (self.count + 1))
        self.count += 1

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The mean in the module's parameters for the block, the live values back after it (exactly)."""
        params = averaged_parameters(self.module)
        live = {name: p.detach().clone() for name, p in params.items()}
        try:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(self.mean[name])
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(live[name])

    def save(self, folder: Path) -> None:
        """Write `SWA_FILE` into a checkpoint folder: the mean (on the CPU) and its count."""
        save_file({name: t.detach().cpu().contiguous() for name, t in self.mean.items()}, str(folder / SWA_FILE),
                  metadata={"count": str(self.count), "start_epoch": str(self.start_epoch),
                            "end_epoch": "" if self.end_epoch is None else str(self.end_epoch)})

    def load(self, folder: Path) -> None:
        """Read a checkpoint's `SWA_FILE` back (CheckpointError when it is missing or holds other parameters)."""
        mean, count = read_average(folder)
        if set(mean) != set(self.mean):
            raise CheckpointError(f"{folder / SWA_FILE} averages other parameters than this model's "
                                  f"({len(mean)} against {len(self.mean)})")
        with torch.no_grad():
            for name, tensor in mean.items():
                self.mean[name].copy_(tensor)
        self.count = count


def read_average(folder: Path) -> tuple[dict[str, torch.Tensor], int]:
    """A checkpoint's averaged parameters (CPU) and how many epochs' weights they average; CheckpointError when
    the checkpoint has none (a run without `train.swa`)."""
    path = Path(folder) / SWA_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} holds no averaged weights ({SWA_FILE}): its run did not use train.swa")
    with safe_open(str(path), framework="pt") as handle:
        count = int((handle.metadata() or {}).get("count", "0"))
    return load_file(str(path)), count
