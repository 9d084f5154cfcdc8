#!/usr/bin/env python
"""Exact all-pairs retrieval AP at scale against sklearn; prints ONE JSON line.

Times `partaware.evals.retrieval.average_precision_per_query` on N random clustered features
(`--classes` classes, every sample a query against all N), then sklearn's
`average_precision_score` one query at a time (its cosine row computed in float64, as the
tests do) on `--sample` queries, extrapolated to N. The sampled queries must agree to 1e-6;
the features are built so that float32 computes every cosine exactly (`exact_unit_rows`), so
the check does not depend on the order a BLAS or GPU sums in.
`--faiss-recall` adds the recall@k of a faiss IVF-Flat index against exact search
(`partaware.evals.neighbours.search`, every query's exact neighbours the reference); only that
option needs faiss.

    python bench/retrieval.py                   # GPU: N=50,000 D=768; CPU: N=20,000 D=768
    python bench/retrieval.py --n 5000          # CPU smoke test
    python bench/retrieval.py --faiss-recall --k 10 --nprobe 16
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch

from partaware.evals.retrieval import average_precision_per_query, summarise

TOLERANCE = 1e-6


def parse_args(argv=None):
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000 if gpu else 20_000, help="samples (= queries)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--spread", type=float, default=0.25, help="class-centre scale against unit noise")
    p.add_argument("--memory-mb", type=float, default=2048, help="block budget (the workflow's default)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--exclude-self", action="store_true")
    p.add_argument("--sample", type=int, default=100, help="queries timed and checked with sklearn")
    p.add_argument("--faiss-recall", action="store_true", help="also report IVF-Flat recall@k (needs faiss)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nlist", type=int, help="IVF lists (default: sqrt(N))")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def clustered(n: int, dim: int, classes: int, spread: float, seed: int):
    """(features (n, dim) float32, labels (n,) int64): unit noise around scaled class centres,
    made `exact_unit_rows`."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim), dtype=np.float32) * spread
    feats = rng.standard_normal((n, dim), dtype=np.float32)
    feats += centres[labels]
    return exact_unit_rows(feats, rng), labels


def exact_unit_rows(x: np.ndarray, rng, scale: int = 2048, slack: int = 10) -> np.ndarray:
    """Unit rows whose cosines float32 computes exactly, in any order, on any device.

    Each row becomes integers / `scale` whose squares sum to exactly scale**2: the first
    dim - `slack` entries are the row scaled down a little and truncated, the last `slack` make
    up the rest (four greedy squares, then at most 6 ones). Norms are then exactly 1 and every
    partial sum of a dot product is a multiple of scale**-2 no larger than 1, which float32
    holds exactly (scale**2 <= 2**24). So the run and sklearn's float64 rank the same numbers,
    and the check can demand 1e-6. With scale 2048 the cosines take millions of values: ties
    stay as rare as in real features.
    """
    n, dim = x.shape
    head = x[:, : dim - slack].astype(np.float64)
    head *= 0.999 * scale / np.linalg.norm(head, axis=1, keepdims=True)
    v = np.zeros((n, dim), np.int64)
    v[:, : dim - slack] = np.trunc(head)
    rest = scale * scale - (v * v).sum(axis=1)
    for k in range(dim - slack, dim - slack + 4):
        root = np.floor(np.sqrt(rest)).astype(np.int64)
        root -= root * root > rest
        root += (root + 1) ** 2 <= rest
        v[:, k], rest = root, rest - root * root
    assert rest.max() <= slack - 4
    v[:, dim - slack + 4:] = np.arange(slack - 4) < rest[:, None]
    v[:, dim - slack:] *= rng.choice([-1, 1], size=(n, slack))
    assert ((v * v).sum(axis=1) == scale * scale).all()
    return (v / scale).astype(np.float32)


def sklearn_sample(feats, labels, queries, exclude_self: bool):
    """(AP per sampled query, seconds per query): one sklearn call per query on its float64
    cosine row (rows computed 64 queries at a time, as generously as a loop allows)."""
    from sklearn.metrics import average_precision_score

    x = feats.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = np.full(len(queries), np.nan)
    t0 = time.perf_counter()
    j = 0
    for block in np.array_split(queries, max(1, len(queries) // 64)):
        for i, scores in zip(block, x[block] @ x.T):
            y = labels == labels[i]
            if exclude_self:
                keep = np.arange(len(y)) != i
                scores, y = scores[keep], y[keep]
            if y.any():
                out[j] = average_precision_score(y, scores)
            j += 1
    return out, (time.perf_counter() - t0) / len(queries)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    feats, labels = clustered(args.n, args.dim, args.classes, args.spread, args.seed)

    # warm-up on a slice (CUDA context, kernels, allocator), then the timed full run
    average_precision_per_query(feats[:2000], labels[:2000], args.exclude_self, args.memory_mb, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    ap = average_precision_per_query(feats, labels, args.exclude_self, args.memory_mb, device)
    seconds = time.perf_counter() - t0
    peak_device = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None

    queries = np.sort(np.random.default_rng(args.seed + 1).choice(args.n, min(args.sample, args.n), replace=False))
    ref, per_query = sklearn_sample(feats, labels, queries, args.exclude_self)
    diff = float(np.nanmax(np.abs(ap[queries] - ref))) if np.isfinite(ref).any() else 0.0
    sklearn_s = per_query * args.n

    result = {
        "bench": "retrieval",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads)",
        "n": args.n, "dim": args.dim, "classes": args.classes, "exclude_self": args.exclude_self,
        "memory_mb": args.memory_mb, "seconds": round(seconds, 3),
        "sklearn_s_per_query": round(per_query, 6), "sklearn_extrapolated_s": round(sklearn_s, 2),
        "ratio_sklearn_over_ours": round(sklearn_s / seconds, 2),
        "sample": len(queries), "max_abs_diff": diff, "agree": bool(diff <= TOLERANCE),
        **{k: round(v, 4) for k, v in summarise(ap, labels).items()},
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_device_mb": round(peak_device, 1) if peak_device is not None else None,
        "torch": torch.__version__,
    }
    if args.faiss_recall:
        from partaware.evals.neighbours import SearchSpec, search

        nlist = args.nlist or int(np.sqrt(args.n))
        t0 = time.perf_counter()
        spec = SearchSpec(index="ivf", nlist=nlist, nprobe=args.nprobe, seed=args.seed, recall_sample=args.n)
        recall = search(feats, feats, args.k, exclude=np.arange(args.n), spec=spec).recall
        result.update({"faiss_recall_at_k": round(recall, 4), "faiss_k": args.k, "faiss_nlist": nlist,
                       "faiss_nprobe": args.nprobe, "faiss_seconds": round(time.perf_counter() - t0, 2)})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
