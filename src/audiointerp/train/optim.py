"""Optimisers and learning-rate schedules from the `optim` config section.

Convention: a schedule counts optimizer updates. One update = `gradient_accumulation_steps` batches on every
process; an epoch has ceil(batches per process / accumulation) updates, and the schedule spans
min(epochs x updates per epoch, max_steps) updates. Warm-up is linear from 0 over `warmup_steps` updates.
`exp_warmup_linear_down` (EfficientAT's recipe) is stated in epochs, the fractional epoch being
update / updates per epoch: exp(-5 (1 - e/W)^2) warm-up over W = `warmup_epochs` (e clipped below at 0.5), then
1 until `rampdown_start_epoch`, then linear to `last_lr_ratio` over `rampdown_epochs`, and `last_lr_ratio` after.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import LambdaLR


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: DictConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("the task has no trainable parameters")
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimiser {cfg.name!r}")


def exp_warmup_linear_down(epoch: float, warmup: float, start: float, length: float, last: float) -> float:
    """EfficientAT's schedule factor at a (fractional) epoch."""
    rampup = 1.0
    if epoch < warmup:
        phase = 1.0 - min(max(epoch, 0.5), warmup) / warmup
        rampup = math.exp(-5.0 * phase * phase)
    if epoch <= start:
        rampdown = 1.0
    elif epoch - start < length:
        rampdown = last + (1.0 - last) * (length - epoch + start) / length
    else:
        rampdown = last
    return rampup * rampdown


def lr_factor(update: int, total: int, cfg: DictConfig, updates_per_epoch: int = 1) -> float:
    """Multiplier of the peak learning rate after `update` updates."""
    if cfg.scheduler == "exp_warmup_linear_down":
        return exp_warmup_linear_down(update / max(1, updates_per_epoch), float(cfg.warmup_epochs),
                                      float(cfg.rampdown_start_epoch), float(cfg.rampdown_epochs), float(cfg.last_lr_ratio))
    warmup = int(cfg.warmup_steps)
    if update < warmup:
        return (update + 1) / warmup
    if cfg.scheduler == "constant":
        return 1.0
    progress = min(1.0, (update - warmup) / max(1, total - warmup))
    floor = float(cfg.min_lr_ratio)
    if cfg.scheduler == "cosine":
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.scheduler == "linear":
        return floor + (1.0 - floor) * (1.0 - progress)
    raise ValueError(f"unknown scheduler {cfg.scheduler!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, total_updates: int, updates_per_epoch: int = 1) -> LambdaLR:
    return LambdaLR(optimizer, lambda update: lr_factor(update, total_updates, cfg, updates_per_epoch))


def total_updates(batches_per_epoch: int, accumulation: int, epochs: int, max_steps: int | None) -> int:
    per_epoch = math.ceil(batches_per_epoch / accumulation)
    total = per_epoch * epochs
    return min(total, max_steps) if max_steps else total
