"""EfficientAT (Schmid et al.) MobileNetV3 audio taggers "mn04" ... "mn40" and their mel front end.

The networks are MobileNetV3-Large adapted to one-channel mel spectrograms [B, 1, 128, frames]; their module tree
gives the same `state_dict()` keys and shapes as the EfficientAT repository, so the released checkpoints
(`mn10_as_mAP_471.pt`, ...) load as they are:

- `features.0`: conv 3x3 stride 2 (1 -> 16·w channels) + BatchNorm + Hardswish (`features.0.{0,1}`);
- `features.1` ... `features.15`: inverted residual blocks (`features.i.block.j`: optional 1x1 expansion,
  depthwise conv, optional squeeze-excitation `conc_se_layers.0.{fc1,fc2}`, 1x1 projection; residual when the
  shape is kept);
- `features.16`: 1x1 conv to 6x the last block's channels + BatchNorm + Hardswish;
- `classifier`: the "mlp" head (avgpool, flatten, Linear(960·w -> 1280·w) = `classifier.2`, Hardswish, Dropout,
  Linear = `classifier.5`), or the "fully_convolutional" / "multihead_attention_pooling" heads.

Channel counts are multiples of 8 (`make_divisible`); BatchNorm uses eps 0.001 and momentum 0.01 in the body.

**Speed.** Same function and state dict as upstream, computed faster:

- channels_last (`channels_last`, a builder parameter): the conv kernels are kept channels_last and the 4-D input
  is converted at `block0` (a one-channel input without a copy). True / "always" (the default) does so on every
  device, "cpu" on the CPU only (on a GPU the default layout), False / "never" nowhere. `.to()` and the like
  re-lay the kernels, keeping the same `Parameter` objects. Feature maps, hence tapped activations, are
  channels_last tensors: the same shapes and values, other strides (`.contiguous()` gives the default layout).
  Outputs and gradients equal the default layout's up to float rounding (tests/models/test_efficientat_speed_layout.py).
- the activation after each BatchNorm works in place where autograd allows: ReLU always (its backward needs only
  its output), Hardswish when autograd is off (under autograd torch would clone its input).

CPU, measured with `benchmarks/bench_efficientat.py --upstream` (mn10, batch 8 x [1, 128, 500], training-mode
forward + backward, medians of 9 interleaved rounds on a shared, loaded 2-core machine; speed-up = upstream time /
ours, ratio of medians and median of per-round ratios): 1 torch thread: channels_last on 1.31 (1.29), off 1.01
(1.01); 2 threads: on 2.19 (1.61), off 1.25 (0.97). A train-step-only run (11 rounds, 1 thread) gave on 1.57
(1.41), off 1.10 (1.05). channels_last is faster at every size tried (batch 2-32, 100-500 frames, 1 thread:
1.15x-1.7x over the default layout).

GPU, an NVIDIA H200 (`benchmarks/gpu.py`, esc50_mn10 training from epoch 2 on, batch 128 of 5 s clips; the
default layout against `--override model.params.channels_last=always`, two runs of the latter,
benchmarks/results/gpu-channels-last.json): float32 1758 -> 3008 / 2530 clips/s (1.44-1.71x), bf16 1634 ->
2506 / 2738 (1.53-1.68x), fp16 1901 -> 1727 (0.91x; fp16 users may prefer "cpu"). So channels_last is the
default on every device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from audiointerp.models.frontends import as_mono_batch, compact_buffers
from audiointerp.models.registry import register_model
from audiointerp.models.taps import Stage, TappedNetwork

HeadType = Literal["mlp", "fully_convolutional", "multihead_attention_pooling"]
HEAD_TYPES: tuple[str, ...] = ("mlp", "fully_convolutional", "multihead_attention_pooling")
Layout = Union[bool, Literal["cpu", "always", "never"]]  # where the network computes channels_last (`layout_of`)
LAYOUTS = {True: "always", False: "never", "cpu": "cpu", "always": "always", "never": "never"}


def layout_of(channels_last: Layout) -> str:
    """`channels_last` as one of "always" (True, the default: channels_last on every device), "cpu" (on the CPU
    only), "never" (False); anything else is a ValueError naming the choices."""
    if isinstance(channels_last, (bool, str)) and channels_last in LAYOUTS:
        return LAYOUTS[channels_last]
    raise ValueError(f"channels_last must be true / 'always', 'cpu' (on the CPU only) or false / 'never', "
                     f"got {channels_last!r}")


WIDTHS: dict[str, float] = {"mn01": 0.1, "mn02": 0.2, "mn04": 0.4, "mn05": 0.5, "mn10": 1.0, "mn20": 2.0, "mn30": 3.0, "mn40": 4.0}
WEIGHTS_HINT = "the EfficientAT GitHub releases page (e.g. mn10_as_mAP_471.pt)"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor` (at least `divisor`), never more than 10% below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


# --- network -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockSpec:
    """One inverted residual block at width 1.0; `stride_slot` names which of the four strides it takes."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    squeeze_excite: bool
    hardswish: bool
    stride_slot: Optional[int] = None
    tail: bool = False  # the last three blocks: halved by `reduced_tail`, dilated by `dilated`


