"""The neighbour search and the k-NN metrics against independent references: a brute-force torch
search, DINO's `knn_classifier` formula and pytorch-metric-learning's AccuracyCalculator."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("faiss")

from partaware.evals import bootstrap as BS  # noqa: E402
from partaware.evals.knn import evaluate_knn, top1_metric  # noqa: E402
from partaware.evals.neighbours import Chunks, SearchSpec, search  # noqa: E402


def clustered(n=400, dim=16, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    feats = rng.standard_normal((n, dim)).astype(np.float32) + 1.5 * np.eye(dim, dtype=np.float32)[labels]
    return feats, labels


def brute(db, q, k, exclude=None):
    """(scores, ids) of a plain torch search in float64."""
    a = F.normalize(torch.from_numpy(q).double(), dim=1)
    b = F.normalize(torch.from_numpy(db).double(), dim=1)
    s = a @ b.T
    if exclude is not None:
        s[torch.arange(len(q)), torch.from_numpy(np.asarray(exclude))] = -torch.inf
    top = s.topk(k, dim=1)
    return top.values.numpy(), top.indices.numpy()


def same_up_to_ties(ids, ref_ids, scores, ref_scores, atol=1e-5):
    """Equal scores, and equal ids wherever the score is not tied with another returned one."""
    np.testing.assert_allclose(scores, ref_scores, atol=atol)
    for row, ref, s in zip(ids, ref_ids, scores):
        tied = np.isclose(s[:, None], s[None, :], atol=atol).sum(axis=1) > 1
        np.testing.assert_array_equal(row[~tied], ref[~tied])


# ----------------------------------------------------------------------------------- search
@pytest.mark.parametrize("chunk_rows, memory_mb", [(65536, 1024), (37, 0.01)])
def test_faiss_topk_equals_torch(chunk_rows, memory_mb):
    db, _ = clustered(500)
    q, _ = clustered(120, seed=1)
    chunks = Chunks(len(db), db.shape[1], lambda lo, hi: db[lo:hi], rows_per_chunk=chunk_rows)
    got = search(chunks, q, 9, spec=SearchSpec(memory_mb=memory_mb))
    assert got.protocol == "exact" and "faiss" in got.backend and "IndexFlatIP" in got.backend
    ref_s, ref_i = brute(db, q, 9)
    same_up_to_ties(got.ids, ref_i, got.scores, ref_s)


def test_leave_one_out_and_ties():
    db, _ = clustered(300)
    got = search(db, db, 7, exclude=np.arange(300))
    ref_s, ref_i = brute(db, db, 7, exclude=np.arange(300))
    same_up_to_ties(got.ids, ref_i, got.scores, ref_s)
    dup = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)  # 4 groups of 3 identical rows
    got = search(dup, dup, 2, exclude=np.arange(12))
    for i, row in enumerate(got.ids):
        assert i not in row and set(row) <= set(range(3 * (i // 3), 3 * (i // 3) + 3))
        assert list(row) == sorted(row)  # tied rows listed by row (CPU)


def test_fewer_rows_than_k_pad():
    db = np.eye(3, dtype=np.float32)
    got = search(db, db[:1], 5)
    assert list(got.ids[0, 3:]) == [-1, -1] and np.isneginf(got.scores[0, 3:]).all()


def test_float16_storage_is_close():
    db, _ = clustered(300)
    got = search(db, db[:50], 5, spec=SearchSpec(float16=True))
    assert got.protocol == "exact, float16 storage"
    ref_s, _ = brute(db, db[:50], 5)
    np.testing.assert_allclose(got.scores, ref_s, atol=2e-3)


def test_ivf_recall():
    db, _ = clustered(1000)
    full = search(db, db, 5, exclude=np.arange(1000), spec=SearchSpec(index="ivf", nlist=8, nprobe=8))
    assert full.recall == pytest.approx(1.0) and "recall@5 1.000" in full.protocol  # every list probed
    part = search(db, db, 5, exclude=np.arange(1000),
                  spec=SearchSpec(index="ivf", nlist=32, nprobe=1, recall_sample=200))
    assert 0.0 < part.recall < 1.0 and "on 200 queries" in part.protocol and "nlist 32, nprobe 1" in part.protocol


def test_nan_rows_refused():
    db, _ = clustered(50)
    db[7, 3] = np.nan
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 row\(s\) \(first: 7\)"):
        search(db, db[:2], 3)


# ----------------------------------------------------------------------------------- k-NN vote
def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes):
    """DINO's eval_knn.knn_classifier (features L2-normalised first, as DINO does), top-1 per sample."""
    train_features = F.normalize(train_features, dim=1)
    test_features = F.normalize(test_features, dim=1)
    similarity = torch.mm(test_features, train_features.T)
    distances, indices = similarity.topk(k, largest=True, sorted=True)
    candidates = train_labels.view(1, -1).expand(len(test_labels), -1)
    retrieved_neighbors = torch.gather(candidates, 1, indices)
    retrieval_one_hot = torch.zeros(len(test_labels) * k, num_classes)
    retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
    distances_transform = distances.clone().div_(T).exp_()
    probs = torch.sum(torch.mul(retrieval_one_hot.view(len(test_labels), -1, num_classes),
                                distances_transform.view(len(test_labels), -1, 1)), 1)
    _, predictions = probs.sort(1, True)
    return predictions[:, 0].eq(test_labels).numpy()


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_top1_equals_dino(k):
    db, ydb = clustered(400, classes=6)
    q, yq = clustered(150, classes=6, seed=3)
    res = evaluate_knn(db, ydb, q, yq, ks=[k, 10], temperature=0.07)
    ref = dino_knn_classifier(torch.from_numpy(db), torch.from_numpy(ydb), torch.from_numpy(q),
                              torch.from_numpy(yq), k, 0.07, 6)
    np.testing.assert_array_equal(res.correct[k], ref)
    assert res.summary()[top1_metric(k)] == pytest.approx(ref.mean())
    assert 0.3 < ref.mean() < 1.0  # the fixture is neither trivial nor hopeless


