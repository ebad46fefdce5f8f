"""Clips of different lengths: which may share a batch, and which of a padded batch's patches are a clip's own.

Shared by `audiointerp extract` (any network) and the semantic family's whole-clip evaluation (VGGish patches):

- `length_batches`: positions grouped into batches, longest first. Without padding a batch holds clips of one
  length only (a network then sees each clip exactly as alone); with padding, consecutive clips in length order
  (the least padding).
- `patch_counts`: for a front end that cuts clips into fixed patches (it has `num_patches(samples)`, as the VGGish
  front end, also YAMNet's), how many patches of a zero-padded batch belong to each clip: a patch that ends before
  the padding does not see it, so the first `num_patches(length)` patches of a padded clip are exactly the
  patches of the clip alone. Padding is then exact for such front ends and for no other.
- `pad_batch`: waveforms of different lengths zero-padded at the end into one tensor (as `collate_clips`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from audiointerp.errors import DatasetError

__all__ = ["exact_padding", "length_batches", "pad_batch", "patch_counts"]


def exact_padding(frontend: Any) -> bool:
    """True when zero-padding clips in one batch is exact for `frontend`: it cuts fixed patches and says how many
    a clip gives (`num_patches`)."""
    return callable(getattr(frontend, "num_patches", None))


def length_batches(lengths: Sequence[int], batch_size: int, pad: bool = False) -> list[list[int]]:
    """Positions 0..len(lengths)-1 grouped into batches of at most `batch_size`, longest first (ties in position
    order): with `pad` False each batch holds one length only; with `pad` True consecutive positions of that order.
    Every position is in exactly one batch; the order is deterministic."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    order = sorted(range(len(lengths)), key=lambda k: (-int(lengths[k]), k))
    batches: list[list[int]] = []
    for k in order:
        last = batches[-1] if batches else None
        if (last is not None and len(last) < batch_size
                and (pad or int(lengths[last[0]]) == int(lengths[k]))):
            last.append(k)
        else:
            batches.append([k])
    return batches


def pad_batch(waveforms: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio [B, ..., T_max] zero-padded at the end, lengths int64 [B]) of waveforms [..., T_k] that agree on
    every axis but the last. Contract: `audio[k, ..., :lengths[k]]` is waveform k unchanged, the rest zeros."""
    if not waveforms:
        raise DatasetError("cannot pad an empty batch")
    leading = {tuple(w.shape[:-1]) for w in waveforms}
    if len(leading) != 1:
        raise DatasetError(f"waveforms of one batch have different channel shapes {sorted(leading)}")
    lengths = [int(w.shape[-1]) for w in waveforms]
    audio = waveforms[0].new_zeros((len(waveforms), *leading.pop(), max(lengths)))
    for k, waveform in enumerate(waveforms):
        audio[k, ..., : lengths[k]] = waveform
    return audio, torch.tensor(lengths, dtype=torch.int64)


def patch_counts(frontend: Any, lengths: Sequence[int], most: int) -> list[int]:
    """How many of a padded batch's `most` patches belong to each clip of `lengths` samples: `num_patches(n)`
    (at most `most`) for a front end that cuts patches (`exact_padding`), else `most` for every clip."""
    if not exact_padding(frontend):
        return [int(most)] * len(lengths)
    return [min(int(most), int(frontend.num_patches(int(n)))) for n in lengths]
