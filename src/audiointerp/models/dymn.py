"""EfficientAT Dynamic MobileNet (DyMN; Schmid, Koutini & Widmer, "Dynamic Convolutional Neural Networks as
Efficient Pre-trained Audio Models", 2024): `dymn04`, `dymn10`, `dymn20`.

Written for this project from the paper and the published architecture; its `state_dict()` has the same keys and
shapes as upstream's `models/dymn/model.py` (github.com/fschmid56/EfficientAT), so the released checkpoints
(`dymn04_as.pt`, `dymn10_as.pt`, `dymn20_as_mAP_493.pt`, ...) load strictly:

- `in_c.{0,1}`: conv 3x3 stride 2 - BatchNorm - Hardswish, 1 -> 16·w channels;
- `layers.{0..14}`: fifteen dynamic inverted-residual blocks (MobileNetV3-Large's table), each with a context
  generator (`context_gen`: frequency and time means, a shared 1x1 conv - BN - Hardswish, per-axis 1x1 convs),
  dynamic convolutions (`exp_conv`, `depth_conv`, `proj_conv`: K kernels mixed by a softmax over K attention
  logits divided by a temperature), dynamic ReLU (`depth_act`, DY-ReLU-B: max of M channel-wise linear maps)
  and coordinate attention (`ca`, sigmoid frequency and time gates);
- `out_c.{0,1}`: conv 1x1 - BN - Hardswish to 6x the last block's width (960·w);
- `classifier.{2,5}`: average pooling, Linear(960·w -> 1280·w), Hardswish, Dropout, Linear(-> classes).

**Speed.** Same function as upstream, computed differently (equal up to float rounding): the 1x1 dynamic
convolutions are batched matrix products rather than batch-grouped convolutions; in eval mode, the BatchNorm after
each dynamic convolution is folded into its per-example kernels (those BatchNorm modules are then not called); the
dynamic ReLU's maximum of two maps is relu(u1 - u0) + u0, with coordinate attention's (positive) frequency gate
folded into its coefficients (the block applies the gates; `ca` is called only without dynamic ReLU); and when
autograd is off, intermediate tensors are overwritten in place instead of reallocated. DyMN computes in the
default (contiguous) layout: its dynamic convolutions are batched matrix products and batch-grouped convolutions
on views of that layout, and the model and input converted to channels_last from outside were not faster
(`benchmarks/bench_efficientat.py`, dymn10, batch 8 x [1, 128, 500], train step, 9 interleaved rounds on a shared
2-core machine, upstream time / ours: 1 thread 1.60 in the default layout, 1.46 channels_last; 2 threads 1.55
and 1.82 by the medians but 1.86 and 1.74 by the per-round ratios).

Upstream returns `(logits, embedding)`, the embedding being the average-pooled `out_c` map; here `forward` returns
the logits and `forward_with_embedding` the pair.

**Temperature.** The kernel-attention temperature is not in the state dict. Upstream starts training from scratch
at 30 and anneals it per epoch (`temperature_schedule`, down to 1); models trained on AudioSet, and every
released AudioSet checkpoint, run at 1.0, which is this module's default. Loading weights (`load_state_dict`,
hence the registry's `load_weights`) sets it to 1.0; call `set_temperature` afterwards for another value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.models.efficientat import init_efficientat_weights
from audiointerp.models.registry import register_model
from audiointerp.models.taps import Stage, TappedNetwork

# BatchNorm settings of every EfficientAT norm layer (TensorFlow's MobileNetV3 defaults).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# Temperature of trained models (AudioSet-trained DyMNs and their fine-tuned descendants).
TRAINED_TEMPERATURE = 1.0


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor` (at least `divisor`), never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def temperature_schedule(
    epoch: int, t_max: float = 30.0, t_min: float = 1.0, t0_slope: float = 1.0, t1_slope: float = 0.02
) -> float:
    """Upstream's annealing for training from scratch (its `get_model` defaults): the larger of two falling lines
    (slope `t0_slope` from `t_max`, then the shallower `t1_slope`), never below `t_min`."""
    steep = t_max - t0_slope * epoch
    shallow = 1.0 + t1_slope * (t_max - 1.0) / t0_slope - t1_slope * epoch
    return max(steep, shallow, t_min)


@dataclass(frozen=True)
class BlockConfig:
    """One inverted-residual block, channel counts already scaled by the width multiplier."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    hardswish: bool
    stride: int
    dilation: int
    width_mult: float


