"""k-NN search, precision@k, mAP@R and IVF recall against brute-force numpy."""
import numpy as np
import pytest

from partaware.evals import neighbours
from partaware.evals.neighbours import approximate_recall, map_at_r, precision_at_k, topk_neighbours


def brute_scores(feats):
    x = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    return x @ x.T


def brute_map_at_r(feats, labels):
    s = brute_scores(feats.astype(np.float64))
    out = []
    for i in range(len(feats)):
        order = [j for j in np.argsort(-s[i], kind="stable") if j != i]
        r = int((labels == labels[i]).sum()) - 1
        if r == 0:
            continue
        rel = labels[order[:r]] == labels[i]
        prec = np.cumsum(rel) / np.arange(1, r + 1)
        out.append((prec * rel).sum() / r)
    return np.mean(out)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((300, 16)).astype(np.float32)
    labels = rng.integers(0, 4, 300)
    feats += 0.8 * np.eye(16, dtype=np.float32)[labels]  # some class structure
    return feats, labels


@pytest.mark.parametrize("use_faiss", [True, False])
def test_topk_matches_brute_force(data, monkeypatch, use_faiss):
    if not use_faiss:
        monkeypatch.setattr(neighbours, "faiss", None)
    feats, _ = data
    s = brute_scores(feats.astype(np.float64))
    scores, idx = topk_neighbours(feats, 7)
    np.fill_diagonal(s, -np.inf)
    ref = np.argsort(-s, axis=1)[:, :7]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(s, ref, 1), atol=1e-5)
    scores, idx = topk_neighbours(feats, 3, exclude_self=False)
    np.testing.assert_array_equal(idx[:, 0], np.arange(len(feats)))


def test_duplicates_drop_only_the_query():
    feats = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # 4 groups of 3 identical rows
    _, idx = topk_neighbours(feats, 2)
    for i, row in enumerate(idx):
        assert i not in row
        assert set(row) == set(range(3 * (i // 3), 3 * (i // 3) + 3)) - {i}


def test_precision_at_k_hand_example():
    labels = np.array([0, 0, 1, 1])
    idx = np.array([[1, 2], [2, 3], [3, 0], [0, 1]])
    # row hits at k=2: [1, 0], [0, 0], [1, 0], [0, 0]
    assert precision_at_k(idx, labels, 2) == pytest.approx(2 / 8)
    assert precision_at_k(idx, labels, 1) == pytest.approx(2 / 4)


@pytest.mark.parametrize("use_faiss", [True, False])
def test_map_at_r_matches_brute_force(data, monkeypatch, use_faiss):
    if not use_faiss:
        monkeypatch.setattr(neighbours, "faiss", None)
    feats, labels = data
    ref = brute_map_at_r(feats, labels)
    assert map_at_r(feats, labels) == pytest.approx(ref, abs=1e-9)
    assert map_at_r(feats, labels, memory_mb=0.01) == pytest.approx(ref, abs=1e-9)  # blocks


def test_map_at_r_perfect_clusters():
    feats = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)
    feats += 1e-3 * np.random.default_rng(1).standard_normal(feats.shape).astype(np.float32)
    assert map_at_r(feats, np.repeat(np.arange(3), 4)) == pytest.approx(1.0)


@pytest.mark.skipif(neighbours.faiss is None, reason="IVF needs faiss")
def test_approximate_recall(data):
    feats, _ = data
    assert approximate_recall(feats, k=5, nlist=4, nprobe=4) == pytest.approx(1.0)  # exhaustive
    partial = approximate_recall(feats, k=5, nlist=16, nprobe=1)
    assert 0.0 < partial < 1.0
