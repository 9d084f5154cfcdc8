"""The feature store's errors, and how a chunk that cannot be read is described in words.

Every error is a `StoreError` (a ValueError) whose message names the store and the fix.
"""
from __future__ import annotations


class StoreError(ValueError):
    """A store cannot be used; the message names the path and what to do."""


class IncompleteStoreError(StoreError):
    pass


class StaleStoreError(StoreError):
    pass


class DamagedStoreError(StoreError):
    """Chunks are missing, fail their checksum or cannot be decoded."""


class NonFiniteError(StoreError):
    """NaN or Inf in rows that would be scored."""


class StoreLockedError(StoreError):
    """Another live writer holds the store."""


def describe_read_error(err: Exception) -> str:
    """Why a chunk could not be read, in words (the checksum codecs' own messages are terse)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "checksum" in text.lower():
        return f"checksum mismatch: its bytes were changed or cut short ({text[:120]})"
    if "filter returned failure" in text:  # HDF5: fletcher32 (or lzf) refused the chunk
        return ("fails its fletcher32 checksum or cannot be decoded: its bytes were changed or cut "
                f"short ({text[:120]})")
    return f"cannot be decoded, truncated or corrupted ({type(err).__name__}: {text[:120]})"