# MobileNetV3-Large: (input, kernel, expanded, output, Hardswish?, which of the four strides, or None for 1)
_TABLE: tuple[tuple[int, int, int, int, bool, int | None], ...] = (
    (16, 3, 16, 16, False, None),
    (16, 3, 64, 24, False, 0),
    (24, 3, 72, 24, False, None),
    (24, 5, 72, 40, False, 1),
    (40, 5, 120, 40, False, None),
    (40, 5, 120, 40, False, None),
    (40, 3, 240, 80, True, 2),
    (80, 3, 200, 80, True, None),
    (80, 3, 184, 80, True, None),
    (80, 3, 184, 80, True, None),
    (80, 3, 480, 112, True, None),
    (112, 3, 672, 112, True, None),
    (112, 5, 672, 160, True, 3),
    (160, 5, 960, 160, True, None),
    (160, 5, 960, 160, True, None),
)


def block_configs(width_mult: float, strides: Sequence[int] = (2, 2, 2, 2)) -> list[BlockConfig]:
    """The fifteen blocks at width `width_mult`; `strides` are the four down-sampling strides (upstream's default 2)."""
    if len(strides) != 4 or any(s not in (1, 2) for s in strides):
        raise ValueError(f"strides must be four values of 1 or 2, got {tuple(strides)}")
    scale = lambda c: make_divisible(c * width_mult)  # noqa: E731
    return [
        BlockConfig(scale(cin), k, scale(exp), scale(cout), hs, 1 if which is None else int(strides[which]), 1, width_mult)
        for cin, k, exp, cout, hs, which in _TABLE
    ]


