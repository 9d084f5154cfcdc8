#!/usr/bin/env python
"""The k-NN task's cost at ImageNet size: FAISS search + k-NN metrics from a feature store;
prints ONE JSON line.

Writes a database (`--n` rows, `--classes` classes) and `--queries` query rows of `--dim`
clustered fp16 features to two stores (the project's `StoreWriter`, HDF5 by default), then times
(ours) reading them back in chunks + `evals.knn.evaluate_knn` (exact IndexFlatIP, on the GPU when
faiss has one; k = 20 vote and precision@1 / R-precision / MAP@R, R = the class size), and
(baseline, same run) a plain torch brute-force search of the same neighbours (the database read
whole, normalised, blocked matmul + topk on the device) whose k-NN top-1 must agree.
Peak host RSS is measured after ours and again after the baseline; peak device memory for ours
is the device's used memory sampled while it runs.

    python bench/knn.py                                   # CPU: 100,000 x 768, 10,000 queries
    python bench/knn.py --n 1281167 --queries 50000       # ImageNet size (the H200 target: <= 60 s)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="database rows")
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--k", type=int, nargs="+", default=[20])
    p.add_argument("--max-r", type=int, default=None, help="cap on R (default: the class size)")
    p.add_argument("--float16", action="store_true", help="half-precision database in the index")
    p.add_argument("--memory-mb", type=float, default=1024)
    p.add_argument("--chunk-rows", type=int, default=65536, help="store rows read at a time")
    p.add_argument("--format", choices=["hdf5", "zarr"], default="hdf5")
    p.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_store(path: Path, n: int, dim: int, classes: int, centres: np.ndarray, seed: int, chunk: int = 16384):
    """A published store of `n` clustered fp16 rows (`mean`, `label`, `valid`), written chunk by chunk."""
    from partaware.store import StoreWriter

    rng = np.random.default_rng(seed)
    layout = {"mean": ((dim,), "float16", 4096), "label": ((), "int64", 65536), "valid": ((), "uint8", 65536)}
    with StoreWriter(path, n, layout, {"model": "bench"}, "bench") as w:
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            labels = rng.integers(0, classes, m)
            feats = rng.standard_normal((m, dim), dtype=np.float32) + centres[labels]
            w.write({"mean": feats.astype(np.float16), "label": labels, "valid": np.ones(m, np.uint8)})
        w.publish()


class DevicePeak:
    """Used device memory (all allocators, faiss's too), sampled every 50 ms."""

    def __init__(self):
        self.peak = None
        self._stop = threading.Event()
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            self.base = total - free
            self.peak = 0.0
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, (total - free - self.base) / 2**20)
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        return None if self.peak is None else round(self.peak, 1)


def ours(db_store, q_store, args):
    from partaware.evals.knn import evaluate_knn
    from partaware.evals.neighbours import Chunks, SearchSpec

    def chunks(store):
        return Chunks(store.n_rows, store.info("mean")["shape"][-1],
                      lambda lo, hi: store.read_checked("mean", lo, hi), rows_per_chunk=args.chunk_rows)

    spec = SearchSpec(float16=args.float16, memory_mb=args.memory_mb)
    return evaluate_knn(chunks(db_store), db_store.read("label"), chunks(q_store), q_store.read("label"),
                        ks=args.k, max_r=args.max_r, spec=spec)


def baseline(db_store, q_store, k_search: int, k: int, memory_mb: float):
    """Plain torch: the whole database on the device, blocked matmul + topk; k-NN top-1 correct."""
    from partaware.evals.knn import weighted_vote

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    db = torch.nn.functional.normalize(torch.from_numpy(db_store.read("mean")).to(dev).float(), dim=1)
    q = torch.nn.functional.normalize(torch.from_numpy(q_store.read("mean")).to(dev).float(), dim=1)
    ydb, yq = db_store.read("label"), q_store.read("label")
    classes, codes = np.unique(ydb, return_inverse=True)
    block = int(max(1, memory_mb * 2**20 // (4 * len(db))))
    correct = []
    for lo in range(0, len(q), block):
        top = (q[lo:lo + block] @ db.T).topk(k_search, dim=1)
        ids, scores = top.indices.cpu().numpy(), top.values.cpu().numpy()
        pred = weighted_vote(codes.reshape(-1)[ids], scores, k, 0.07, len(classes))
        correct.append(classes[pred] == yq[lo:lo + block])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return np.concatenate(correct)


def main(argv=None):
    args = parse_args(argv)
    from partaware.evals.neighbours import faiss_build
    from partaware.store import open_store

    work = Path(args.workdir or tempfile.mkdtemp(prefix="partaware-bench-knn-"))
    work.mkdir(parents=True, exist_ok=True)
    ext = ".h5" if args.format == "hdf5" else ".zarr"
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.classes, args.dim), dtype=np.float32) * 0.25
    t0 = time.perf_counter()
    write_store(work / f"db{ext}", args.n, args.dim, args.classes, centres, args.seed + 1)
    write_store(work / f"q{ext}", args.queries, args.dim, args.classes, centres, args.seed + 2)
    write_s = time.perf_counter() - t0
    rss_before = rss_mb()

    device_peak = DevicePeak()
    t0 = time.perf_counter()
    with open_store(work / f"db{ext}") as db_store, open_store(work / f"q{ext}") as q_store:
        res = ours(db_store, q_store, args)
        seconds = time.perf_counter() - t0
        peak_device = device_peak.stop()
        rss_ours = rss_mb()
        summary = res.summary()
        k_search = max(max(args.k), int(res.r.max()))
        result = {
            "bench": "knn", "faiss": faiss_build(), "backend": res.backend, "protocol": res.protocol,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available()
            else f"cpu ({len(os.sched_getaffinity(0))} cores)",
            "n": args.n, "queries": args.queries, "dim": args.dim, "classes": args.classes, "k": args.k,
            "k_searched": k_search, "store": args.format, "store_write_s": round(write_s, 2),
            "seconds": round(seconds, 2), "queries_per_s": round(args.queries / seconds, 1),
            **{m: round(v, 4) for m, v in summary.items()},
            "peak_host_rss_mb_before": round(rss_before, 1), "peak_host_rss_mb": round(rss_ours, 1),
            "database_mb_fp32": round(args.n * args.dim * 4 / 2**20, 1), "peak_device_mb": peak_device,
            "target_s": 60, "meets_target": bool(seconds <= 60) if torch.cuda.is_available() else None,
        }
        if not args.no_baseline:
            t0 = time.perf_counter()
            ref = baseline(db_store, q_store, k_search, max(args.k), args.memory_mb)
            base_s = time.perf_counter() - t0
            result.update({"baseline": "torch brute force (database whole on the device, matmul + topk)",
                           "baseline_s": round(base_s, 2), "ratio_baseline_over_ours": round(base_s / seconds, 2),
                           "baseline_peak_host_rss_mb": round(rss_mb(), 1),
                           "top1_agree": float((ref == res.correct[max(args.k)].astype(bool)).mean())})
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
