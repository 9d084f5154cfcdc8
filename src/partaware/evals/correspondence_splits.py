"""PCK and left/right confusion on subsets of the scored keypoint transfers (difficulty buckets,
the geometry-aware subset), under both averaging conventions of the field.

`per pair` (DIFT, DHPF, GeoAware-SC's default): each pair's share of correct keypoints, averaged
over pairs; `per point`: correct keypoints over all keypoints, pooled. Per-pair sums are kept so
the bootstrap over pairs (`evals.bootstrap`, statistic `top1` = sum(hits) / sum(count)) gives
either convention: per pair the sums are [pair's share, 1], per point [hits, keypoints].
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PER_PAIR, PER_POINT = "per pair", "per point"
CONVENTIONS = (PER_PAIR, PER_POINT)


@dataclass(frozen=True)
class SubsetScore:
    """One metric on one subset: value (fraction, NaN when empty), the pairs and keypoints it
    rests on, and the per-pair sums of its convention for the bootstrap."""
    value: float
    n_pairs: int
    n_points: int
    ids: np.ndarray
    sums: np.ndarray


def subset_score(pair: np.ndarray, hits: np.ndarray, convention: str) -> SubsetScore:
    """`hits` (n,) 0/1 per scored keypoint of a subset, `pair` (n,) its pair id."""
    if convention not in CONVENTIONS:
        raise ValueError(f"averaging convention {convention!r}: use one of {CONVENTIONS}")
    pair, hits = np.asarray(pair, np.int64), np.asarray(hits, np.float64)
    if not len(pair):
        return SubsetScore(float("nan"), 0, 0, np.zeros(0, np.int64), np.zeros((0, 2)))
    ids, inv = np.unique(pair, return_inverse=True)
    sums = np.zeros((len(ids), 2))
    np.add.at(sums, inv.reshape(-1), np.stack([hits, np.ones(len(hits))], 1))
    if convention == PER_PAIR:
        sums = np.stack([sums[:, 0] / sums[:, 1], np.ones(len(ids))], 1)
    return SubsetScore(float(sums[:, 0].sum() / sums[:, 1].sum()), len(ids), len(pair), ids, sums)


def category_mean(groups: np.ndarray, pair: np.ndarray, hits: np.ndarray) -> tuple[float, dict[str, float]]:
    """SOCO's averaging: each pair's share of correct keypoints, averaged per group (category or
    `pair_group`), then over groups. Returns (overall fraction, {group: fraction})."""
    groups, pair, hits = np.asarray(groups, object), np.asarray(pair, np.int64), np.asarray(hits, np.float64)
    per_group = {}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        per_group[g] = subset_score(pair[m], hits[m], PER_PAIR).value
    return (float(np.mean(list(per_group.values()))) if per_group else float("nan")), per_group
