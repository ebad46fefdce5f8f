"""Weights and data sets by name (issue 14): the catalogs, the cache and the one downloader.

`weights_catalog` (`weights:NAME`, `fetch_weights`), `data_catalog` (`data:NAME`, `fetch_data`) and `fetching`
(`download`: cache, lock, pooch, hashes.json, mirror and offline rules). Below datasets and models: imports only
`audiointerp.errors` and `audiointerp.locks`; the check that a file loads into its model is passed in.
"""

from audiointerp.downloads.data_catalog import (
    DATA_PREFIX,
    DataEntry,
    available_data,
    data_entry,
    data_name,
    fetch_data,
    resolve_data,
)
from audiointerp.downloads.fetching import (
    HASHES,
    Record,
    data_cache,
    download,
    mirrored,
    offline,
    read_records,
    weights_cache,
)
from audiointerp.downloads.weights_catalog import (
    CATALOG,
    WEIGHTS_PREFIX,
    Verified,
    WeightsEntry,
    available_weights,
    cached_path,
    fetch_weights,
    verify_weights,
    weights_entry,
    weights_name,
)

__all__ = [
    "CATALOG", "DATA_PREFIX", "DataEntry", "HASHES", "Record", "Verified", "WEIGHTS_PREFIX", "WeightsEntry", "available_data",
    "available_weights", "cached_path", "data_cache", "data_entry", "data_name", "download", "fetch_data",
    "fetch_weights", "mirrored", "offline", "read_records", "resolve_data", "verify_weights", "weights_cache", "weights_entry",
    "weights_name",
]