# ----------------------------------------------------------------------------------- metric learning
def pml(query, query_labels, reference=None, reference_labels=None):
    calc_mod = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    calc = calc_mod.AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                                       k="max_bin_count", device=torch.device("cpu"))
    norm = lambda x: F.normalize(torch.from_numpy(x).float(), dim=1)  # noqa: E731 - L2 on unit rows ranks as cosine
    ref = None if reference is None else norm(reference)
    got = calc.get_accuracy(norm(query), torch.from_numpy(query_labels), ref,
                            None if reference_labels is None else torch.from_numpy(reference_labels))
    return {"precision@1": got["precision_at_1"], "R-precision": got["r_precision"],
            "MAP@R": got["mean_average_precision_at_r"]}


def with_singletons(feats, labels):
    """Two extra classes of one sample each (R = 0 in leave-one-out)."""
    rng = np.random.default_rng(9)
    extra = rng.standard_normal((2, feats.shape[1])).astype(np.float32)
    return np.concatenate([feats, extra]), np.concatenate([labels, [100, 101]])


def test_metrics_equal_pml_leave_one_out():
    feats, labels = with_singletons(*clustered(300, classes=5))
    res = evaluate_knn(feats, labels, feats, labels, ks=[5], leave_one_out=True)
    ours, ref = res.summary(), pml(feats, labels)
    for m in ref:
        assert ours[m] == pytest.approx(ref[m], abs=1e-9), m
    assert np.isnan(res.values["MAP@R"][-2:]).all() and res.missing_queries == 0


def test_metrics_equal_pml_separate_reference():
    db, ydb = clustered(300, classes=5)
    q, yq = clustered(100, classes=5, seed=4)
    res = evaluate_knn(db, ydb, q, yq, ks=[5])
    ours, ref = res.summary(), pml(q, yq, db, ydb)
    for m in ref:
        assert ours[m] == pytest.approx(ref[m], abs=1e-9), m


def test_metrics_equal_pml_with_ties():
    """Exact duplicates (ties within a class, a duplicate may outrank the query itself), classes
    at zero similarity to each other (ties beyond R), a single-sample class. (Rows of different
    classes tied at the R-th place are not compared: which one FAISS keeps there is its choice,
    in pytorch-metric-learning as here.)"""
    base = np.eye(6, dtype=np.float32)
    sizes = [4, 3, 5, 1, 2, 6]
    feats = np.concatenate([np.repeat(base[[c]], s, axis=0) for c, s in enumerate(sizes)])
    labels = np.repeat(np.arange(6), sizes)
    res = evaluate_knn(feats, labels, feats, labels, ks=[3], leave_one_out=True)
    ours, ref = res.summary(), pml(feats, labels)
    for m in ref:
        assert ours[m] == pytest.approx(ref[m], abs=1e-9), m


def test_max_r_caps_r():
    feats, labels = clustered(200, classes=3)
    res = evaluate_knn(feats, labels, feats, labels, ks=[5], leave_one_out=True, max_r=10)
    assert res.r.max() == 10
    full = evaluate_knn(feats, labels, feats, labels, ks=[5], leave_one_out=True)
    np.testing.assert_array_equal(res.values["precision@1"], full.values["precision@1"])


# ----------------------------------------------------------------------------------- bad input
def test_missing_classes_are_counted_and_wrong():
    db, ydb = clustered(200, classes=4)
    q, yq = clustered(60, classes=4, seed=5)
    yq[:7] = 9  # a class the database lacks
    res = evaluate_knn(db, ydb, q, yq, ks=[5])
    assert res.missing_classes == [9] and res.missing_queries == 7
    assert not res.correct[5][:7].any()
    assert np.isnan(res.values["R-precision"][:7]).all() and np.isfinite(res.values["R-precision"][7:]).all()
    assert res.summary()[top1_metric(5)] == pytest.approx(res.correct[5].sum() / 60)  # counted in the mean


def test_k_larger_than_database_is_an_error():
    db, ydb = clustered(30)
    with pytest.raises(ValueError, match="knn.k: 30 neighbours, but the database holds 29 rows besides the query"):
        evaluate_knn(db, ydb, db, ydb, ks=[30], leave_one_out=True)
    with pytest.raises(ValueError, match="knn.k: 31 .* holds 30 rows; use k <= 30"):
        evaluate_knn(db, ydb, db[:5], ydb[:5], ks=[31])


def test_bootstrap_statistics_of_the_metrics():
    feats, labels = clustered(120, classes=3)
    res = evaluate_knn(feats, labels, feats, labels, ks=[5], leave_one_out=True)
    images = np.arange(120) // 3
    for metric, per_query in [(top1_metric(5), res.correct[5]), ("MAP@R", res.values["MAP@R"])]:
        sums = BS.accuracy_sums(per_query, images)
        assert BS.value(sums, metric) == pytest.approx(res.summary()[metric])
        lo, hi = BS.intervals(sums, [metric], 200)[metric]
        assert lo <= res.summary()[metric] <= hi


def test_faiss_loader_info_stays_out_of_job_logs():
    """The loader's "Could not load library with AVX2 support" INFO line is a probe, not an error:
    load_faiss keeps it (and the loader's other INFO lines) out of a job log at INFO."""
    import logging

    from partaware.evals.neighbours import load_faiss

    load_faiss()
    assert logging.getLogger("faiss.loader").getEffectiveLevel() == logging.WARNING
