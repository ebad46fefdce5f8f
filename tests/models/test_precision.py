"""Float32 islands under mixed precision (`models.precision`): front ends and losses compute exactly as without
autocast, while the networks around them run in 16 bits."""

from __future__ import annotations

import torch
from torch import nn

from audiointerp.losses import AngularDistanceLoss, MultiResolutionSTFTDistance
from audiointerp.models import build_frontend
from audiointerp.models.frontends import LogMel
from audiointerp.models.precision import full_precision, runs_in_full_precision
from audiointerp.models.registry import available_frontends


def loud_clip(seconds: float = 0.5, rate: int = 16000) -> torch.Tensor:
    """A clipped square wave at full scale times 400: its STFT power (about 1e10 per bin) is far past fp16's
    largest number (65,504)."""
    t = torch.arange(int(seconds * rate)) / rate
    return 400.0 * torch.sign(torch.sin(2 * torch.pi * 440.0 * t)).unsqueeze(0)


def test_every_registered_front_end_runs_in_full_precision() -> None:
    """The registry wraps each front end's forward: a new front end needs nothing more."""
    from audiointerp.models.registry import _FRONTENDS

    assert len(available_frontends()) >= 5  # loads the zoo, which registers them
    for name, factory in _FRONTENDS.items():
        assert isinstance(factory, type) and getattr(factory.forward, "_audiointerp_full_precision", False), name
    assert runs_in_full_precision(build_frontend("logmel"))


def test_a_front_end_under_fp16_autocast_equals_float32_where_the_plain_one_overflows() -> None:
    """Known answer: the mel matmul of a loud clip overflows in fp16 (inf, whose log is inf/NaN) unless the front
    end runs in float32; wrapped, it gives exactly the float32 features."""
    frontend = LogMel()
    clip = loud_clip()
    reference = frontend(clip)
    plain = type(frontend).forward.__wrapped__  # the unwrapped forward, as every front end was before
    with torch.autocast("cpu", dtype=torch.float16):
        overflowing = plain(frontend, clip.half())
        wrapped = frontend(clip.half())
    assert not bool(torch.isfinite(overflowing).all())
    assert wrapped.dtype == torch.float32
    assert torch.isfinite(reference).all()
    # the input was cast to fp16 and back: the same features as float32 from that (rounded) input
    assert torch.equal(wrapped, frontend(clip.half().float()))


def test_networks_still_run_in_bf16_around_the_float32_front_end() -> None:
    """Autocast stays on outside the island: a Linear after the front end computes in bf16."""
    frontend, head = LogMel(n_mels=16), nn.Linear(51, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = frontend(torch.randn(2, 8000))
        out = head(features)
    assert features.dtype == torch.float32 and out.dtype == torch.bfloat16


def test_losses_compute_in_float32_from_bf16_inputs() -> None:
    """Known answer: the angular loss and the STFT distance of bf16 inputs under autocast equal the float32
    computation on the same (rounded) values, not a bf16 one."""
    torch.manual_seed(0)
    prediction, target = torch.randn(64, 300).bfloat16(), torch.randn(64, 300).bfloat16()
    angular = AngularDistanceLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = angular(prediction, target)
    assert under.dtype == torch.float32
    assert torch.equal(under, angular(prediction.float(), target.float()))
    estimate, reference = torch.randn(2, 4000), torch.randn(2, 4000)
    distance = MultiResolutionSTFTDistance()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = distance(estimate, reference)
    assert torch.equal(under, distance(estimate, reference))


def test_full_precision_wraps_once_and_leaves_other_arguments_alone() -> None:
    calls = []

    @full_precision
    def f(x: torch.Tensor, k: int, *, y: torch.Tensor) -> tuple[torch.dtype, torch.dtype, int]:
        calls.append(torch.is_autocast_enabled("cpu"))
        return x.dtype, y.dtype, k

    assert full_precision(f) is f
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert f(torch.ones(2).bfloat16(), 3, y=torch.ones(1, dtype=torch.int64)) == (torch.float32, torch.int64, 3)
    assert calls == [False]


def test_the_autoencoder_wrappers_resampling_is_float32_under_autocast() -> None:
    """Known answer: 32 kHz -> 48 kHz -> 32 kHz of a tone under bf16 autocast is exactly the float32 round trip
    (a bf16 convolution would leave an error near 2^-8 of the amplitude)."""
    from audiointerp.models.archisound import resample

    tone = torch.sin(2 * torch.pi * 1000.0 * torch.arange(3200) / 32000).unsqueeze(0)
    reference = resample(resample(tone, 32000, 48000), 48000, 32000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = resample(resample(tone, 32000, 48000), 48000, 32000)
    assert under.dtype == torch.float32 and torch.equal(under, reference)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = resample.__wrapped__(resample.__wrapped__(tone, 32000, 48000), 48000, 32000)
    assert (plain.float() - reference).abs().max() > 1e-3  # what the island prevents


def test_a_compiled_network_traces_through_a_float32_island_without_a_graph_break() -> None:
    """torch.compile of a float32 island + network under bf16 autocast: one graph (the island's nested `with
    autocast` blocks are traceable; entering autocast by hand broke the graph), the island in float32, the head in
    bf16."""
    import torch._dynamo

    from audiointerp.models.precision import full_precision_forward

    @full_precision_forward
    class Bank(nn.Module):  # a mel-bank-like matmul: the island
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("bank", torch.rand(8, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x.square() @ self.bank.T + 1e-5)

    bank, head = Bank(), nn.Linear(8, 3)
    dtypes = []

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = bank(x)
            dtypes.append(features.dtype)
            return head(features)

    explained = torch._dynamo.explain(run)(torch.randn(4, 16))
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    dtypes.clear()
    assert run(torch.randn(4, 16)).dtype == torch.bfloat16 and dtypes == [torch.float32]
