"""Float32 islands in mixed-precision training.

Under `train.mixed_precision=bf16|fp16` the networks run under autocast, but two kinds of module must not:

- front ends (STFT, mel filter banks, fbank, log): a power spectrum exceeds fp16's range (65,504) and its mel
  matmul then overflows to inf, whose log is NaN; bf16 keeps the range but only 8 bits of mantissa, which blurs
  quiet bands. Every front end registered with `audiointerp.models.register_frontend` runs under
  :func:`full_precision` (the registry wraps its class's `forward`), whoever calls it.
- losses: a loss sums many small terms; in 16 bits the sum loses them. The modules of `audiointerp.losses` are
  wrapped too.

:func:`full_precision` turns autocast off on the device of the call's tensors and casts its floating-point tensor
arguments to float32, so the wrapped module computes exactly as it does without mixed precision.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_WRAPPED = "_audiointerp_full_precision"


def _to_float32(value: Any) -> Any:
    """A floating-point tensor as float32 (complex as complex64); anything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            return value.to(torch.complex64) if value.dtype != torch.complex128 else value
        if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
            return value.float()
    return value


def _device_types(args: tuple[Any, ...], kwargs: dict[str, Any]) -> set[str]:
    types = {value.device.type for value in (*args, *kwargs.values()) if isinstance(value, torch.Tensor)}
    return types or {"cpu"}


def full_precision(function: F) -> F:
    """Decorate a function or method so that it runs with autocast off (on the devices of its tensor arguments)
    and its 16-bit floating-point tensor arguments cast to float32. Applying it twice wraps once."""
    if getattr(function, _WRAPPED, False):
        return function

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_to_float32(value) for value in args)
        kwargs = {key: _to_float32(value) for key, value in kwargs.items()}
        devices = sorted(device for device in _device_types(args, kwargs) if torch.is_autocast_enabled(device))
        return _without_autocast(devices, function, args, kwargs)

    setattr(wrapper, _WRAPPED, True)
    return wrapper  # type: ignore[return-value]


def _without_autocast(devices: list[str], function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`function(*args, **kwargs)` with autocast off on each of `devices`: plain nested `with` blocks, which
    torch.compile traces without a graph break."""
    if not devices:
        return function(*args, **kwargs)
    with torch.autocast(device_type=devices[0], enabled=False):
        return _without_autocast(devices[1:], function, args, kwargs)


def full_precision_forward(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Class decorator: the module's `forward` runs under :func:`full_precision` (for subclasses too)."""
    cls.forward = full_precision(cls.forward)  # type: ignore[method-assign]
    return cls


def runs_in_full_precision(module: torch.nn.Module) -> bool:
    """Whether `module`'s forward is wrapped by :func:`full_precision`."""
    return bool(getattr(type(module).forward, _WRAPPED, False))
