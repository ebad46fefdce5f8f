"""Optimisers and learning-rate schedules from the `optim` config section.

Convention: a schedule counts optimizer updates. One update = `gradient_accumulation_steps` batches on every
process; an epoch has ceil(batches per process / accumulation) updates, and the schedule spans
min(epochs x updates per epoch, max_steps) updates. Warm-up is linear from 0 over `warmup_steps` updates.
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


def lr_factor(update: int, total: int, cfg: DictConfig) -> float:
    """Multiplier of the peak learning rate after `update` updates."""
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


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: DictConfig, total_updates: int) -> LambdaLR:
    return LambdaLR(optimizer, lambda update: lr_factor(update, total_updates, cfg))


def total_updates(batches_per_epoch: int, accumulation: int, epochs: int, max_steps: int | None) -> int:
    per_epoch = math.ceil(batches_per_epoch / accumulation)
    total = per_epoch * epochs
    return min(total, max_steps) if max_steps else total
