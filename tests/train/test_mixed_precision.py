"""`train.mixed_precision=bf16` in every family, on CPU: the networks compute in bf16 (their convolutions and
linear layers return bf16), the front ends and the losses in float32, and the run ends close to the same run in
float32.

Tolerance: after 3 updates from the same seed, each validation metric of the bf16 run lies within
2e-2 + 5e-2 x |float32 value| of the float32 run's (bf16 keeps 8 bits of mantissa: a relative rounding of 0.4 %
per operation, which a few updates spread to about 1 %). A run that silently stayed in float32 would fail the
dtype checks; one whose front end or loss ran in bf16 would fail the float32 checks.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from audiointerp.train.config import load_config
from audiointerp.train.trainer import Trainer
from tests.configs.test_shipped_configs import (  # noqa: F401 (fixtures)
    COMMON,
    OVERRIDES,
    data_source,
    fake_glove,
    glove_words,
    small_esc50,
)

FAMILIES = {  # one shipped config per family
    "classifier": "classifier",
    "semantic": "catdnn",
    "cae": "cae",
    "ae_finetune": "ae_finetune_mn10",
    "flow": "flow",
    "concepts": "concepts",
}
ABSOLUTE, RELATIVE = 2e-2, 5e-2


class DtypeSpy:
    """Records the output dtypes of a task's convolutions and linear layers, of its front ends and of its losses
    during training steps."""

    def __init__(self) -> None:
        self.layers: set[torch.dtype] = set()
        self.frontends: set[torch.dtype] = set()
        self.losses: set[torch.dtype] = set()

    def attach(self, task: nn.Module) -> None:
        for module in task.modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
                module.register_forward_hook(lambda m, i, out: self._add(self.layers, out))
            if getattr(type(module).forward, "_audiointerp_full_precision", False):
                target = self.losses if type(module).__module__.startswith("audiointerp.losses") else self.frontends
                module.register_forward_hook(lambda m, i, out, target=target: self._add(target, out))

    def _add(self, into: set[torch.dtype], out: Any) -> None:
        if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.is_floating_point():
            into.add(out.dtype)


def run(name: str, precision: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, float], DtypeSpy, list[torch.dtype]]:
    kind, overrides = OVERRIDES[name]
    required = ["task.layer=unused"] if name in ("concepts", "flow") else []
    shipped = load_config(name, ["data.source=unused", "model.checkpoint=unused", *required])
    if shipped.task.get("vectors") == "glove-6b-50d":
        request.getfixturevalue("fake_glove")
    (tmp_path / precision).mkdir()
    source = data_source(kind, request, tmp_path / precision)
    cfg = load_config(name, [*COMMON, *overrides, "train.max_steps=3", "train.epochs=3", "train.log_every_steps=1",
                             f"train.mixed_precision={precision}", f"data.source={source}",
                             f"output_dir={tmp_path / precision}", f"data.cache_dir={tmp_path / 'cache'}"])
    spy, loss_dtypes = DtypeSpy(), []
    original: Callable[..., Any] = Trainer._setup

    def setup(self: Trainer, plan: Any, accelerator: Any) -> Any:
        loop = original(self, plan, accelerator)
        core = accelerator.unwrap_model(loop.task)
        spy.attach(core)
        step = core.step

        def recorded_step(batch: Any) -> Any:
            loss, logs = step(batch)
            loss_dtypes.append(loss.dtype)
            return loss, logs

        core.step = recorded_step
        return loop

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_setup", setup)
        result = Trainer(cfg).fit()
    return result.metrics, spy, loss_dtypes


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_training_is_close_to_float32_with_float32_front_ends_and_losses(
        family: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    name = FAMILIES[family]
    reference, plain, _ = run(name, "no", request, tmp_path)
    mixed, spy, loss_dtypes = run(name, "bf16", request, tmp_path)

    assert plain.layers == {torch.float32}
    assert torch.bfloat16 in spy.layers, f"{family}: no layer ran in bf16 ({spy.layers})"
    assert spy.frontends <= {torch.float32} and spy.losses <= {torch.float32}
    assert set(loss_dtypes) == {torch.float32}
    assert sorted(mixed) == sorted(reference)
    for key, value in reference.items():
        if not math.isfinite(value):
            continue
        assert abs(mixed[key] - value) <= ABSOLUTE + RELATIVE * abs(value), (family, key, mixed[key], value)


def test_fp16_on_the_cpu_is_refused_rather_than_silently_float32(tiny_overrides: list[str]) -> None:
    from audiointerp.errors import ConfigError

    cfg = load_config("classifier", [*tiny_overrides, "train.mixed_precision=fp16", "train.cpu=true"])
    with pytest.raises(ConfigError, match=r"fp16 needs a GPU.*bf16"):
        Trainer(cfg).fit()
    assert not (Path(cfg.output_dir) / "classifier").exists()  # refused before any folder or lock
