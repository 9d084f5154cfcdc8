"""Batch orders shared by the probes and the readers that feed them: a fresh seeded per-sample
permutation each epoch, and batch edges that never leave a batch of one (its BatchNorm would be
all zeros)."""
from __future__ import annotations

import numpy as np


def epoch_permutation(n: int, seed: int, epoch: int, stream: int | None = None) -> np.ndarray:
    """The sample order of one epoch: a permutation of range(n) fixed by (seed, epoch), new every
    epoch; `stream` keeps apart orders drawn beside other seeded draws of the same seed."""
    if seed < 0 or epoch < 0:
        raise ValueError(f"shuffle seed {seed} and epoch {epoch} must be >= 0")
    key = [int(seed), int(epoch)] if stream is None else [int(seed), int(stream), int(epoch)]
    return np.random.default_rng(key).permutation(int(n))


def batch_bounds(n: int, batch_size: int, merge_last_below: int = 2) -> list[tuple[int, int]]:
    """(lo, hi) of consecutive batches; a last batch smaller than `merge_last_below` joins the
    previous one, so a batch-statistics model never sees a lone sample (which it would
    normalise to zeros; the released BatchNorm raises)."""
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} must be >= 1")
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < merge_last_below:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds
