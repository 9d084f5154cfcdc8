"""Exact all-pairs part retrieval AP (PROTOCOL section 3), without sklearn's per-query loop.

For query i with score row s (cosine to every sample) and positive set P (same label),
sklearn's `average_precision_score` is, with ties grouped into one threshold step,

    AP_i = 1/|P| * sum_{j in P} #{k in P: s_k >= s_j} / #{k: s_k >= s_j}.

Both counts come from one ascending sort per row of integer keys `2 * ordered_bits(s) + flag`
(flag 0 = positive, 1 = negative): equal scores stay adjacent with positives first, so the
sorted position of the first positive of a tie run is #{k: s_k < s_j}. A values-only int64
sort is several times faster than an argsort (numpy's SIMD sort on CPU, torch.sort on GPU).
Queries go class by class (all queries of a class share one positive set) in row blocks
sized from `memory_mb`, so N = 200,000 fits; CPU blocks reuse preallocated buffers, because
first-touch page faults on fresh (block, N) arrays otherwise cost more than the sort.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import pick_device
from ..progress import Progress

log = logging.getLogger(__name__)

# Peak bytes per (query, sample) pair in one block: fp32 scores, int32 temporaries, int64
# keys, a mask, the positives' positions and keys, with head-room. torch.sort also returns
# int64 indices and needs scratch space (measured on an H200: ~58 bytes per pair).
_BYTES_PER_PAIR = {"cpu": 48, "torch": 64}
_DROPPED = -(2**63) + 1  # odd ("negative") and below every real key


class _CpuBlocks:
    """numpy work buffers for one (block, N) shape, reused across blocks."""

    def __init__(self, block: int, n: int):
        self.scores = torch.empty(block, n)
        self.i32 = np.empty((block, n), np.int32)
        self.sign = np.empty((block, n), np.int32)
        self.keys = np.empty((block, n), np.int64)
        self.mask = np.empty((block, n), bool)

    def positives(self, xq, x, negative, n_pos, self_cols):
        """(ascending positions, ordered score bits) of the positives, each (b, n_pos)."""
        b, n = xq.shape[0], x.shape[0]
        s = self.scores[:b]
        torch.matmul(xq, x.T, out=s)
        bits, sign, m = s.numpy().view(np.int32), self.sign[:b], self.i32[:b]
        # float32 bits -> int32 of the same order (-0.0 and +0.0 equal): flip the magnitude
        # bits of negative floats, then add 1 to them
        np.right_shift(bits, 31, out=sign)
        np.bitwise_and(sign, 0x7FFFFFFF, out=m)
        np.bitwise_xor(bits, m, out=m)
        np.subtract(m, sign, out=m)
        k = self.keys[:b]
        k[...] = m
        np.left_shift(k, 1, out=k)
        np.bitwise_or(k, negative, out=k)
        if self_cols is not None:
            k[np.arange(b), self_cols] = _DROPPED
        k.sort(axis=1)
        mask = self.mask[:b]
        np.bitwise_and(k, 1, out=mask, casting="unsafe")
        np.logical_not(mask, out=mask)
        flat = np.flatnonzero(mask)
        pos_bits = k.reshape(-1)[flat].reshape(b, n_pos) >> 1
        below = flat.reshape(b, n_pos) - (np.arange(b) * n)[:, None]
        return below, pos_bits


def _gpu_positives(xq, x, negative, n_pos, self_cols):
    """The same as `_CpuBlocks.positives` with torch ops (any device)."""
    b = xq.shape[0]
    bits = (xq @ x.T).view(torch.int32)
    sign = bits >> 31
    keys = ((bits ^ (sign & 0x7FFFFFFF)) - sign).long().mul_(2).add_(negative)
    del bits, sign
    if self_cols is not None:
        keys[torch.arange(b, device=keys.device), self_cols] = _DROPPED
    keys = torch.sort(keys, dim=1).values
    is_pos = (keys & 1) == 0
    below = is_pos.nonzero()[:, 1].reshape(b, n_pos)
    return below, (keys[is_pos] >> 1).reshape(b, n_pos)


def _ap_from_positions(below, pos_bits, n: int):
    """Per-row AP (float64) from the positives' ascending sorted positions and score bits.

    numpy arrays (CPU path) or torch tensors (GPU path), same arithmetic.
    """
    is_np = isinstance(below, np.ndarray)
    n_pos = below.shape[1]
    rank = np.arange(n_pos) if is_np else torch.arange(n_pos, device=below.device)
    # precision at the threshold of the i-th positive (ascending): positives >= it / all >= it
    prec = (n_pos - rank) / (n - below) if is_np else (n_pos - rank).double() / (n - below).double()
    # tied positives take the precision of their run's first (lowest-position) member
    changed = pos_bits[:, 1:] != pos_bits[:, :-1]
    if is_np:
        first = np.zeros(below.shape, np.int64)
        first[:, 1:] = np.where(changed, rank[1:], 0)
        first = np.maximum.accumulate(first, axis=1)
        return np.take_along_axis(prec, first, axis=1).mean(axis=1)
    first = torch.zeros_like(below)
    first[:, 1:] = torch.where(changed, rank[1:], 0)
    first = first.cummax(dim=1).values
    return prec.gather(1, first).mean(dim=1).cpu().numpy()


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def average_precision_per_query(feats, labels, exclude_self: bool = False,
                                memory_mb: float = 1024, device=None) -> np.ndarray:
    """AP_i (N,) float64 of every sample as a query against all samples by cosine similarity.

    Default (the paper's protocol): the query is in its own ranking as a rank-1 positive.
    `exclude_self=True` removes it; a query that then has no positive gets NaN.
    Equal to sklearn's `average_precision_score` row by row, ties included.
    """
    dev = pick_device(device)
    x = F.normalize(_as_tensor(feats).to(dev, torch.float32), dim=1).contiguous()
    n = x.shape[0]
    codes = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
    if codes.shape[0] != n:
        raise ValueError(f"{n} features but {codes.shape[0]} labels")
    ap = np.full(n, np.nan)
    if n == 0:
        return ap
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: scores and their ties stay fp32
    try:
        _fill(ap, x, codes, exclude_self, memory_mb, dev)
    finally:
        torch.set_float32_matmul_precision(precision)
    return ap


def _fill(ap, x, codes, exclude_self, memory_mb, dev):
    """Write each class's queries' AP into `ap`, block by block."""
    n = x.shape[0]
    per_pair = _BYTES_PER_PAIR["cpu" if dev.type == "cpu" else "torch"]
    block = int(max(1, min(n, memory_mb * 2**20 // (per_pair * n))))
    cpu = _CpuBlocks(block, n) if dev.type == "cpu" else None
    progress, done = Progress(log, n, "queries"), 0
    for c in range(int(codes.max()) + 1):
        rows = np.flatnonzero(codes == c)
        n_pos = len(rows) - int(exclude_self)
        if n_pos == 0:
            continue
        negative = (codes != c).astype(np.int64)
        negative_dev = torch.from_numpy(negative).to(dev)
        for start in range(0, len(rows), block):
            r = rows[start:start + block]
            xq = x[torch.from_numpy(r).to(dev)]
            if cpu is not None:
                below, pos_bits = cpu.positives(xq, x, negative, n_pos, r if exclude_self else None)
            else:
                self_cols = torch.from_numpy(r).to(dev) if exclude_self else None
                below, pos_bits = _gpu_positives(xq, x, negative_dev, n_pos, self_cols)
            ap[r] = _ap_from_positions(below, pos_bits, n)
            done += len(r)
            progress.update(done)


def summarise(ap, labels) -> dict:
    """{"AP": mean over queries (the paper's number), "mAP": mean over classes of class means}.

    NaN queries (no positive) are left out of both means.
    """
    ap = np.asarray(ap, dtype=np.float64)
    labels = np.asarray(labels)
    per_class = [ap[labels == c] for c in np.unique(labels)]
    class_means = [float(np.nanmean(a)) for a in per_class if np.isfinite(a).any()]
    return {
        "AP": float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"),
        "mAP": float(np.mean(class_means)) if class_means else float("nan"),
    }


def self_only_queries(labels) -> np.ndarray:
    """(N,) bool: queries whose only positive is themselves (the one sample of their label).

    Under the paper's protocol such a query scores AP 1 by construction; with `exclude_self`
    it has no positive at all. Either way it measures nothing about the features.
    """
    codes, counts = np.unique(np.asarray(labels).reshape(-1), return_inverse=True, return_counts=True)[1:]
    return counts[codes.reshape(-1)] == 1


def degenerate_note(labels, exclude_self: bool) -> tuple[int, str]:
    """(count of self-only queries, a sentence for the log and the row's notes; "" when none).

    With `exclude_self` they are left out of AP and mAP (their AP is NaN); under the paper's
    protocol they stay in (AP 1 each), as the paper computes it. When every query is self-only
    there is no value to report (`summarise_checked` returns NaN).
    """
    self_only = self_only_queries(labels)
    count, n = int(self_only.sum()), len(self_only)
    if not count:
        return 0, ""
    if count == n:
        return count, (f"no value: each of the {n} queries is the only sample of its label, so it has no "
                       "other positive to retrieve (add images or parts)")
    if exclude_self:
        return count, f"{count} of {n} queries have no other positive: left out of AP and mAP"
    return count, (f"{count} of {n} queries have no other positive: each counts as AP 100 "
                   "(the paper's protocol keeps the query in its own ranking)")


def summarise_checked(ap, labels) -> dict:
    """`summarise`, but NaN AP and mAP when every query is self-only (a value of 100 there would
    rest on no retrieval at all)."""
    if len(ap) and self_only_queries(labels).all():
        return {"AP": float("nan"), "mAP": float("nan")}
    return summarise(ap, labels)
