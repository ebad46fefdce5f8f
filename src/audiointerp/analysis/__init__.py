"""Analyses of trained networks: the activation store (`extract`), and what reads it (`decode`, `rsa`, `probe`,
`concepts`, `manipulate`), each in the one shape of an analysis command (`analysis.command`)."""

from audiointerp.analysis.extraction import ExtractSettings, extract
from audiointerp.datasets.store import ActivationStore, StoreError

__all__ = ["ActivationStore", "ExtractSettings", "StoreError", "extract"]
