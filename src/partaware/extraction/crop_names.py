"""Names of the box-crop stores (`train_crop<size>`, `test_crop<size>`): light, so kinds and tasks
can name them without importing the extraction code (torch)."""
from __future__ import annotations

import re

_STORE = re.compile(r"^(train|test)_crop(\d+)$")


def store_name(split: str, size: int) -> str:
    """The store (split wildcard) of one split's box crops at input `size`."""
    return f"{split}_crop{int(size)}"


def is_crop_store(split: str) -> bool:
    return bool(_STORE.match(split))


def split_of(store: str) -> str:
    """`train_crop224` -> `train`."""
    return _STORE.match(store).group(1)
