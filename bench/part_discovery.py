#!/usr/bin/env python
"""Part-discovery task cost on a CUB-sized set of random tokens; prints ONE JSON line.

Two box-crop stores (`train_crop`, `test_crop` layout: `dense_final` (N, D, h, w) fp16,
`keypoints` (N, 15, 3), `valid`) are written by a child process (so the peak RSS below is the
task's own), then the task's steps run from them as `partaware evaluate --task part_discovery`
runs them: a seeded token sample streamed from the train store, faiss k-means per K (GPU where
faiss has one), every train and test token assigned (streamed, a chunk of images at a time), NMI /
ARI and the keypoint regression. Reported: tokens sampled, seconds per phase (`kmeans_s` per K),
`task_s` (all K, store reads included), and the peak host RSS.

    python bench/part_discovery.py                             # CUB size: 5,994 + 5,794 images, 196 x 768
    python bench/part_discovery.py --train 600 --test 600      # a quick look
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=5994)
    p.add_argument("--test", type=int, default=5794)
    p.add_argument("--grid", type=int, default=14, help="tokens per side (196 = 14 x 14)")
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--max-tokens", type=int, default=200000)
    p.add_argument("--niter", type=int, default=20)
    p.add_argument("--nredo", type=int, default=3)
    p.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--write-store", nargs=3, metavar=("PATH", "N", "SEED"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def write_store(path: Path, n: int, grid: int, dim: int, seed: int, chunk: int = 64) -> None:
    from partaware.store import StoreWriter

    rng = np.random.default_rng(seed)
    layout = {"dense_final": ((dim, grid, grid), "float16", 1), "keypoints": ((15, 3), "float32", 1024),
              "valid": ((), "uint8", 1024)}
    attrs = {"image_keys": [str(i) for i in range(n)], "part_names": [f"part {j}" for j in range(15)]}
    with StoreWriter(path, n, layout, attrs, "bench") as w:
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            kp = np.concatenate([rng.uniform(0, 1, (m, 15, 2)), rng.random((m, 15, 1)) < 0.8], 2)
            w.write({"dense_final": rng.standard_normal((m, dim, grid, grid), dtype=np.float32).astype(np.float16),
                     "keypoints": (kp * (kp[:, :, 2:] > 0)).astype(np.float32), "valid": np.ones(m, np.uint8)})
        w.publish()


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.write_store:
        path, n, seed = args.write_store
        write_store(Path(path), int(n), args.grid, args.dim, int(seed))
        return {}
    from partaware.evals import part_discovery as D
    from partaware.store import open_store
    from partaware.tasks.discovery_stream import Split, assign_split

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        paths = [Path(tmp) / "train_crop.zarr", Path(tmp) / "test_crop.zarr"]
        for i, (path, n) in enumerate(zip(paths, (args.train, args.test))):
            child = subprocess.run([sys.executable, __file__, "--grid", str(args.grid), "--dim", str(args.dim),
                                    "--write-store", str(path), str(n), str(args.seed + i)])
            if child.returncode:
                raise SystemExit(f"writing {path} failed")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        gpu = D.faiss_gpus() > 0
        t0 = time.perf_counter()
        train, test = (Split.of(open_store(p), "dense_final") for p in paths)
        sample = train.sample(args.max_tokens, args.seed)
        t_sample = time.perf_counter() - t0
        centroids, kmeans_s = {}, {}
        for k in args.k:
            t = time.perf_counter()
            centroids[k] = D.kmeans(sample, k, niter=args.niter, nredo=args.nredo, seed=args.seed, gpu=gpu)
            kmeans_s[str(k)] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        tr, te = assign_split(train, centroids), assign_split(test, centroids)
        t_assign = time.perf_counter() - t
        t = time.perf_counter()
        for k in args.k:
            _, mark, cluster = te.keypoints[k]
            D.nmi_ari(mark, cluster)
            D.keypoint_error(tr.inputs[k], train.keypoints, te.inputs[k], test.keypoints)
        t_score = time.perf_counter() - t
        total = time.perf_counter() - t0
    out = {"bench": "part_discovery", "train_images": args.train, "test_images": args.test,
           "tokens_per_image": args.grid ** 2, "dim": args.dim, "k": args.k, "niter": args.niter,
           "nredo": args.nredo, "tokens_sampled": int(len(sample)), "faiss_gpu": gpu, "cpus": len(os.sched_getaffinity(0)),
           "sample_s": round(t_sample, 2), "kmeans_s": kmeans_s, "assign_s": round(t_assign, 2),
           "score_s": round(t_score, 2), "task_s": round(total, 2),
           "task_s_per_k": round(total / len(args.k), 2), "peak_rss_mb": round(
               resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "rss_before_mb": round(rss_before)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
