"""Confidence intervals by a paired bootstrap over images (issue 19).

Every number in the table is a function of per-image sums that add up over images:
retrieval AP is sum(AP) / #queries, mAP the mean over classes of each class's AP sum / count,
probe accuracy #correct / #samples, and segmentation mIoU / mAcc / aAcc come from per-class
intersection, union and label pixel counts (a set of images' confusion matrix is the sum of
theirs). A bootstrap resample of images is then a vector of image multiplicities w (the
bincount of the drawn indices) and its metric is computed from w @ sums: all queries, samples
and pixels of one image are resampled together (a cluster bootstrap), so the several parts of
one image, which are not independent, do not make the interval too narrow.

Paired: the multiplicities depend only on (seed, number of images, B), so encoders measured on
the same images see the same resamples, and the interval of a difference between two of them
accounts for their correlation. Intervals are percentile intervals of B resamples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import clustering

KINDS = ("retrieval", "accuracy", "segmentation", "contingency")
_BLOCK_ENTRIES = 2**22  # resample multiplicities held at once (B_block x n_images)


@dataclass(frozen=True)
class ImageSums:
    """Per-image additive statistics of one measurement.

    `ids` (n,) int64: the images, sorted, unique; `sums` (n, K) float64. The columns by `kind`:
    retrieval: AP sum per class (C), then query count per class (C); accuracy: correct, count;
    segmentation: intersection (C), union (C), label pixels (C) per class; contingency: a flat
    square cluster x label count table (`evals.clustering`).
    """
    kind: str
    ids: np.ndarray
    sums: np.ndarray

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"ImageSums kind {self.kind!r}: use one of {KINDS}")
        if self.sums.ndim != 2 or len(self.sums) != len(self.ids):
            raise ValueError(f"ImageSums: sums {self.sums.shape} do not match {len(self.ids)} image ids")

    def subset(self, ids: np.ndarray) -> "ImageSums":
        """These statistics on the given images (each one of `self.ids`), in that order."""
        pos = np.searchsorted(self.ids, ids)
        if len(ids) and (pos.max(initial=0) >= len(self.ids) or not np.array_equal(self.ids[pos], ids)):
            raise ValueError("ImageSums.subset: some images are not among these statistics")
        return ImageSums(self.kind, np.asarray(ids, np.int64), self.sums[pos])


def _per_image(image_ids, columns: np.ndarray, kind: str) -> ImageSums:
    """Sum rows of `columns` (m, K) by image id."""
    image_ids = np.asarray(image_ids).reshape(-1)
    if len(image_ids) != len(columns):
        raise ValueError(f"{len(image_ids)} image ids for {len(columns)} values")
    ids, inverse = np.unique(image_ids, return_inverse=True)
    sums = np.zeros((len(ids), columns.shape[1]))
    np.add.at(sums, inverse.reshape(-1), columns)
    return ImageSums(kind, ids.astype(np.int64), sums)


def retrieval_sums(ap, image_ids, labels) -> ImageSums:
    """Per-image, per-class AP sums and query counts of per-query AP values.

    The AP of each query is the one computed against the whole retrieval set: only the queries
    are resampled, not the gallery they were ranked in (the usual choice, and what the table's
    AP means: the mean over this set's queries). Queries with NaN AP (no positive) count nowhere,
    as in `retrieval.summarise`.
    """
    ap = np.asarray(ap, np.float64).reshape(-1)
    codes = np.unique(np.asarray(labels).reshape(-1), return_inverse=True)[1].reshape(-1)
    if len(codes) != len(ap):
        raise ValueError(f"{len(ap)} AP values but {len(codes)} labels")
    n_classes = int(codes.max()) + 1 if len(codes) else 0
    ok = np.isfinite(ap)
    cols = np.zeros((len(ap), 2 * n_classes))
    rows = np.flatnonzero(ok)
    cols[rows, codes[rows]] = ap[rows]
    cols[rows, n_classes + codes[rows]] = 1.0
    return _per_image(image_ids, cols, "retrieval")


def accuracy_sums(correct, image_ids) -> ImageSums:
    """Per-image correct and sample counts of per-sample correctness (0/1)."""
    correct = np.asarray(correct, np.float64).reshape(-1)
    return _per_image(image_ids, np.stack([correct, np.ones_like(correct)], axis=1), "accuracy")


def segmentation_sums(inter, union, label, image_ids=None) -> ImageSums:
    """Per-image per-class intersection, union and label pixel counts, each (n, C), as
    `metrics.per_image_counts` gives them; `image_ids` default 0..n-1."""
    inter, union, label = (np.asarray(a, np.float64) for a in (inter, union, label))
    if not (inter.shape == union.shape == label.shape) or inter.ndim != 2:
        raise ValueError(f"intersection {inter.shape}, union {union.shape} and label {label.shape} counts "
                         "must all be (images, classes)")
    ids = np.arange(len(inter)) if image_ids is None else image_ids
    return _per_image(ids, np.concatenate([inter, union, label], axis=1), "segmentation")


# ------------------------------------------------------------------ metrics of summed statistics
def _ratio(num, den):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    finite = np.isfinite(a)
    count = finite.sum(axis=1)
    return np.where(count > 0, np.where(finite, a, 0).sum(axis=1) / np.maximum(count, 1), np.nan)


def _halves(t):
    c = t.shape[1] // 2
    return t[:, :c], t[:, c:]


def _thirds(t):
    c = t.shape[1] // 3
    return t[:, :c], t[:, c:2 * c], t[:, 2 * c:]


def _ap(t):
    s, n = _halves(t)
    return _ratio(s.sum(1), n.sum(1))


def _map(t):
    s, n = _halves(t)
    return _nanmean_rows(_ratio(s, n))


def _miou(t):
    i, u, _ = _thirds(t)
    return _nanmean_rows(_ratio(i, u))


def _macc(t):
    i, _, lab = _thirds(t)
    return _nanmean_rows(_ratio(i, lab))


def _aacc(t):
    i, _, lab = _thirds(t)
    return _ratio(i.sum(1), lab.sum(1))


STATISTICS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "AP": ("retrieval", _ap), "mAP": ("retrieval", _map),
    "top1": ("accuracy", lambda t: _ratio(t[:, 0], t[:, 1])),
    "mIoU": ("segmentation", _miou), "mAcc": ("segmentation", _macc), "aAcc": ("segmentation", _aacc),
    "NMI": ("contingency", clustering.nmi), "ARI": ("contingency", clustering.ari),
}


def statistic(metric: str, kind: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function (B, K) summed statistics -> (B,) metric values (fractions) of a metric name
    of the result rows: a statistic's own name, or a metric a task maps onto one (`Task.metrics`:
    `top1_best_epoch` and `top1_last_epoch` are `top1`)."""
    from .. import tasks

    name = metric if metric in STATISTICS else tasks.statistic_of(metric)
    if name not in STATISTICS:
        raise ValueError(f"no bootstrap statistic for metric {metric!r}; known: {sorted(STATISTICS)}, or "
                         "map it onto one in its task's `metrics` (partaware/tasks/)")
    want, fn = STATISTICS[name]
    if want != kind:
        raise ValueError(f"metric {metric!r} needs {want} statistics, got {kind}")
    return fn


def value(sums: ImageSums, metric: str) -> float:
    """The metric (a fraction) of all images: the full-set value the table reports."""
    return float(statistic(metric, sums.kind)(sums.sums.sum(axis=0, keepdims=True))[0])


# ------------------------------------------------------------------ resampling
def resample_counts(n_images: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks (b, n_images) of image multiplicities, `resamples` rows in all: row r counts how
    often each image is drawn in resample r (n_images draws with replacement). Fixed by
    (n_images, resamples, seed), whatever the encoder, so resamples are paired."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _BLOCK_ENTRIES // max(1, n_images)))
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        draws = rng.integers(0, n_images, size=(b, n_images))
        draws += (np.arange(b) * n_images)[:, None]
        yield np.bincount(draws.reshape(-1), minlength=b * n_images).reshape(b, n_images)


def replicates(tables: list[ImageSums], metrics: list[str], resamples: int, seed: int) -> np.ndarray:
    """(len(tables), len(metrics), resamples) metric values (fractions): metric j of table i on
    each resample; all tables must cover the same images (`ids`), which share the resamples."""
    if not tables:
        return np.zeros((0, len(metrics), resamples))
    ids = tables[0].ids
    for t in tables[1:]:
        if not np.array_equal(t.ids, ids):
            raise ValueError("paired resampling needs statistics of the same images; align them "
                             "first (`ImageSums.subset` on the common ids)")
    fns = [[statistic(m, t.kind) for m in metrics] for t in tables]
    out = np.full((len(tables), len(metrics), resamples), np.nan)
    if not len(ids):
        return out
    done = 0
    for w in resample_counts(len(ids), resamples, seed):
        w = w.astype(np.float64)
        for i, t in enumerate(tables):
            totals = w @ t.sums
            for j, fn in enumerate(fns[i]):
                out[i, j, done:done + len(w)] = fn(totals)
        done += len(w)
    return out


def percentile_interval(values, level: float) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap values (NaN ones left out)."""
    values = np.asarray(values, np.float64)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    lo, hi = np.nanquantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


MIN_UNITS = 2  # resampling units (images) below which a bootstrap has no spread to show


def resamplable(n_images: int) -> bool:
    """Whether `n_images` resampling units give an interval: one image resampled is always
    itself, so its "interval" would be a point that reads as certainty (and a zero-width
    difference interval that reads as significant)."""
    return n_images >= MIN_UNITS


def intervals(sums: ImageSums, metrics: list[str], resamples: int, level: float = 0.95,
              seed: int = 0) -> dict[str, tuple[float, float]]:
    """{metric: (low, high)} percentile intervals (fractions) of one measurement; (NaN, NaN)
    when `resamples` is 0 or there are fewer than two images (`resamplable`)."""
    if resamples < 1 or not resamplable(len(sums.ids)):
        return {m: (float("nan"), float("nan")) for m in metrics}
    reps = replicates([sums], metrics, resamples, seed)[0]
    return {m: percentile_interval(reps[j], level) for j, m in enumerate(metrics)}


def paired_difference(a: ImageSums, b: ImageSums, metric: str, resamples: int, level: float = 0.95,
                      seed: int = 0) -> dict:
    """metric(a) - metric(b) on their common images, and the percentile interval of that
    difference over resamples shared by both: {"diff", "low", "high", "n_images",
    "excludes_zero"} (fractions); no interval (NaN, never excluding zero) on fewer than two
    common images. Identical statistics give exactly 0 and a zero-width interval."""
    common = np.intersect1d(a.ids, b.ids)
    a, b = a.subset(common), b.subset(common)
    diff = value(a, metric) - value(b, metric)
    lo = hi = float("nan")
    if resamples >= 1 and resamplable(len(common)):
        reps = replicates([a, b], [metric], resamples, seed)
        lo, hi = percentile_interval(reps[0, 0] - reps[1, 0], level)
    return {"diff": diff, "low": lo, "high": hi, "n_images": len(common),
            "excludes_zero": bool(np.isfinite(lo) and (lo > 0 or hi < 0))}
