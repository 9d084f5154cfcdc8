#!/usr/bin/env python
"""Extraction throughput, three ways on the same part patches; prints ONE JSON line.

(a) encoder: the encoder alone on a batch already on the device (same batch size and precision
    as (b)) - the ceiling;
(b) extract: `partaware.extract.extract()` end to end - read and decode the JPEGs, crop every
    part, resize, normalise, forward, write cls + mean to a store;
(c) released: what the released code did - fp32, the JPEG opened and decoded again for every
    part, torchvision transforms on float tensors, batch 128, each batch written before the next.

All rates are patches per second. (b) is reported two ways: `b_patches_per_s` over the time
spent in extract's loop (workers started, every batch read, run and written), and
`b_end_to_end_patches_per_s` over the whole call (also building the encoder and publishing);
`b_waited_s` splits the loop's time into waiting on the loader, the step (queueing device work),
the device and the store, so a low b/a says which one holds it back.
(a) and (c) exclude building their encoder. Ratios use `b_patches_per_s`.

Without --data it writes a CUB-layout JPEG dataset (partaware.data.demo.generate_demo_cub,
500 x 375 images, about 3.7 parts each): `--unique-images` distinct JPEGs, hard-linked under
more names up to `--images` (each name is decoded in full every time; the page cache holds them,
as it holds a real dataset after its first pass).

    python bench/extract.py                               # GPU: ViT-B/16 at 224, bf16
    python bench/extract.py --images 16 --size 64         # CPU smoke test (seconds)
    python bench/extract.py --data data/CUB_200_2011 --images 4000
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from partaware import extract as E
from partaware.devices import autocast_dtype, resolve_device
from partaware.data.demo import generate_demo_cub
from partaware.data.images import crop_patch, load_rgb, patch_transform
from partaware.data.parts import select_split, write_index
from partaware.kinds import build_part_index
from partaware.models.encoder import build_encoder
from partaware.store import StoreWriter

RELEASED_BATCH = 128


def parse_args(argv=None):
    gpu = torch.cuda.is_available()
    cpus = len(os.sched_getaffinity(0))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="a CUB_200_2011 root (default: generate a demo set)")
    p.add_argument("--images", type=int, default=16000 if gpu else 48, help="images for (b)")
    p.add_argument("--baseline-images", type=int, help="first images used by (c) (default: --images)")
    p.add_argument("--unique-images", type=int, default=128, help="distinct generated JPEGs")
    p.add_argument("--model", default="vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    p.add_argument("--size", type=int, default=224, help="patch side fed to the encoder")
    p.add_argument("--batch-size", type=int, default=128 if gpu else 32, help="patches per forward in (a) and (b)")
    p.add_argument("--workers", type=int, default=max(1, min(14, cpus - 2)), help="DataLoader workers (b, c)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="(a) and (b)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--format", default=None, choices=["zarr", "hdf5"],
                   help="store of (b) and (c) (default: zarr when importable, else hdf5)")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder's blocks in (a) and (b) "
                   "(`extract.compile: true`)")
    p.add_argument("--encoder-seconds", type=float, default=3.0 if gpu else 1.0, help="time (a) for at least this")
    p.add_argument("--check-nvjpeg", action="store_true",
                   help="also compare torchvision's GPU JPEG decode with the PIL decode extract uses")
    p.add_argument("--workdir", type=Path, help="where data and stores go (default: a temporary folder)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------- data
def demo_index(root: Path, n_images: int, n_unique: int) -> pd.DataFrame:
    """The retrieval ('all') part index of a generated set, `n_unique` JPEGs linked up to `n_images`."""
    n_unique = min(n_unique, n_images)
    generate_demo_cub(root, n_unique, image_size=(500, 375))
    base = select_split(build_part_index({"kind": "cub", "root": str(root), "name": "bench"}), "all")
    copies, k = [base], 1
    while sum(c["image_id"].nunique() for c in copies) < n_images:
        folder = root / "links" / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        linked = {}
        for path in base["image_path"].unique():
            linked[path] = str(folder / Path(path).name)
            if not os.path.exists(linked[path]):
                os.link(path, linked[path])
        copies.append(base.assign(image_path=base["image_path"].map(linked),
                                  image_id=base["image_id"] + k * 1_000_000))
        k += 1
    index = pd.concat(copies, ignore_index=True)
    return first_images(index, n_images)


def first_images(index: pd.DataFrame, n_images: int) -> pd.DataFrame:
    keep = index["image_path"].isin(index["image_path"].unique()[:n_images])
    out = index[keep].reset_index(drop=True)
    out["row"] = np.arange(len(out))
    return out


# --------------------------------------------------------------------------------- (a)
def bench_encoder(args, device, amp) -> float:
    encoder = build_encoder({"arch": args.model, "img_size": args.size}).to(device).eval()
    if args.compile:  # as extract does with `extract.compile: true`
        for block in encoder.backbone.blocks:
            block.compile()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32,
                                                    enabled=amp is not None):
            encoder(x)

    for _ in range(3 if device.type == "cuda" else 1):
        forward()
    sync(device)
    n, t0 = 0, time.perf_counter()
    while n < 2 or time.perf_counter() - t0 < args.encoder_seconds:
        forward()
        n += 1
        if device.type != "cuda" or n % 10 == 0:
            sync(device)
    sync(device)
    return n * args.batch_size / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------- (b)
def bench_extract(args, index: pd.DataFrame, work: Path, device, suffix: str) -> dict:
    ds = {"kind": "cub", "name": "bench", "root": str(work), "size": args.size,
          "resize": round(args.size * 256 / 224), "blocks": [], "tasks": ["retrieval"]}
    cfg = {"seed": 0, "device": str(device),
           "cache": {"format": args.format, "dtype": "float16", "chunk_rows": 1024},
           "extract": {"batch_size": args.batch_size, "num_workers": args.workers, "shards": 1,
                       "precision": args.precision, "compile": args.compile},
           "data": {"on_bad_image": "error"},
           "datasets": {"bench": ds},
           "models": {"m": {"arch": args.model, "weights": "random", "seed": 0}}}

    write_index(index, work / "index.parquet")
    loop_seconds, waits = [], []
    run_loop = E.run_batches

    def timed_loop(*a, **k):  # the time inside extract's loop, model building and publishing left out
        t0 = time.perf_counter()
        try:
            return run_loop(*a, **k)
        finally:
            loop_seconds.append(time.perf_counter() - t0)
            waits.append(k["times"])  # what the loop waited on (extract's end line)

    E.run_batches = timed_loop
    try:
        t0 = time.perf_counter()
        E.extract(cfg, "bench", "m", "all", work / "index.parquet", work / f"extract{suffix}")
        seconds = time.perf_counter() - t0
    finally:
        E.run_batches = run_loop
    waited = {name: round(getattr(waits[0], f"{name}_s"), 2) for name in ("loader", "step", "device", "store")}
    return {"b_seconds": seconds, "b_loop_s": loop_seconds[0], "b_waited_s": waited,
            "b_patches_per_s": len(index) / loop_seconds[0],
            "b_end_to_end_patches_per_s": len(index) / seconds}


# --------------------------------------------------------------------------------- (c)
class ReleasedPatches(torch.utils.data.Dataset):
    """The released loader: one item per part; its image opened and fully decoded each time."""

    def __init__(self, index: pd.DataFrame, transform):
        self.paths = index["image_path"].tolist()
        self.boxes = index[["x0", "y0", "x1", "y1"]].to_numpy(np.int64).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(crop_patch(load_rgb(self.paths[i]), self.boxes[i])), i


def bench_released(args, index: pd.DataFrame, work: Path, device, suffix: str) -> float:
    encoder = build_encoder({"arch": args.model, "img_size": args.size}).to(device).eval()
    layout = {"cls": ((encoder.embed_dim,), "float16", RELEASED_BATCH),
              "mean": ((encoder.embed_dim,), "float16", RELEASED_BATCH),
              "row": ((), "int64", RELEASED_BATCH), "label": ((), "int64", RELEASED_BATCH)}
    labels = index["label"].to_numpy()
    t0 = time.perf_counter()
    writer = StoreWriter(work / f"released{suffix}", len(index), layout, {}, "released")
    loader = torch.utils.data.DataLoader(
        ReleasedPatches(index, patch_transform("eval", size=args.size)), batch_size=RELEASED_BATCH,
        shuffle=False, num_workers=args.workers)
    with torch.inference_mode():
        for x, rows in loader:
            out = encoder(x.to(device))
            rows = rows.numpy()
            writer.write({"cls": out["cls"].cpu().numpy(), "mean": out["mean"].cpu().numpy(),
                          "row": rows, "label": labels[rows]})
    writer.publish()
    return len(index) / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------- helpers
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_device_mb(device, reset=True):
    if device.type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 2**20
    if reset:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return round(peak, 1)


def nvjpeg_difference(index: pd.DataFrame, n: int = 16) -> dict:
    """How far torchvision's GPU JPEG decode is from the full PIL decode the store is built on."""
    from torchvision.io import decode_jpeg, read_file

    worst, differing, total = 0, 0, 0
    try:
        for path in index["image_path"].unique()[:n]:
            gpu = decode_jpeg(read_file(path), device="cuda").permute(1, 2, 0).cpu().numpy()
            pil = np.asarray(load_rgb(path))
            diff = np.abs(gpu.astype(np.int16) - pil.astype(np.int16))
            worst, differing, total = max(worst, int(diff.max())), differing + int((diff > 0).sum()), total + diff.size
    except Exception as err:  # noqa: BLE001 - a side measurement must not cost the whole run
        return {"nvjpeg_error": f"{type(err).__name__}: {err}"}
    return {"nvjpeg_max_abs_diff": worst, "nvjpeg_differing_fraction": round(differing / total, 6)}


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({len(os.sched_getaffinity(0))} cores, {torch.get_num_threads()} torch threads)"


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.format is None:
        try:
            import zarr  # noqa: F401
            args.format = "zarr"
        except ImportError:
            args.format = "hdf5"
    suffix = {"zarr": ".zarr", "hdf5": ".h5"}[args.format]
    device = resolve_device(args.device)
    amp = autocast_dtype(args.precision, device)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="partaware-bench-")
    work = args.workdir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    if args.data:
        index = select_split(build_part_index({"kind": "cub", "root": str(args.data), "name": "bench",
                                               "max_images": args.images}), "all")
    else:
        index = demo_index(work / "cub", args.images, args.unique_images)
    data_s = time.perf_counter() - t0
    baseline = first_images(index, args.baseline_images or args.images)
    peak_device_mb(device)

    a = bench_encoder(args, device, amp)
    peak = {"a": peak_device_mb(device)}
    b = bench_extract(args, index, work, device, suffix)
    peak["b"] = peak_device_mb(device)
    c = bench_released(args, baseline, work, device, suffix)
    peak["c"] = peak_device_mb(device)
    extra = nvjpeg_difference(index) if args.check_nvjpeg and device.type == "cuda" else {}

    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result = {
        "bench": "extract", "device": device_name(device), "model": args.model,
        "data": str(args.data) if args.data else f"demo: {min(args.unique_images, args.images)} distinct JPEGs 500x375",
        "precision": str(amp).replace("torch.", "") if amp else "fp32", "size": args.size,
        "batch_size": args.batch_size, "workers": args.workers, "store": args.format, "compile": args.compile,
        "n_images": int(index["image_path"].nunique()), "n_patches": len(index),
        "c_n_patches": len(baseline), "data_s": round(data_s, 2),
        "a_patches_per_s": round(a, 1), "b_patches_per_s": round(b["b_patches_per_s"], 1),
        "b_end_to_end_patches_per_s": round(b["b_end_to_end_patches_per_s"], 1),
        "b_seconds": round(b["b_seconds"], 2), "b_loop_s": round(b["b_loop_s"], 2), "b_waited_s": b["b_waited_s"],
        "c_patches_per_s": round(c, 1),
        "ratio_b_a": round(b["b_patches_per_s"] / a, 3), "ratio_b_c": round(b["b_patches_per_s"] / c, 3),
        "peak_host_rss_mb": round(self_rss, 1), "peak_worker_rss_mb": round(child_rss, 1),
        "peak_device_mb": max(peak.values()) if device.type == "cuda" else None,
        "peak_device_mb_by_phase": peak if device.type == "cuda" else None,
        "torch": torch.__version__, **extra,
    }
    print(json.dumps(result), flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
