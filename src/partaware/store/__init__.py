"""The feature store: one chunked on-disk cache per (dataset, model, split), Zarr or HDF5.

Both backends share one layout and one API. A store is written beside its final path
(`<path>.partial`) and published by one rename after its `complete` flag is set, so a reader
never sees half a store. Progress lives in a small sidecar (`<path>.progress.json`, replaced
atomically after every flushed chunk) so a killed extraction resumes from its last finished
chunk instead of starting over.

Integrity: every chunk carries a checksum (Zarr crc32c, HDF5 fletcher32), so a changed or cut
byte is an error on read, never a silently different number; a missing chunk of a float array
reads as NaN (never as plausible zeros) and `open_store` refuses a store with missing chunks;
`FeatureStore.read_checked` refuses NaN/Inf in valid rows. One writer per store: `StoreWriter`
holds `<store>.lock` (see `lock.py`) from its start until it publishes or closes.

Modules: `errors` (exceptions), `backends` (Zarr / HDF5), `writer` (`StoreWriter`, the lock
taking), `reader` (`open_store`, `FeatureStore`, shard manifests), `lock` (the lock file).
Settings are read where they are used: patch `partaware.store.writer.LOCK_WAIT_S`, not the
copy re-exported here.
"""
from __future__ import annotations

from .backends import FORMATS, STORE_FORMAT, format_of
from .errors import (DamagedStoreError, IncompleteStoreError, NonFiniteError, StaleStoreError, StoreError,
                     StoreLockedError, describe_read_error)
from .lock import LockHeldError, StoreLock
from .reader import FeatureStore, open_store
from .writer import LOCK_WAIT_S, StoreWriter

__all__ = ["FORMATS", "STORE_FORMAT", "LOCK_WAIT_S", "format_of", "StoreError", "IncompleteStoreError",
           "StaleStoreError", "DamagedStoreError", "NonFiniteError", "StoreLockedError",
           "describe_read_error", "LockHeldError", "StoreLock", "FeatureStore", "open_store",
           "StoreWriter"]
