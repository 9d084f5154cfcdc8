"""NMI and ARI of contingency tables, vectorised over bootstrap resamples.

Both scores are functions of the pooled contingency table (cluster x label counts), which is a
sum over images, so the bootstrap over images (`evals.bootstrap`, statistics `NMI` and `ARI` of
kind `contingency`) resamples per-image tables. A table is stored flat and square (M x M, M >=
clusters and labels): empty rows and columns change neither score, and the square shape needs no
side information. The formulas are sklearn's (`normalized_mutual_info_score` with the arithmetic
mean, `adjusted_rand_score` via the pair confusion matrix), including their special cases.
"""
from __future__ import annotations

import numpy as np


def square(t: np.ndarray) -> np.ndarray:
    """(B, M * M) -> (B, M, M)."""
    m = int(round(np.sqrt(t.shape[1])))
    if m * m != t.shape[1]:
        raise ValueError(f"contingency sums of {t.shape[1]} columns are not a flat square table")
    return t.reshape(len(t), m, m)


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(-1)


def nmi(t: np.ndarray) -> np.ndarray:
    """(B,) NMI (arithmetic mean of the entropies) of flat square tables (B, M * M)."""
    c = square(np.asarray(t, np.float64))
    n = c.sum((1, 2))
    a, b = c.sum(2), c.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        nn = np.where(n > 0, n, 1)[:, None, None]
        outer = a[:, :, None] * b[:, None, :]
        mi = np.where(c > 0, c / nn * np.log(np.where(c > 0, c * nn, 1) / np.where(outer > 0, outer, 1)), 0).sum((1, 2))
        ha, hb = _entropy(a / nn[:, :, 0]), _entropy(b / nn[:, :, 0])
    mi = np.maximum(mi, 0)
    single = ((a > 0).sum(1) == 1) & ((b > 0).sum(1) == 1)  # one cluster, one label: sklearn gives 1
    out = mi / np.maximum((ha + hb) / 2, np.finfo(np.float64).eps)
    return np.where(n == 0, np.nan, np.where(single, 1.0, out))


def ari(t: np.ndarray) -> np.ndarray:
    """(B,) ARI of flat square tables (B, M * M), sklearn's pair-confusion formula."""
    c = square(np.asarray(t, np.float64))
    n = c.sum((1, 2))
    sum_sq = (c * c).sum((1, 2))
    a, b = c.sum(2), c.sum(1)
    tp = sum_sq - n
    fp = (b * b).sum(1) - sum_sq
    fn = (a * a).sum(1) - sum_sq
    tn = n * n - fp - fn - sum_sq
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    return np.where(n == 0, np.nan, np.where((fn == 0) & (fp == 0), 1.0, out))
