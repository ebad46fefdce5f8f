"""audiointerp: train sound-to-event networks and open them up."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_export"]


def __getattr__(name: str):
    # Lazy: importing the package must not import torch, accelerate or wandb.
    if name == "load_export":
        from audiointerp.train.export import load_export

        return load_export
    raise AttributeError(f"module 'audiointerp' has no attribute {name!r}")
