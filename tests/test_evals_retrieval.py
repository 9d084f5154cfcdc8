"""Part retrieval AP equals sklearn's average_precision_score query by query."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.metrics import average_precision_score

from partaware.evals import retrieval
from partaware.evals.retrieval import average_precision_per_query, summarise


def sklearn_ap(feats, labels, exclude_self=False):
    x = np.asarray(feats, np.float64)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norm > 0, norm, 1)
    scores = x @ x.T
    labels = np.asarray(labels)
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i if exclude_self else slice(None)
        y = (labels == labels[i])[keep]
        if y.any():
            out[i] = average_precision_score(y, scores[i][keep])
    return out


def tied_features(rng, n, dim=8, nonzero=4):
    """Rows with `nonzero` entries of +-1 (norm 2): normalised entries are +-0.5, so every
    cosine is an exact multiple of 0.25 in any arithmetic -> many exact ties."""
    x = np.zeros((n, dim), np.float32)
    for i in range(n):
        x[i, rng.choice(dim, nonzero, replace=False)] = rng.choice([-1.0, 1.0], nonzero)
    return x


def test_random_features_match_sklearn():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((240, 24)).astype(np.float32)
    labels = rng.integers(0, 5, 240)
    np.testing.assert_allclose(average_precision_per_query(feats, labels),
                               sklearn_ap(feats, labels), atol=1e-6, rtol=0)


def test_heavy_ties_and_duplicates_match_sklearn():
    rng = np.random.default_rng(1)
    feats = tied_features(rng, 150)
    feats = np.concatenate([feats, feats[:40], feats[:10]])  # exact duplicates
    labels = rng.integers(0, 3, len(feats))
    ap = average_precision_per_query(feats, labels)
    np.testing.assert_allclose(ap, sklearn_ap(feats, labels), atol=1e-6, rtol=0)


def test_exclude_self_matches_sklearn_on_reduced_set():
    rng = np.random.default_rng(2)
    feats = tied_features(rng, 120)
    labels = rng.integers(0, 4, 120)
    labels[7] = 9  # a class of one: no positive left -> NaN
    ap = average_precision_per_query(feats, labels, exclude_self=True)
    ref = sklearn_ap(feats, labels, exclude_self=True)
    assert np.isnan(ap[7]) and np.isnan(ref[7])
    np.testing.assert_allclose(ap, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_block_size_does_not_change_result(exclude_self):
    rng = np.random.default_rng(3)
    feats = np.concatenate([tied_features(rng, 100), rng.standard_normal((100, 8)).astype(np.float32)])
    labels = rng.integers(0, 3, 200)
    big = average_precision_per_query(feats, labels, exclude_self=exclude_self, memory_mb=1024)
    for mb in (1e-4, 0.05):  # one row per block, a few rows per block
        np.testing.assert_allclose(  # a GPU's reductions may differ in the last ulp
            average_precision_per_query(feats, labels, exclude_self=exclude_self, memory_mb=mb), big,
            rtol=0, atol=1e-12)


def test_torch_path_equals_numpy_path(monkeypatch):
    """The GPU code path (torch ops), run on the CPU, gives the numpy path's numbers."""
    rng = np.random.default_rng(5)
    feats = np.concatenate([tied_features(rng, 80), rng.standard_normal((40, 8)).astype(np.float32)])
    labels = rng.integers(0, 3, 120)
    expected = [average_precision_per_query(feats, labels, ex, device="cpu") for ex in (False, True)]
    monkeypatch.setattr(retrieval, "_CpuBlocks", lambda block, n: None)
    for ex, ref in zip((False, True), expected):
        np.testing.assert_allclose(  # same ranks; only the final mean's summation order differs
            average_precision_per_query(feats, labels, ex, memory_mb=0.01, device="cpu"), ref,
            rtol=0, atol=1e-12)


def test_accepts_torch_fp16_and_string_labels():
    rng = np.random.default_rng(4)
    feats = tied_features(rng, 60)
    labels = np.array(["eye", "leg", "tail"])[rng.integers(0, 3, 60)]
    ap = average_precision_per_query(torch.from_numpy(feats).half(), labels, device="cpu")
    np.testing.assert_allclose(ap, sklearn_ap(feats, labels), atol=1e-6, rtol=0)


def test_self_is_rank_one_positive():
    feats = np.eye(3, dtype=np.float32)  # orthogonal: all other scores tie at 0
    labels = np.array([0, 1, 1])
    # query 1: itself at 1.0, then {0, 2} tied at 0 -> precision 2/3 at the tie group's end
    expected = [1.0, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2]
    np.testing.assert_allclose(average_precision_per_query(feats, labels), expected)


def test_summarise_hand_example():
    ap = np.array([1.0, 0.5, np.nan, 0.25, 0.75])
    labels = np.array([0, 0, 1, 1, 2])
    out = summarise(ap, labels)
    assert out["AP"] == pytest.approx((1 + 0.5 + 0.25 + 0.75) / 4)
    assert out["mAP"] == pytest.approx((0.75 + 0.25 + 0.75) / 3)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), n=st.integers(1, 25), dim=st.integers(4, 6),
       n_classes=st.integers(1, 4), exclude_self=st.booleans())
def test_property_matches_sklearn(data, n, dim, n_classes, exclude_self):
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    feats = tied_features(rng, n, dim)
    if n > 2 and data.draw(st.booleans()):
        feats[: n // 2] = feats[n // 2: 2 * (n // 2)]  # duplicates
    labels = rng.integers(0, n_classes, n)
    ap = average_precision_per_query(feats, labels, exclude_self=exclude_self, memory_mb=1e-4)
    np.testing.assert_allclose(ap, sklearn_ap(feats, labels, exclude_self), atol=1e-6, rtol=0)