# MobileNetV3-Large (Howard et al. 2019, table 1), without the stem and the last 1x1 conv.
MOBILENET_V3_LARGE: tuple[BlockSpec, ...] = (
    BlockSpec(16, 3, 16, 16, False, False),
    BlockSpec(16, 3, 64, 24, False, False, stride_slot=0),
    BlockSpec(24, 3, 72, 24, False, False),
    BlockSpec(24, 5, 72, 40, True, False, stride_slot=1),
    BlockSpec(40, 5, 120, 40, True, False),
    BlockSpec(40, 5, 120, 40, True, False),
    BlockSpec(40, 3, 240, 80, False, True, stride_slot=2),
    BlockSpec(80, 3, 200, 80, False, True),
    BlockSpec(80, 3, 184, 80, False, True),
    BlockSpec(80, 3, 184, 80, False, True),
    BlockSpec(80, 3, 480, 112, True, True),
    BlockSpec(112, 3, 672, 112, True, True),
    BlockSpec(112, 5, 672, 160, True, True, stride_slot=3, tail=True),
    BlockSpec(160, 5, 960, 160, True, True, tail=True),
    BlockSpec(160, 5, 960, 160, True, True, tail=True),
)


def _body_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=0.001, momentum=0.01)


class InPlaceHardswish(nn.Hardswish):
    """Hardswish that overwrites its input when autograd is off (under autograd, torch would clone the input for
    the backward, so it computes out of place). Use it only where nothing else holds the input (after a norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x, inplace=not torch.is_grad_enabled())


def _in_place(activation: type[nn.Module]) -> nn.Module:
    """The activation after a BatchNorm, computed in place where autograd allows: ReLU always (its backward needs
    only its output), Hardswish when autograd is off; other activations as they are."""
    if activation is nn.ReLU:
        return nn.ReLU(inplace=True)
    if activation is nn.Hardswish:
        return InPlaceHardswish()
    return activation()


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, "same" padding) -> BatchNorm -> optional activation; children named 0, 1, 2."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        activation: Optional[type[nn.Module]] = nn.Hardswish,
    ) -> None:
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            _body_norm(out_channels),
        ]
        if activation is not None:
            layers.append(_in_place(activation))
        super().__init__(*layers)


class ChannelExcitation(nn.Module):
    """Squeeze-excitation over channels: mean over (freq, time), fc1 -> ReLU -> fc2 -> sigmoid, scale."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class ExcitationGate(nn.Module):
    """Holds the channel squeeze-excitation under `conc_se_layers.0`, the name EfficientAT checkpoints use."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([ChannelExcitation(channels, make_divisible(channels // reduction, 8))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (k x k) -> [squeeze-excitation] -> project (1x1), plus the input when shapes match."""

    def __init__(
        self, in_channels: int, kernel: int, expanded: int, out_channels: int, *, stride: int, dilation: int,
        hardswish: bool, squeeze_excite: bool, se_reduction: int,
    ) -> None:
        super().__init__()
        activation = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != in_channels:
            layers.append(ConvBNAct(in_channels, expanded, 1, activation=activation))
        depthwise_stride = 1 if dilation > 1 else stride
        layers.append(ConvBNAct(expanded, expanded, kernel, depthwise_stride, groups=expanded, dilation=dilation,
                                activation=activation))
        if squeeze_excite:
            layers.append(ExcitationGate(expanded, se_reduction))
        layers.append(ConvBNAct(expanded, out_channels, 1, activation=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class AttentionPoolingHead(nn.Module):
    """Multi-head attention pooling over time (PSLA): frequency mean, then per-head sigmoid-attention averages."""

    def __init__(self, in_channels: int, num_classes: int, num_heads: int = 4, epsilon: float = 1e-7) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.epsilon = epsilon
        self.subspace_proj = nn.Linear(in_channels, num_classes * 2 * num_heads)
        self.head_weight = nn.Parameter(torch.full((1, num_heads, 1), 1.0 / num_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=2).transpose(1, 2)  # [B, T, C]
        batch, frames, _ = x.shape
        projected = self.subspace_proj(x).reshape(batch, frames, 2, self.num_heads, self.num_classes)
        attention, values = projected.permute(2, 0, 3, 1, 4)  # each [B, heads, T, classes]
        attention = torch.sigmoid(attention).clamp(self.epsilon, 1.0 - self.epsilon)
        attention = attention / attention.sum(dim=2, keepdim=True)
        return ((attention * values).sum(dim=2) * self.head_weight).sum(dim=1)


def init_efficientat_weights(network: nn.Module) -> None:
    """EfficientAT's initialisation (MN and DyMN): Kaiming-normal (fan out) convs, unit/zero batch norms,
    N(0, 0.01) linears with zero bias."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class MobileNetAT(TappedNetwork):
    """EfficientAT MobileNetV3: mel [B, 1, bands, frames] -> logits [B, num_classes].

    Layers for taps: `block0` ... `block16` (the outputs of `features.0` ... `features.16`), then with the "mlp"
    head `embedding` (the time-frequency mean of `block16`, [B, 960·w]) and `logits`; the other heads act on the
    feature map, so for them `logits` follows `block16` directly. `forward_with_embedding` returns
    `(logits, embedding)` as the EfficientAT models do. With `channels_last` (the default) it computes in
    channels_last (module docstring, "Speed"); the state dict is the same either way.
    """

    def __init__(
        self,
        num_classes: int = 527,
        width_mult: float = 1.0,
        head_type: HeadType = "mlp",
        dropout: float = 0.2,
        se_dims: str = "c",
        se_r: int = 4,
        reduced_tail: bool = False,
        dilated: bool = False,
        strides: Sequence[int] = (2, 2, 2, 2),
        attention_heads: int = 4,
        in_channels: int = 1,
        channels_last: Layout = True,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {', '.join(HEAD_TYPES)}, got {head_type!r}")
        if se_dims not in ("c", "none"):
            raise ValueError(f"se_dims must be 'c' (channel squeeze-excitation) or 'none', got {se_dims!r}")
        if len(strides) != 4 or any(s not in (1, 2) for s in strides):
            raise ValueError(f"strides must be four values of 1 or 2, got {tuple(strides)}")
        self.num_classes = num_classes
        self.width_mult = width_mult
        self.head_type = head_type
        self.channels_last = channels_last
        self.layout = layout_of(channels_last)

        def width(channels: int) -> int:
            return make_divisible(channels * width_mult, 8)

        def tail_width(spec_channels: int, is_tail: bool) -> int:
            """`reduced_tail` halves the tail's 160 / 960 channels (not the 112 / 672 that feed it)."""
            halve = reduced_tail and is_tail and spec_channels in (160, 960)
            return width(spec_channels // 2 if halve else spec_channels)

        layers: list[nn.Module] = [ConvBNAct(in_channels, width(16), 3, stride=2)]
        for spec in MOBILENET_V3_LARGE:
            layers.append(
                InvertedResidual(
                    tail_width(spec.in_channels, spec.tail),
                    spec.kernel,
                    tail_width(spec.expanded, spec.tail),
                    tail_width(spec.out_channels, spec.tail),
                    stride=1 if spec.stride_slot is None else int(strides[spec.stride_slot]),
                    dilation=2 if dilated and spec.tail else 1,
                    hardswish=spec.hardswish,
                    squeeze_excite=spec.squeeze_excite and se_dims == "c",
                    se_reduction=se_r,
                )
            )
        last_in = tail_width(MOBILENET_V3_LARGE[-1].out_channels, True)
        self.embedding_dim = 6 * last_in
        layers.append(ConvBNAct(last_in, self.embedding_dim, 1))
        self.features = nn.Sequential(*layers)

        hidden = make_divisible((1280 // (2 if reduced_tail else 1)) * width_mult, 8)
        if head_type == "mlp":
            self.classifier: nn.Module = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(start_dim=1),
                nn.Linear(self.embedding_dim, hidden),
                nn.Hardswish(),
                nn.Dropout(p=dropout),
                nn.Linear(hidden, num_classes),
            )
            self.head_prefix = "classifier.5."
        elif head_type == "fully_convolutional":
            self.classifier = nn.Sequential(
                nn.Conv2d(self.embedding_dim, num_classes, kernel_size=1, bias=False),
                nn.BatchNorm2d(num_classes),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(start_dim=1),
            )
            self.head_prefix = "classifier."
        else:
            self.classifier = AttentionPoolingHead(self.embedding_dim, num_classes, num_heads=attention_heads)
            self.head_prefix = "classifier."
        self._init_weights()
        self._set_layout()

    def _init_weights(self) -> None:
        init_efficientat_weights(self)

    # --- memory layout ---------------------------------------------------------------------------------------

    def uses_channels_last(self, device: torch.device) -> bool:
        """Whether feature maps on `device` are computed channels_last: on every device with `channels_last` True /
        "always" (the default), on a CPU device only with "cpu", never with False / "never"."""
        return self.layout == "always" or (self.layout == "cpu" and device.type == "cpu")

    def _set_layout(self) -> None:
        """Lay out every 4-D parameter (the conv kernels) channels_last where `uses_channels_last`, else in the
        default layout; the `Parameter` objects stay the same (an optimizer holding them is unaffected)."""
        for parameter in self.parameters():
            if parameter.dim() == 4:
                layout = torch.channels_last if self.uses_channels_last(parameter.device) else torch.contiguous_format
                parameter.data = parameter.data.to(memory_format=layout)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> MobileNetAT:
        """`nn.Module._apply` (`to`, `cpu`, `cuda`, `float`, ...), then the kernels' layout for the new device."""
        super()._apply(fn, recurse)
        self._set_layout()
        return self

    def to_layout(self, x: torch.Tensor) -> torch.Tensor:
        """`x` [B, C, F, T] in the layout this network computes in (channels_last by default); the values
        are unchanged, and a one-channel input is not copied."""
        if x.dim() == 4 and self.uses_channels_last(x.device):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def _first_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.features[0](self.to_layout(x))

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        """Mean over frequency and time: [B, C, F, T] -> [B, C]."""
        return x.mean(dim=(2, 3))

    def stages(self) -> list[Stage]:
        blocks: list[Stage] = [(f"block{i}", block) for i, block in enumerate(self.features)]
        blocks[0] = ("block0", self._first_block)
        if self.head_type == "mlp":
            mlp = self.classifier[2:]
            return [*blocks, ("embedding", self.pool), ("logits", mlp)]
        return [*blocks, ("logits", self.classifier)]

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, num_classes], embedding [B, 960·w]) as EfficientAT's `MN.forward` returns them."""
        fmap = self.features(self.to_layout(x))
        return self.classifier(fmap), self.pool(fmap)


def set_batchnorm_momentum(network: nn.Module, momentum: float) -> nn.Module:
    """Set every BatchNorm's running-statistics momentum, in place (builders' `bn_momentum`; null keeps upstream's
    0.01 in the body, which suits fine-tuning AudioSet weights; from scratch, 0.1 gives usable eval-mode statistics
    after a few hundred updates). Returns `network`."""
    if not 0.0 < momentum <= 1.0:
        raise ValueError(f"bn_momentum must be in (0, 1], got {momentum}")
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    return network


def _register_width(name: str, width_mult: float) -> None:
    """Register `name` as MobileNetAT at `width_mult`, fed by the EfficientAT mel front end."""

    def builder(
        num_classes: int = 527,
        head_type: HeadType = "mlp",
        dropout: float = 0.2,
        se_dims: str = "c",
        se_r: int = 4,
        reduced_tail: bool = False,
        dilated: bool = False,
        strides: Sequence[int] = (2, 2, 2, 2),
        attention_heads: int = 4,
        bn_momentum: Optional[float] = None,
        channels_last: Layout = True,
    ) -> MobileNetAT:
        network = MobileNetAT(
            num_classes, width_mult=width_mult, head_type=head_type, dropout=dropout, se_dims=se_dims, se_r=se_r,
            reduced_tail=reduced_tail, dilated=dilated, strides=tuple(strides), attention_heads=attention_heads,
            channels_last=channels_last,
        )
        return network if bn_momentum is None else set_batchnorm_momentum(network, bn_momentum)

    builder.__name__ = name
    builder.__qualname__ = name
    builder.__doc__ = f"EfficientAT MobileNetV3 {name} (width x{width_mult:g}) on 128-band 32 kHz mel spectrograms."
    register_model(name, frontend="efficientat_mel", weights_hint=WEIGHTS_HINT)(builder)


for _name, _width in WIDTHS.items():
    _register_width(_name, _width)


# --- front end -----------------------------------------------------------------------------------------------


def kaldi_mel_banks(n_mels: int, n_fft: int, sample_rate: float, f_min: float, f_max: float) -> torch.Tensor:
    """[n_mels, n_fft // 2 + 1] Kaldi mel filters (triangles linear in mel, 1127 ln(1 + f/700)); Nyquist bin 0.

    As Kaldi (and torchaudio.compliance.kaldi.get_mel_banks without VTLN warping): `n_mels + 2` equally spaced
    mel edges from f_min to f_max, evaluated at the `n_fft // 2` bins below Nyquist; a non-positive f_max counts
    from Nyquist.
    """
    if f_max <= 0.0:
        f_max += sample_rate / 2
    if not 0.0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={f_min}, f_max={f_max}")

    def mel(hz: float) -> float:
        return 1127.0 * math.log1p(hz / 700.0)

    # float32 tensors with double-precision scalars, the arithmetic of the Kaldi/torchaudio filters the
    # released EfficientAT weights were trained with
    mel_low, step = mel(f_min), (mel(f_max) - mel(f_min)) / (n_mels + 1)
    index = torch.arange(n_mels, dtype=torch.float32).unsqueeze(1)
    left, centre, right = mel_low + index * step, mel_low + (index + 1.0) * step, mel_low + (index + 2.0) * step
    bins = 1127.0 * (1.0 + (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32) / 700.0).log()
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    banks = torch.maximum(torch.zeros(()), torch.minimum(rising, falling))
    return F.pad(banks, (0, 1))


class EfficientATMel(nn.Module):
    """Waveform [B, T] or [B, C, T] at 32 kHz -> normalised log-mel [B, 1, 128, frames] as EfficientAT and PaSST use.

    Pre-emphasis (x[n+1] - 0.97 x[n], one sample shorter), centred STFT (n_fft 1024, symmetric Hann window of 800,
    hop 320, reflect padding), power spectrum, Kaldi mel banks from f_min to f_max, log(mel + 1e-5), then
    (x + 4.5) / 5. A 5 s clip gives 500 frames. `f_max=None` means sample_rate / 2 - fmax_aug_range / 2
    (15000 Hz), EfficientAT's default.

    With `augment=True`, in training mode only: f_min is raised by randint(fmin_aug_range) and f_max moved by
    fmax_aug_range / 2 - randint(fmax_aug_range) (once per batch, as upstream), and frequency (`freqm`) and time
    (`timem`) masks are applied before the normalisation, drawn independently per example. Otherwise the
    output is deterministic.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 320,
        n_mels: int = 128,
        f_min: float = 0.0,
        f_max: Optional[float] = None,
        augment: bool = False,
        freqm: int = 48,
        timem: int = 192,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
    ) -> None:
        super().__init__()
        if fmin_aug_range < 1 or fmax_aug_range < 1:
            raise ValueError("fmin_aug_range and fmax_aug_range must be >= 1 (1 means no jitter)")
        if win_length > n_fft:
            raise ValueError(f"win_length {win_length} exceeds n_fft {n_fft}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = win_length
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.f_min = float(f_min)
        self.f_max = float(sample_rate // 2 - fmax_aug_range // 2 if f_max is None else f_max)
        self.augment = augment
        self.fmin_aug_range = fmin_aug_range
        self.fmax_aug_range = fmax_aug_range
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("preemphasis", torch.tensor([[[-0.97, 1.0]]]), persistent=False)
        self.register_buffer(
            "mel_banks", kaldi_mel_banks(n_mels, n_fft, sample_rate, self.f_min, self.f_max), persistent=False
        )
        import torchaudio

        self.freq_masking = torchaudio.transforms.FrequencyMasking(freqm, iid_masks=True) if freqm > 0 else None
        self.time_masking = torchaudio.transforms.TimeMasking(timem, iid_masks=True) if timem > 0 else None
        compact_buffers(self)

    def num_frames(self, num_samples: int) -> int:
        """Frames for a clip of `num_samples` (pre-emphasis drops one sample, the centred STFT adds one frame)."""
        return (num_samples - 1) // self.hop_length + 1

    def _banks(self) -> torch.Tensor:
        if not (self.training and self.augment):
            return self.mel_banks
        f_min = self.f_min + int(torch.randint(self.fmin_aug_range, (1,)))
        f_max = self.f_max + self.fmax_aug_range // 2 - int(torch.randint(self.fmax_aug_range, (1,)))
        f_max = min(f_max, self.sample_rate / 2)
        return kaldi_mel_banks(self.n_mels, self.n_fft, self.sample_rate, f_min, f_max).to(self.mel_banks.device)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = as_mono_batch(waveform).float()
        x = F.conv1d(x.unsqueeze(1), self.preemphasis).squeeze(1)
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, win_length=self.win_length, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        with torch.autocast(device_type=x.device.type, enabled=False):
            mel = torch.matmul(self._banks(), power.float())
        mel = torch.log(mel + 1e-5).unsqueeze(1)
        if self.training and self.augment:
            if self.freq_masking is not None:
                mel = self.freq_masking(mel)
            if self.time_masking is not None:
                mel = self.time_masking(mel)
        return (mel + 4.5) / 5.0


__all__ = ["EfficientATMel", "MobileNetAT", "kaldi_mel_banks", "make_divisible", "WIDTHS"]
