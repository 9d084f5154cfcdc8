"""k-nearest-neighbour retrieval by cosine similarity: FAISS when importable (GPU index when
faiss has GPUs), else blocked torch. For sets where all-pairs AP is too costly: precision@k,
mAP@R (Musgrave et al. 2020) and the recall of an IVF-Flat index against exact search.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import pick_device

try:
    import faiss
except ImportError:  # the torch path covers everything
    faiss = None

_FAISS_GPU_MAX_K = 2048  # faiss GPU flat search limit


def _normalised(feats) -> np.ndarray:
    x = feats.detach().cpu() if isinstance(feats, torch.Tensor) else torch.from_numpy(np.asarray(feats))
    return np.ascontiguousarray(F.normalize(x.float(), dim=1).numpy())


def _faiss_gpus() -> int:
    return faiss.get_num_gpus() if faiss is not None and hasattr(faiss, "StandardGpuResources") else 0


def _searcher(xb: np.ndarray):
    """search(xq, k) -> exact inner-product top-k (scores, int64 ids) over database `xb`
    (normalised fp32), the index built once for many query blocks."""
    use_faiss = faiss is not None
    if use_faiss:
        index = faiss.IndexFlatIP(xb.shape[1])
        if _faiss_gpus():
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        index.add(xb)
    dev = pick_device()
    xb_t = None

    def search(xq: np.ndarray, k: int, memory_mb: float = 1024):
        nonlocal xb_t
        if use_faiss and not (_faiss_gpus() and k > _FAISS_GPU_MAX_K):
            scores, idx = index.search(xq, k)
            return scores, idx.astype(np.int64)
        if xb_t is None:  # blocked torch top-k (GPU when present)
            xb_t = torch.from_numpy(xb).to(dev)
        block = int(max(1, memory_mb * 2**20 // (8 * max(len(xb), 1))))
        tops = [(torch.from_numpy(xq[s:s + block]).to(dev) @ xb_t.T).topk(k, dim=1)
                for s in range(0, len(xq), block)]
        return (torch.cat([t.values.cpu() for t in tops]).numpy(),
                torch.cat([t.indices.cpu() for t in tops]).numpy().astype(np.int64))

    return search


def _drop_self(scores, idx, query_ids):
    """Drop one column per row: the query's own index where returned, else the last one
    (a duplicate of the query may outrank it)."""
    n, k = idx.shape
    drop = idx == np.asarray(query_ids)[:, None]
    drop[~drop.any(axis=1), -1] = True
    drop &= np.cumsum(drop, axis=1) == 1
    keep = ~drop
    return scores[keep].reshape(n, k - 1), idx[keep].reshape(n, k - 1)


def topk_neighbours(feats, k: int, exclude_self: bool = True):
    """(scores (N, k) float32, idx (N, k) int64): the k most cosine-similar samples of each."""
    x = _normalised(feats)
    k_eff = min(k + int(exclude_self), len(x))
    scores, idx = _searcher(x)(x, k_eff)
    if exclude_self:
        scores, idx = _drop_self(scores, idx, np.arange(len(x)))
    return scores, idx


def precision_at_k(idx, labels, k: int) -> float:
    """Mean over queries of the fraction of the first k neighbours with the query's label."""
    labels = np.asarray(labels)
    idx = np.asarray(idx)[:, :k]
    return float((labels[idx] == labels[:, None]).mean())


def map_at_r(feats, labels, memory_mb: float = 1024) -> float:
    """mAP@R: R = number of other samples of the query's class; for each query
    (1/R) * sum_{i<=R} P@i * [i-th neighbour relevant], averaged over queries with R > 0.
    Queries are searched in blocks so the (block, max R) result fits `memory_mb`."""
    x = _normalised(feats)
    labels = np.asarray(labels)
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r_all = counts[inv.reshape(-1)] - 1
    max_r = int(r_all.max()) if len(r_all) else 0
    if max_r == 0:
        return float("nan")
    block = int(max(1, memory_mb * 2**20 // (32 * (max_r + 1))))
    search = _searcher(x)
    out = []
    for s in range(0, len(x), block):
        q = np.arange(s, min(s + block, len(x)))
        scores, idx = search(x[q], max_r + 1)
        _, idx = _drop_self(scores, idx, q)
        rel = labels[idx] == labels[q][:, None]
        r = r_all[q]
        within = np.arange(1, max_r + 1)[None, :] <= r[:, None]
        rel &= within
        prec = np.cumsum(rel, axis=1) / np.arange(1, max_r + 1)
        ok = r > 0
        out.append((prec * rel).sum(axis=1)[ok] / r[ok])
    return float(np.concatenate(out).mean())


def approximate_recall(feats, k: int, nlist: int, nprobe: int, seed: int = 0) -> float:
    """Recall@k of an IVF-Flat (inner product) index against exact search, self excluded:
    the mean fraction of each query's exact k neighbours that the IVF search returns."""
    if faiss is None:
        raise RuntimeError("approximate_recall needs faiss")
    x = _normalised(feats)
    _, exact = topk_neighbours(x, k)
    quantizer = faiss.IndexFlatIP(x.shape[1])
    index = faiss.IndexIVFFlat(quantizer, x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    if _faiss_gpus():
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.train(x)
    index.add(x)
    index.nprobe = nprobe
    scores, approx = index.search(x, k + 1)
    _, approx = _drop_self(scores, approx.astype(np.int64), np.arange(len(x)))
    # rows hold distinct ids (missing ones are -1): a shared id appears twice after sorting
    both = np.sort(np.concatenate([exact, approx], axis=1), axis=1)
    hits = (both[:, 1:] == both[:, :-1]) & (both[:, 1:] >= 0)
    return float(hits.sum() / exact.size)
