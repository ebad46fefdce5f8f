"""PaSST (Koutini et al. 2021, "Efficient Training of Audio Transformers with Patchout") through hear21passt.

The transformer is hear21passt's own `PaSST`, built by `hear21passt.models.passt.get_model(pretrained=False)` and
held as `self.net`, so `state_dict()` keys are hear21passt's with a `net.` prefix (which is also how the PaSST
repository's Lightning module names them); `remap_state_dict` adds the prefix to plain hear21passt state dicts.

Input is the EfficientAT / PaSST mel [B, 1, 128, T] (`efficientat_mel`). hear21passt's `AugmentMelSTFT` computes
the same features, with two differences in its defaults: its class defaults (fmin_aug_range=1, fmax_aug_range=1000)
give f_max 15500 Hz, while its own HEAR wrapper (`hear21passt.base`) and EfficientATMel use fmin_aug_range=10,
fmax_aug_range=2000, so f_max 15000 Hz; and it always applies frequency/time masking in training mode, whereas
EfficientATMel does so only with `augment=True`.

Time: patches of 16 with stride 10 give (T - 16) // 10 + 1 time columns; hear21passt crops its time positional
embedding (sized for `input_tdim`, default 998 = 10 s) to the input's columns, so any T from 16 to `input_tdim`
works (a 5 s clip, T = 500, uses the first 49 of 99). Longer inputs need a larger `input_tdim`, and a checkpoint
only loads into a model built with the `input_tdim` it was trained with (its time embedding has that length).

hear21passt prints debug shapes on construction and on the first forward, and warns when T differs from
`input_tdim`; both are silenced here.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from typing import Iterator, Mapping

import torch

from audiointerp.errors import ConfigError
from audiointerp.models.registry import register_model
from audiointerp.models.taps import Stage, TappedNetwork

DEFAULT_ARCH = "passt_s_swa_p16_128_ap476"
WEIGHTS_HINT = (
    "the PaSST GitHub releases page, github.com/kkoutini/PaSST/releases "
    "(e.g. esc50-passt-s-n-f128-p16-s10-fold1-acc.967.pt for ESC-50 fold 1)"
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence hear21passt's debug prints and its input-size warning."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Input image size .* doesn't match model")
        yield


class PaSSTNet(TappedNetwork):
    """hear21passt PaSST: mel [B, 1, 128, T] -> logits [B, num_classes].

    Layers for taps: `patch_embed` (patch tokens with time/frequency positional encodings after the class and
    distillation tokens, [B, 2 + F·T', 768]), `blocks.0` ... `blocks.{depth-1}`, `embedding` (final LayerNorm, then
    the mean of the class and distillation tokens, [B, 768]) and `logits`. `forward` and `forward_with_embedding`
    run hear21passt's own forward; the stages reproduce it exactly in eval mode (patchout, used only in training,
    is drawn independently by each).
    """

    def __init__(
        self,
        num_classes: int = 527,
        arch: str = DEFAULT_ARCH,
        input_tdim: int = 998,
        input_fdim: int = 128,
        fstride: int = 10,
        tstride: int = 10,
        u_patchout: int = 0,
        s_patchout_t: int = 0,
        s_patchout_f: int = 0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        from hear21passt.models.passt import get_model

        with quiet():
            self.net = get_model(
                arch=arch, pretrained=False, n_classes=num_classes, in_channels=1, fstride=fstride, tstride=tstride,
                input_fdim=input_fdim, input_tdim=input_tdim, u_patchout=u_patchout, s_patchout_t=s_patchout_t,
                s_patchout_f=s_patchout_f,
            )
        self.num_classes = num_classes
        self.arch = arch
        self.input_tdim = input_tdim
        self.input_fdim = input_fdim
        self.embedding_dim = int(self.net.embed_dim)
        self.head_prefix = ("net.head.", "net.head_dist.")

    # --- checkpoints ---

    def remap_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the `net.` prefix to a state dict saved from the plain hear21passt model."""
        if state and not any(k.startswith("net.") for k in state):
            return {f"net.{k}": v for k, v in state.items()}
        return dict(state)

    # --- forward ---

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.input_fdim:
            raise ValueError(f"PaSST expects mel [B, 1, {self.input_fdim}, T], got {tuple(x.shape)}")
        if x.shape[3] > self.input_tdim:
            raise ValueError(
                f"PaSST built with input_tdim={self.input_tdim} got {x.shape[3]} frames; build it with a larger input_tdim"
            )
        patchout = int(self.net.s_patchout_t or 0)
        if self.net.training and patchout:
            proj = self.net.patch_embed.proj
            time = (x.shape[3] - proj.kernel_size[1]) // proj.stride[1] + 1
            if time <= patchout:  # hear21passt's randperm(time)[:time - patchout] would silently keep time - 1 columns
                raise ConfigError(f"PaSST's structured patchout drops {patchout} time patches in training "
                                  f"(model.params.s_patchout_t), but the clip has only {time}: train on longer clips "
                                  f"(data.seconds; a time patch every 0.1 s) or lower s_patchout_t")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_embedding(x)[0]

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [B, num_classes], embedding [B, 768]) as hear21passt's PaSST returns them."""
        self._check_input(x)
        with quiet():
            logits, embedding = self.net(x)
        return logits, embedding

    # --- taps ---

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding + positional encodings (+ patchout in training) + class/distillation tokens."""
        self._check_input(x)
        net = self.net
        with quiet():
            x = net.patch_embed(x)
        batch, _, freq, time = x.shape
        x = x + net.time_new_pos_embed[:, :, :, :time]
        x = x + net.freq_new_pos_embed
        if net.training and net.s_patchout_t:
            keep = torch.randperm(time)[: time - net.s_patchout_t].sort().values
            x = x[:, :, :, keep]
        if net.training and net.s_patchout_f:
            keep = torch.randperm(freq)[: freq - net.s_patchout_f].sort().values
            x = x[:, :, keep, :]
        x = x.flatten(2).transpose(1, 2)
        if net.training and net.u_patchout:
            length = x.shape[1]
            keep = torch.randperm(length)[: length - net.u_patchout].sort().values
            x = x[:, keep, :]
        tokens = [net.cls_token.expand(batch, -1, -1) + net.new_pos_embed[:, :1, :]]
        if net.dist_token is not None:
            tokens.append(net.dist_token.expand(batch, -1, -1) + net.new_pos_embed[:, 1:, :])
        return net.pos_drop(torch.cat([*tokens, x], dim=1))

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm, then the class token (averaged with the distillation token when there is one)."""
        x = self.net.norm(x)
        if self.net.dist_token is None:
            return self.net.pre_logits(x[:, 0])
        return (x[:, 0] + x[:, 1]) / 2

    def stages(self) -> list[Stage]:
        blocks: list[Stage] = [(f"blocks.{i}", block) for i, block in enumerate(self.net.blocks)]
        return [("patch_embed", self._tokens), *blocks, ("embedding", self._pool), ("logits", self.net.head)]


@register_model("passt", frontend="efficientat_mel", weights_hint=WEIGHTS_HINT)
@register_model(DEFAULT_ARCH, frontend="efficientat_mel", weights_hint=WEIGHTS_HINT)
def passt_s_swa_p16_128_ap476(
    num_classes: int = 527,
    arch: str = DEFAULT_ARCH,
    input_tdim: int = 998,
    input_fdim: int = 128,
    fstride: int = 10,
    tstride: int = 10,
    u_patchout: int = 0,
    s_patchout_t: int = 0,
    s_patchout_f: int = 0,
) -> PaSSTNet:
    """PaSST-S (patch 16, stride 10, 12 blocks) from hear21passt, untrained; load weights with `checkpoint=`."""
    return PaSSTNet(
        num_classes, arch=arch, input_tdim=input_tdim, input_fdim=input_fdim, fstride=fstride, tstride=tstride,
        u_patchout=u_patchout, s_patchout_t=s_patchout_t, s_patchout_f=s_patchout_f,
    )


__all__ = ["PaSSTNet", "passt_s_swa_p16_128_ap476", "quiet", "DEFAULT_ARCH", "WEIGHTS_HINT"]
