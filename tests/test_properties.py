"""Property tests that complement test_evals_retrieval.py and test_data_geometry.py.

Those check AP on +-1 features of one norm and the crop geometry on a half-pixel grid. Here:
- AP on features that mix zero rows, rows of different norms and scales (exact in float32, so
  real ties stay ties), +0.0 / -0.0 scores, every input dtype the store gives, string labels and
  tiny blocks, against sklearn query by query, plus `summarise` against its definition;
- the crop geometry on arbitrary float keypoints over the whole range of the size filter,
  against PROTOCOL.md section 2 written out directly;
- `crop_patch` pixel by pixel against a direct zero-filled crop.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import average_precision_score

from partaware.data.geometry import crop_box, keep, nearest_other_distance
from partaware.data.images import crop_patch
from partaware.evals.retrieval import average_precision_per_query, summarise


# --------------------------------------------------------------------------- retrieval AP
def sklearn_ap(feats: np.ndarray, labels: np.ndarray, exclude_self: bool) -> np.ndarray:
    x = feats.astype(np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1)  # a zero row scores 0 against everything
    scores = x @ x.T
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        others = np.arange(len(x)) != i if exclude_self else np.ones(len(x), bool)
        positive = (labels == labels[i])[others]
        if positive.any():
            out[i] = average_precision_score(positive, scores[i][others])
    return out


DIM = 16


@st.composite
def exact_features(draw):
    """Rows with k in {0, 1, 4, 16} entries +-1 (norm 0, 1, 2, 4), times 2^e: after normalising,
    every entry is 0, +-1, +-1/2 or +-1/4, so every cosine is exact in float32 and ties are real."""
    n = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ks = draw(st.lists(st.sampled_from([0, 1, 4, 16]), min_size=n, max_size=n))
    x = np.zeros((n, DIM))
    for row, k in zip(x, ks):
        row[rng.choice(DIM, k, replace=False)] = rng.choice([-1.0, 1.0], k)
        row *= 2.0 ** int(rng.integers(-3, 4))
    if n > 3 and draw(st.booleans()):
        x[n // 2:] = x[: n - n // 2]  # duplicated rows
    return x


@settings(max_examples=80, deadline=None)
@given(feats=exact_features(), data=st.data(), exclude_self=st.booleans(),
       dtype=st.sampled_from(["float16", "float32", "float64", "torch_float16"]),
       memory_mb=st.sampled_from([1e-4, 0.01, 64]))
def test_ap_matches_sklearn_on_mixed_norms_zero_rows_and_dtypes(feats, data, exclude_self, dtype, memory_mb):
    n = len(feats)
    labels = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)))
    if data.draw(st.booleans()):
        labels = np.array(["eye", "leg", "wing", "tail"])[labels]
    given_feats = torch.from_numpy(feats).half() if dtype == "torch_float16" else feats.astype(dtype)
    ap = average_precision_per_query(given_feats, labels, exclude_self=exclude_self,
                                     memory_mb=memory_mb, device="cpu")
    expected = sklearn_ap(feats, labels, exclude_self)
    assert ap.shape == (n,) and ap.dtype == np.float64
    np.testing.assert_array_equal(np.isnan(ap), np.isnan(expected))
    np.testing.assert_allclose(ap, expected, atol=1e-9, rtol=0)

    summary = summarise(ap, labels)
    finite = ~np.isnan(expected)
    if finite.any():
        assert summary["AP"] == pytest.approx(expected[finite].mean(), abs=1e-9)
        means = [expected[(labels == c) & finite].mean() for c in np.unique(labels[finite])]
        assert summary["mAP"] == pytest.approx(np.mean(means), abs=1e-9)
    else:
        assert math.isnan(summary["AP"]) and math.isnan(summary["mAP"])


# --------------------------------------------------------------------------- crop geometry
def protocol_boxes(points: list[tuple]) -> dict[int, tuple[int, int, int, int]]:
    """PROTOCOL.md section 2, step by step, for one image's selected keypoints.

    1. d = distance to the nearest OTHER keypoint (a coincident one is not another keypoint;
       COCO points carry the annotation id as a third coordinate), as the released numpy
       expression computes it: sqrt of the sum of squared differences;
    2. keep only 20 < d/2 < 1000;
    3. r = round(d / 4), Python's round; box (x - r, y - r, x + r, y + r), which PIL's crop
       rounds coordinate by coordinate.
    """
    out = {}
    for i, p in enumerate(points):
        dists = [math.sqrt(sum((a - b) ** 2 for a, b in zip(p, q))) for j, q in enumerate(points) if j != i]
        dists = [v for v in dists if v != 0]
        if not dists:
            continue
        d = min(dists)
        if not 20 < d / 2 < 1000:
            continue
        r = round(d / 4)
        out[i] = tuple(round(v) for v in (p[0] - r, p[1] - r, p[0] + r, p[1] + r))
    return out


def ours(points):
    d = nearest_other_distance(np.array(points, dtype=np.float64).reshape(len(points), -1))
    return {i: crop_box(p[0], p[1], d[i]) for i, p in enumerate(points) if keep(d[i])}


coordinate = st.floats(-200, 2600, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=7))
def test_crop_boxes_match_the_protocol_on_arbitrary_float_keypoints(points):
    assert ours(points) == protocol_boxes(points)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 700), st.integers(-50, 700), st.integers(0, 60)),
                min_size=1, max_size=7))
def test_crop_boxes_match_the_protocol_on_coco_triples(points):
    assert ours(points) == protocol_boxes(points)


# --------------------------------------------------------------------------- crop pixels
def zero_filled_crop(image: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros((y1 - y0, x1 - x0, image.shape[2]), image.dtype)
    h, w = image.shape[:2]
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ax0 < ax1 and ay0 < ay1:
        out[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = image[ay0:ay1, ax0:ax1]
    return out


@settings(max_examples=150, deadline=None)
@given(w=st.integers(1, 40), h=st.integers(1, 40), x0=st.integers(-60, 60), y0=st.integers(-60, 60),
       bw=st.integers(1, 50), bh=st.integers(1, 50), seed=st.integers(0, 2**16))
def test_crop_patch_is_a_zero_filled_crop(w, h, x0, y0, bw, bh, seed):
    image = np.random.default_rng(seed).integers(1, 256, (h, w, 3), dtype=np.uint8)  # no zero pixel
    box = (x0, y0, x0 + bw, y0 + bh)
    patch = crop_patch(Image.fromarray(image), box)
    assert patch.mode == "RGB" and patch.size == (bw, bh)
    np.testing.assert_array_equal(np.asarray(patch), zero_filled_crop(image, box))


@settings(max_examples=100, deadline=None)
@given(x=coordinate, y=coordinate, d=st.floats(40.001, 1999.999))
def test_crop_box_is_square_and_centred(x, y, d):
    r = round(d / 4)
    x0, y0, x1, y1 = crop_box(x, y, d)  # fractional keypoint: PIL's rounding may move an edge by 1
    assert x1 - x0 in (2 * r - 1, 2 * r, 2 * r + 1) and y1 - y0 in (2 * r - 1, 2 * r, 2 * r + 1)
    xi, yi = round(x), round(y)  # integral keypoint (CUB, COCO): exactly 2r, centred on it
    x0, y0, x1, y1 = crop_box(xi, yi, d)
    assert (x1 - x0, y1 - y0) == (2 * r, 2 * r) and (x0 + x1, y0 + y1) == (2 * xi, 2 * yi)
