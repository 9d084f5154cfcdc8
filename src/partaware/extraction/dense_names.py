"""The names of the dense-map stores and their arrays (`extraction.dense_images` fills them,
`tasks.correspondence` reads them, the keypoint-pair kinds declare them): no torch, so the
registries import them at module level.
"""
from __future__ import annotations

FINAL = "dense_final"
STORE_PREFIX = "test_dense"  # the store (split) of a dataset's dense maps: test_dense<size>


def store_name(size: int) -> str:
    """The split name of the dense-map store at input `size` (one store per size)."""
    return f"{STORE_PREFIX}{int(size)}"


def is_dense_store(split: str) -> bool:
    return split.startswith(STORE_PREFIX) and split[len(STORE_PREFIX):].isdigit()


def block_array(block: int) -> str:
    return f"dense/{int(block)}"