class DynamicConv(nn.Module):
    """Convolution whose kernel, per example, is a softmax(logits / temperature) mixture of `k` kernels.

    The attention logits come from the block's context vector through `residuals.0` (a linear layer). The `k`
    kernels are stored flattened as `weight` [1, 1, k, out·(in/groups)·kernel²] (upstream's layout).
    """

    def __init__(
        self, in_channels: int, out_channels: int, context_dim: int, kernel_size: int = 1, *, stride: int = 1,
        padding: int = 0, dilation: int = 1, groups: int = 1, k: int = 4, temperature: float = TRAINED_TEMPERATURE,
    ) -> None:
        super().__init__()
        if in_channels % groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by groups={groups}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups, self.k = stride, padding, dilation, groups, k
        self.temperature = float(temperature)
        # a 1x1 convolution without groups, stride or padding is a matrix product per example
        self.pointwise = kernel_size == 1 and groups == 1 and stride == 1 and padding == 0
        kernels = torch.empty(k, out_channels, in_channels // groups, kernel_size, kernel_size)
        for kernel in kernels:
            nn.init.kaiming_normal_(kernel, mode="fan_out")
        self.weight = nn.Parameter(kernels.reshape(1, 1, k, -1))
        self.residuals = nn.Sequential(nn.Linear(context_dim, k))

    def attention(self, context: torch.Tensor) -> torch.Tensor:
        """[B, k] mixture weights over the kernels for context vectors [B, H, 1, 1]."""
        return torch.softmax(self.residuals(context.flatten(1)) / self.temperature, dim=-1)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, scale: torch.Tensor | None = None,
        shift: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Convolve each example with its own kernel mixture; `scale` [out] multiplies each output channel's
        kernels and `shift` [out] is added to it (an eval-mode BatchNorm folded in)."""
        batch, _, height, width = x.shape
        kernels = (self.attention(context) @ self.weight.view(self.k, -1)).view(batch, self.out_channels, -1)
        if scale is not None:
            kernels = kernels * scale.unsqueeze(-1)
        if self.pointwise:
            out = torch.bmm(kernels, x.reshape(batch, self.in_channels, height * width))
            if shift is not None:  # in place, before the view (autograd: the product's backward needs no output)
                out = out.add_(shift.unsqueeze(-1))
            return out.view(batch, self.out_channels, height, width)
        # each example has its own kernel: fold the batch into the channels, one group per example (and group)
        out = F.conv2d(
            x.reshape(1, batch * self.in_channels, height, width),
            kernels.view(batch * self.out_channels, -1, self.kernel_size, self.kernel_size),
            None if shift is None else shift.repeat(batch), stride=self.stride, padding=self.padding,
            dilation=self.dilation, groups=batch * self.groups,
        )
        return out.view(batch, self.out_channels, out.shape[-2], out.shape[-1])


class StaticConv(nn.Module):
    """A plain convolution taking (x, context) like `DynamicConv` (upstream `no_dyconv`; keys `module.*`)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.module = conv

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class DynamicReLU(nn.Module):
    """DY-ReLU-B: per channel c, max over m of a_cm·x + b_cm, the 2M coefficients predicted from the context.

    Coefficients: 2·sigmoid(`coef_net.0`(context)) - 1, scaled by `lambdas` (1 for slopes, 0.5 for intercepts)
    and offset by `init_v` (slope 1 for the first map, so it starts as ReLU's identity branch).
    """

    def __init__(self, channels: int, context_dim: int, m: int = 2) -> None:
        super().__init__()
        self.channels, self.m = channels, m
        self.register_buffer("lambdas", torch.tensor([1.0] * m + [0.5] * m))
        self.register_buffer("init_v", torch.tensor([1.0] + [0.0] * (2 * m - 1)))
        self.coef_net = nn.Sequential(nn.Linear(context_dim, 2 * m * channels))

    def forward(self, x: torch.Tensor, context: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
        """Apply to x [B, C, F, T]; a positive `gate` (broadcastable to x, e.g. [B, C, F, 1]) multiplies the
        result, folded into the linear maps (the maximum commutes with positive scaling)."""
        theta = 2.0 * torch.sigmoid(self.coef_net(context.flatten(1))) - 1.0
        coefs = (theta.view(-1, self.channels, 2 * self.m) * self.lambdas + self.init_v)[..., None, None]
        if gate is not None:
            coefs = coefs * gate.unsqueeze(2)
        slopes, intercepts = coefs[:, :, : self.m].unbind(2), coefs[:, :, self.m :].unbind(2)
        if self.m == 1:
            return torch.addcmul(intercepts[0], x, slopes[0])
        # max(u0, u1) = relu(u1 - u0) + u0: one map fewer to hold, and a cheaper backward than torch.maximum's
        out = torch.relu_(torch.addcmul(intercepts[1] - intercepts[0], x, slopes[1] - slopes[0]))
        out = out.addcmul_(x, slopes[0]) if overwritable() else torch.addcmul(out, x, slopes[0])
        out = out.add_(intercepts[0])
        for slope, intercept in zip(slopes[2:], intercepts[2:]):
            out = torch.maximum(out, torch.addcmul(intercept, x, slope))
        return out


class StaticActivation(nn.Module):
    """ReLU, Hardswish or identity taking (x, context) (the activations that are not dynamic). With `overwrite`,
    ReLU and Hardswish work in place when autograd is off (for inputs that nothing else holds)."""

    def __init__(self, activation: nn.Module, overwrite: bool = False) -> None:
        super().__init__()
        self.module = activation
        self.overwrite = overwrite

    def forward(self, x: torch.Tensor, context: Any = None) -> torch.Tensor:
        in_place = _IN_PLACE.get(type(self.module)) if self.overwrite and overwritable() else None
        return self.module(x) if in_place is None else in_place(x)


_IN_PLACE: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu_,
    nn.Hardswish: partial(F.hardswish, inplace=True),
}


def overwritable() -> bool:
    """Whether intermediate tensors may be overwritten: when autograd is off, nothing needs them again (under
    autograd, a backward may, and an in-place op on a view costs a copy of its gradient)."""
    return not torch.is_grad_enabled()


class ContextGenerator(nn.Module):
    """The block's context from its input [B, C, F, T]: the context vector [B, H, 1, 1] for the dynamic conv and
    ReLU, and frequency [B, E, F', 1] and time [B, E, 1, T'] logits for coordinate attention (E = expanded
    channels; F', T' after the block's stride, by 3-wide average pooling)."""

    def __init__(self, context_dim: int, in_channels: int, expanded: int, stride: int = 1) -> None:
        super().__init__()
        self.joint_conv = nn.Conv2d(in_channels, context_dim, 1, bias=False)
        self.joint_norm = batch_norm(context_dim)
        self.joint_act = nn.Hardswish()
        self.conv_f = nn.Conv2d(context_dim, expanded, 1)
        self.conv_t = nn.Conv2d(context_dim, expanded, 1)
        if stride > 1:
            self.pool_f: nn.Module = nn.AvgPool2d((3, 1), stride=(stride, 1), padding=(1, 0))
            self.pool_t: nn.Module = nn.AvgPool2d((1, 3), stride=(1, stride), padding=(0, 1))
        else:
            self.pool_f, self.pool_t = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bands = x.shape[2]
        # frequency profile [B, C, F, 1] and time profile laid out the same way [B, C, T, 1], transformed jointly
        profiles = torch.cat([x.mean(dim=3, keepdim=True), x.mean(dim=2, keepdim=True).transpose(2, 3)], dim=2)
        profiles = self.joint_act(self.joint_norm(self.joint_conv(profiles)))
        context = profiles.mean(dim=2, keepdim=True)
        freq, time = profiles[:, :, :bands], profiles[:, :, bands:].transpose(2, 3)
        return context, self.conv_f(self.pool_f(freq)), self.conv_t(self.pool_t(time))


class CoordinateAttention(nn.Module):
    """x · sigmoid(frequency logits) · sigmoid(time logits)."""

    def forward(self, x: torch.Tensor, freq: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(freq) * torch.sigmoid(time)


class DynamicBlock(nn.Module):
    """Dynamic inverted residual: [expand 1x1] - depthwise - coordinate attention - project 1x1, each conv dynamic,
    the depthwise activation a dynamic ReLU; a residual connection when shape is kept."""

    def __init__(
        self, cfg: BlockConfig, context_ratio: int = 4, max_context_size: int = 128, min_context_size: int = 32,
        dyrelu_k: int = 2, dyconv_k: int = 4, no_dyrelu: bool = False, no_dyconv: bool = False, no_ca: bool = False,
    ) -> None:
        super().__init__()
        self.use_residual = cfg.stride == 1 and cfg.in_channels == cfg.out_channels
        low = make_divisible(min_context_size * cfg.width_mult)
        high = make_divisible(max_context_size * cfg.width_mult)
        self.context_dim = int(min(max(make_divisible(cfg.expanded // context_ratio), low), high))
        activation = nn.Hardswish if cfg.hardswish else nn.ReLU
        stride = 1 if cfg.dilation > 1 else cfg.stride

        def conv(c_in: int, c_out: int, kernel: int = 1, **kw: int) -> nn.Module:
            if no_dyconv:
                padding = kw.pop("padding", 0)
                return StaticConv(nn.Conv2d(c_in, c_out, kernel, padding=padding, bias=False, **kw))
            return DynamicConv(c_in, c_out, self.context_dim, kernel, k=dyconv_k, **kw)

        if cfg.expanded != cfg.in_channels:
            self.exp_conv = conv(cfg.in_channels, cfg.expanded)
            self.exp_norm: nn.Module = batch_norm(cfg.expanded)
            self.exp_act = StaticActivation(activation(), overwrite=True)
        else:
            self.exp_conv = StaticActivation(nn.Identity())
            self.exp_norm = nn.Identity()
            self.exp_act = StaticActivation(nn.Identity())
        self.depth_conv = conv(
            cfg.expanded, cfg.expanded, cfg.kernel, stride=stride, padding=(cfg.kernel - 1) // 2 * cfg.dilation,
            dilation=cfg.dilation, groups=cfg.expanded,
        )
        self.depth_norm = batch_norm(cfg.expanded)
        self.depth_act: nn.Module = (
            StaticActivation(activation(), overwrite=True) if no_dyrelu else DynamicReLU(cfg.expanded, self.context_dim, m=dyrelu_k)
        )
        self.use_ca = not no_ca
        self.ca = CoordinateAttention() if self.use_ca else StaticActivation(nn.Identity())
        self.proj_conv = conv(cfg.expanded, cfg.out_channels)
        self.proj_norm = batch_norm(cfg.out_channels)
        self.context_gen = ContextGenerator(self.context_dim, cfg.in_channels, cfg.expanded, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context, freq, time = self.context_gen(x)
        out = self.exp_act(conv_norm(self.exp_conv, self.exp_norm, x, context), context)
        out = conv_norm(self.depth_conv, self.depth_norm, out, context)
        if self.use_ca and isinstance(self.depth_act, DynamicReLU):
            # coordinate attention's frequency gate rides along in the dynamic ReLU's linear maps
            out = self.depth_act(out, context, gate=torch.sigmoid(freq))
            out = out.mul_(torch.sigmoid(time)) if overwritable() else out * torch.sigmoid(time)
        else:
            out = self.depth_act(out, context)
            if self.use_ca:
                out = self.ca(out, freq, time)
        out = conv_norm(self.proj_conv, self.proj_norm, out, context)
        if not self.use_residual:
            return out
        return out.add_(x) if overwritable() else out + x


def conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """`norm(conv(x, context))`; an eval-mode BatchNorm after a dynamic convolution is folded into its kernels
    (the same up to float rounding)."""
    if isinstance(conv, DynamicConv) and isinstance(norm, nn.BatchNorm2d) and not norm.training:
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        return conv(x, context, scale=scale, shift=norm.bias - norm.running_mean * scale)
    return norm(conv(x, context))


def conv_bn_hardswish(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
        batch_norm(c_out),
        nn.Hardswish(),
    )


class DyMN(TappedNetwork):
    """Dynamic MobileNet on EfficientAT log-mels [B, 1, 128, T] -> logits [B, num_classes].

    Layers for taps: `in_c`, `layer0 ... layer14` (the blocks `layers.0 ... layers.14`), `out_c`, `embedding`
    (average-pooled `out_c`, [B, 960·w]) and `logits`. The head is `classifier.5`.
    """

    head_prefix = "classifier.5."

    def __init__(
        self,
        num_classes: int = 527,
        width_mult: float = 1.0,
        strides: Sequence[int] = (2, 2, 2, 2),
        context_ratio: int = 4,
        max_context_size: int = 128,
        min_context_size: int = 32,
        dyrelu_k: int = 2,
        dyconv_k: int = 4,
        no_dyrelu: bool = False,
        no_dyconv: bool = False,
        no_ca: bool = False,
        dropout: float = 0.2,
        temperature: float = TRAINED_TEMPERATURE,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        configs = block_configs(width_mult, strides)
        self.width_mult = width_mult
        options = dict(
            context_ratio=context_ratio, max_context_size=max_context_size, min_context_size=min_context_size,
            dyrelu_k=dyrelu_k, dyconv_k=dyconv_k, no_dyrelu=no_dyrelu, no_dyconv=no_dyconv, no_ca=no_ca,
        )
        self.layers = nn.ModuleList(DynamicBlock(cfg, **options) for cfg in configs)  # first, as upstream's key order
        self.in_c = conv_bn_hardswish(1, configs[0].in_channels, 3, stride=2)
        embedding_dim = 6 * configs[-1].out_channels
        hidden = make_divisible(1280 * width_mult)
        self.out_c = conv_bn_hardswish(configs[-1].out_channels, embedding_dim, 1)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(embedding_dim, hidden),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.embedding_dim = embedding_dim
        self._init_weights()
        self.set_temperature(temperature)
        self.register_load_state_dict_pre_hook(_trained_temperature_on_load)

    def _init_weights(self) -> None:
        init_efficientat_weights(self)

    # --- temperature -----------------------------------------------------------------------------------------

    @property
    def temperature(self) -> float:
        """The kernel-attention temperature of every dynamic convolution."""
        return self._temperature

    def set_temperature(self, temperature: float) -> None:
        """Set the temperature of every dynamic convolution (1.0 for trained models)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self._temperature = float(temperature)
        for module in self.modules():
            if isinstance(module, DynamicConv):
                module.temperature = self._temperature

    def update_temperature(self, epoch: int, **schedule: float) -> float:
        """Set the temperature upstream uses at `epoch` when training from scratch (`temperature_schedule`)."""
        value = temperature_schedule(epoch, **schedule)
        self.set_temperature(value)
        return value

    # --- forward ---------------------------------------------------------------------------------------------

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """Global average over bands and frames: [B, C, F, T] -> [B, C]."""
        return x.mean(dim=(2, 3))

    def head(self, embedding: torch.Tensor) -> torch.Tensor:
        """The MLP head after its pooling: Linear - Hardswish - Dropout - Linear."""
        return self.classifier[2:](embedding)

    def stages(self) -> list[Stage]:
        blocks: list[Stage] = [(f"layer{i}", block) for i, block in enumerate(self.layers)]
        return [("in_c", self.in_c), *blocks, ("out_c", self.out_c), ("embedding", self.pool), ("logits", self.head)]

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, classes], embedding [B, 960·w]), upstream's return value."""
        embedding = self.forward_until(x, "embedding")
        return self.head(embedding), embedding


def _trained_temperature_on_load(module: nn.Module, *args: Any) -> None:
    """Loading weights means a trained model: its temperature is 1.0 (not stored in the state dict)."""
    if isinstance(module, DyMN):
        module.set_temperature(TRAINED_TEMPERATURE)


def _build(width_mult: float, num_classes: int, **options: Any) -> DyMN:
    return DyMN(num_classes=num_classes, width_mult=width_mult, **options)


_HINT = "the EfficientAT GitHub releases page (e.g. dymn10_as.pt)"


def _options(
    strides: Sequence[int], context_ratio: int, max_context_size: int, min_context_size: int, dyrelu_k: int,
    dyconv_k: int, no_dyrelu: bool, no_dyconv: bool, no_ca: bool, dropout: float, temperature: float,
) -> Mapping[str, Any]:
    return dict(
        strides=tuple(strides), context_ratio=context_ratio, max_context_size=max_context_size,
        min_context_size=min_context_size, dyrelu_k=dyrelu_k, dyconv_k=dyconv_k, no_dyrelu=no_dyrelu,
        no_dyconv=no_dyconv, no_ca=no_ca, dropout=dropout, temperature=temperature,
    )


@register_model("dymn04", frontend="efficientat_mel", weights_hint=_HINT.replace("dymn10", "dymn04"))
def dymn04(
    num_classes: int = 527, strides: Sequence[int] = (2, 2, 2, 2), context_ratio: int = 4, max_context_size: int = 128,
    min_context_size: int = 32, dyrelu_k: int = 2, dyconv_k: int = 4, no_dyrelu: bool = False,
    no_dyconv: bool = False, no_ca: bool = False, dropout: float = 0.2, temperature: float = TRAINED_TEMPERATURE,
) -> DyMN:
    """EfficientAT DyMN at width 0.4 (released: dymn04_as.pt)."""
    return _build(0.4, num_classes, **_options(
        strides, context_ratio, max_context_size, min_context_size, dyrelu_k, dyconv_k, no_dyrelu, no_dyconv, no_ca,
        dropout, temperature,
    ))


@register_model("dymn10", frontend="efficientat_mel", weights_hint=_HINT)
def dymn10(
    num_classes: int = 527, strides: Sequence[int] = (2, 2, 2, 2), context_ratio: int = 4, max_context_size: int = 128,
    min_context_size: int = 32, dyrelu_k: int = 2, dyconv_k: int = 4, no_dyrelu: bool = False,
    no_dyconv: bool = False, no_ca: bool = False, dropout: float = 0.2, temperature: float = TRAINED_TEMPERATURE,
) -> DyMN:
    """EfficientAT DyMN at width 1.0 (released: dymn10_as.pt)."""
    return _build(1.0, num_classes, **_options(
        strides, context_ratio, max_context_size, min_context_size, dyrelu_k, dyconv_k, no_dyrelu, no_dyconv, no_ca,
        dropout, temperature,
    ))


@register_model("dymn20", frontend="efficientat_mel", weights_hint=_HINT.replace("dymn10_as", "dymn20_as_mAP_493"))
def dymn20(
    num_classes: int = 527, strides: Sequence[int] = (2, 2, 2, 2), context_ratio: int = 4, max_context_size: int = 128,
    min_context_size: int = 32, dyrelu_k: int = 2, dyconv_k: int = 4, no_dyrelu: bool = False,
    no_dyconv: bool = False, no_ca: bool = False, dropout: float = 0.2, temperature: float = TRAINED_TEMPERATURE,
) -> DyMN:
    """EfficientAT DyMN at width 2.0 (released: dymn20_as_mAP_493.pt)."""
    return _build(2.0, num_classes, **_options(
        strides, context_ratio, max_context_size, min_context_size, dyrelu_k, dyconv_k, no_dyrelu, no_dyconv, no_ca,
        dropout, temperature,
    ))
