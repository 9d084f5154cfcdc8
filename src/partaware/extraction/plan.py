"""What extraction needs from a kind to fill one store, and how rows split into shards. Here, in
`extraction/`, so that the kinds build their plans from it and extraction never imports a kind.
No torch: the kinds import this at module level.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class ExtractionPlan:
    """Everything extraction needs to fill one store of a (dataset, split[, shard]).

    `layout` maps array name -> (per-row shape, dtype, chunk rows); `images` and `resume_rows`
    name the rows exactly (the resume key: a resumed store must hold the same rows);
    `loader_data(start)` is the Dataset of the rows from `start` on; `make_step(encoder,
    device, amp)` returns the per-batch device function of `extraction.steps`.
    """
    n_rows: int
    layout: dict
    transform: str
    images: list[str]
    resume_rows: list
    rows: tuple[int, int]
    loader_data: Callable[[int], Any]
    collate: Callable
    make_step: Callable
    images_per_batch: int
    attrs: dict = field(default_factory=dict)


def shard_range(n_rows: int, shard: int, shards: int) -> tuple[int, int]:
    """Contiguous, near-equal row ranges: shard k of n covers [lo, hi)."""
    bounds = np.linspace(0, n_rows, shards + 1).round().astype(int)
    return int(bounds[shard]), int(bounds[shard + 1])
