#!/usr/bin/env python
"""What the default precision changes in the results: fp32 against `extract.precision: auto`.

The released code ran the encoder in fp32 and kept fp32 features; partaware by default runs
bf16 autocast on a GPU and stores float16 (`precision: auto`, `cache.dtype: float16`). On one
part dataset and one segmentation dataset, with the same encoder, it extracts every store
twice - fp32 compute + float32 store, then `--against` (default auto) + float16 store - and
scores both with the same evaluations: retrieval AP, the linear probe's accuracy and the cached
segmentation probe's mIoU. Prints ONE JSON line with both values and their difference per
result row, and the largest difference per metric.

    python bench/precision.py                                   # GPU: ViT-B/16, generated data
    python bench/precision.py --cub data/CUB_200_2011 --seg data/ade20k_part --seg-classes 209 59
    python bench/precision.py --against bf16                    # CPU smoke test (auto is fp32 there)
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from partaware import config as C
from partaware import evaluate as E
from partaware.data.demo import generate_demo_cub
from partaware.data.demo_seg import generate_demo_seg
from partaware.data.parts import select_split, write_index
from partaware.devices import autocast_dtype, resolve_device
from partaware.extract import extract
from partaware.kinds import build_part_index
from partaware.results import context
from partaware.store import open_store

ARMS = {"fp32": ("fp32", "float32")}  # name -> (extract.precision, cache.dtype); the other arm is added


def parse_args(argv=None):
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    p.add_argument("--checkpoint", type=Path, help="encoder weights (a timm/torch state dict); default random")
    p.add_argument("--against", default="auto", choices=["auto", "bf16", "fp16"],
                   help="the precision compared with fp32 (stored as float16)")
    p.add_argument("--cub", type=Path, help="a CUB_200_2011 root (default: generated)")
    p.add_argument("--images", type=int, default=1200 if gpu else 24, help="generated CUB images")
    p.add_argument("--seg", type=Path, help="a segmentation root in the mmseg layout (default: generated)")
    p.add_argument("--seg-images", type=int, nargs=2, default=[200, 30] if gpu else [6, 4],
                   metavar=("TRAIN", "VAL"), help="generated segmentation images")
    p.add_argument("--seg-classes", type=int, nargs="+", default=[6, 3],
                   help="classes of the label sets ann, ann_object (with --seg)")
    p.add_argument("--size", type=int, default=224 if gpu else 64, help="input side")
    p.add_argument("--iters", type=int, default=2000 if gpu else 20, help="cached segmentation probe iterations")
    p.add_argument("--epochs", type=int, default=30 if gpu else 3, help="linear probe epochs")
    p.add_argument("--batch-size", type=int, default=128 if gpu else 16)
    p.add_argument("--workers", type=int, default=8 if gpu else 0)
    p.add_argument("--workdir", type=Path, help="where data and stores go (default: a temporary folder)")
    return p.parse_args(argv)


def make_config(args, work: Path, precision: str, dtype: str) -> dict:
    label_sets = {"part": {"dir": "ann", "classes": args.seg_classes[0]}}
    if len(args.seg_classes) > 1:
        label_sets["object"] = {"dir": "ann_object", "classes": args.seg_classes[1]}
    model = {"arch": args.arch, "weights": "file" if args.checkpoint else "random", "seed": 0}
    if args.checkpoint:
        model["path"] = str(args.checkpoint)
    return C.fill_spec({
        "seed": 0, "device": "auto",
        "cache": {"format": "hdf5", "dtype": dtype, "chunk_rows": 256},
        "extract": {"batch_size": args.batch_size, "num_workers": args.workers, "precision": precision},
        "datasets": {
            "parts": {"kind": "cub", "name": "parts", "root": str(args.cub or work / "cub"), "size": args.size,
                      "resize": round(args.size * 256 / 224), "tasks": ["retrieval", "linear"]},
            "seg": {"kind": "segfolder", "name": "seg", "root": str(args.seg or work / "seg"), "size": args.size,
                    "blocks": [4, 6, 8, 12], "tasks": ["segmentation"], "label_sets": label_sets},
        },
        "models": {"m": model},
        "retrieval": {"features": ["mean", "cls"]},
        "linear": {"epochs": args.epochs, "seeds": [0]},
        "segmentation": {"protocol": "cached", "iters": args.iters, "warmup_iters": min(1500, args.iters // 10),
                         "batch_size": 16},
        "stats": {"bootstrap": 0},
    })


def results(cfg: dict, work: Path, arm: str) -> dict[str, float]:
    """'task | feature | label_set | metric | seed' -> value, for every row of the three evaluations."""
    stores = {}
    for dataset in ("parts", "seg"):
        ds = cfg["datasets"][dataset]
        for split in C.splits_of(cfg, dataset):
            index = None
            if dataset == "parts":
                index = work / f"index-{split}.parquet"
                if not index.exists():
                    write_index(select_split(build_part_index(ds), split), index)
            out = work / arm / f"{dataset}-{split}.h5"
            checkpoint = Path(cfg["models"]["m"]["path"]) if "path" in cfg["models"]["m"] else None
            extract(cfg, dataset, "m", split, index, out, checkpoint)
            stores[dataset, split] = open_store(out)

    def opened(dataset, task):
        return [stores[dataset, s] for s in C.task_splits(cfg["datasets"][dataset], task)]

    rows = E.retrieval_rows(cfg, context(cfg, "parts", "m"), *opened("parts", "retrieval"))
    rows += E.linear_rows(cfg, context(cfg, "parts", "m"), *opened("parts", "linear"))
    rows += E.segmentation_rows(cfg, context(cfg, "seg", "m"), *opened("seg", "segmentation"))[0]
    return {" | ".join(str(r[k]) for k in ("task", "feature", "label_set", "metric", "seed")): r["value"]
            for r in rows if r["value"] == r["value"]}  # NaN: a feature the model lacks


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="partaware-precision-")
    work = args.workdir or Path(tmp.name)
    if not args.cub:
        generate_demo_cub(work / "cub", args.images, image_size=(500, 375) if args.size >= 224 else (200, 150))
    if not args.seg:
        generate_demo_seg(work / "seg", *args.seg_images, size=max(64, 2 * args.size))
    device = resolve_device("auto")
    arms = {**ARMS, args.against: (args.against, "float16")}
    values, seconds = {}, {}
    for arm, (precision, dtype) in arms.items():
        t0 = time.perf_counter()
        values[arm] = results(make_config(args, work, precision, dtype), work, arm)
        seconds[arm] = round(time.perf_counter() - t0, 1)
    base, other = values["fp32"], values[args.against]
    diff = {k: round(other[k] - base[k], 6) for k in base if k in other}
    worst = {}
    for key, d in diff.items():
        task, _, _, metric, _ = key.split(" | ")
        metric = f"{task} {metric}"
        worst[metric] = max(worst.get(metric, 0.0), abs(d))
    amp = autocast_dtype(args.against, device)
    print(json.dumps({
        "bench": "precision", "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "model": args.arch, "weights": str(args.checkpoint or "random"),
        "data": {"parts": str(args.cub or f"demo: {args.images} CUB-layout images"),
                 "seg": str(args.seg or f"demo: {args.seg_images[0]} + {args.seg_images[1]} images")},
        "against": args.against, "against_compute": str(amp).replace("torch.", "") if amp else "fp32",
        "against_store": "float16", "fp32": base, args.against: other, "diff": diff,
        "max_abs_diff_by_metric": worst, "seconds": seconds, "torch": torch.__version__,
    }), flush=True)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
