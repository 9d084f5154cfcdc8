"""Run one frozen encoder over one dataset split and cache its features in a store.

The job: build the encoder, ask the dataset's kind for its extraction plan (rows, arrays,
transforms, loader; `kinds/`), open the resumable store and run the pipelined loop
(`extraction/loop.py`), then publish. The path of a batch, each stage overlapping the others:

1. DataLoader workers decode each image once for all of its rows and collate one uint8 batch,
   which the loader pins (`extraction/loaders.py`).
2. The main process copies it to the device without blocking, normalises it there, runs the
   encoder (bf16 autocast on a GPU) and queues the copy of the features back
   (`extraction/steps.py`); batch k is read back only after batch k+1 is queued.
3. A writer thread flushes whole chunks to the store in row order; a chunk counts as done
   (the resume point) only once it has landed.

Decoding stays on the CPU with PIL's full decode, the pixels the paper's crops come from: a GPU
decoder (nvJPEG) is not bound to give the same pixels (`bench/extract.py --check-nvjpeg`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from . import config as C
from . import kinds, roles, specs
from .devices import autocast_dtype, resolve_device
from .extraction.loop import LoopTimes, run_batches
from .job_threads import loader_workers
from .store import StoreWriter

log = logging.getLogger(__name__)


def extract(cfg: dict, dataset: str, model: str, split: str, index_path: Path | None, out: Path,
            checkpoint: Path | None = None, shard: int = 0) -> Path:
    """Extract the features of `model` on one split of `dataset` into the store `out`."""
    from .models.encoder import build_encoder

    ds, mcfg = cfg["datasets"][dataset], cfg["models"][model]
    signature = specs.store_signature(cfg, dataset, model, split)
    device = resolve_device(cfg["device"])
    amp = autocast_dtype(cfg["extract"]["precision"], device)
    torch.manual_seed(cfg["seed"])
    kind = kinds.of(ds)
    size = mcfg.get("img_size", kind.input_size(cfg, ds, split))
    encoder = build_encoder({**mcfg, "img_size": size}, checkpoint).to(device).eval()
    plan = kind.plan(cfg, dataset, split, encoder, device, index_path, shard, roles.store_readers(cfg, ds, split))
    chunk_rows = cfg["cache"]["chunk_rows"]
    layout = {**plan.layout, "row": ((), "int64", chunk_rows), "valid": ((), "uint8", chunk_rows)}

    import timm

    checkpoint_sha = encoder.checkpoint_sha256 or ""  # hashed once, when the encoder verified it
    # What the config hash cannot see: the checkpoint's bytes and the exact rows to extract.
    resume_key = f"{checkpoint_sha}:{C.digest([plan.images, plan.resume_rows])}"
    attrs = {**plan.attrs,  # what the kind records of its rows (e.g. an image folder's classes)
             "model": model, "arch": mcfg["arch"], "weights": mcfg["weights"], "group": mcfg.get("group", ""),
             "dataset": dataset, "split": split, "shard": shard, "shards": cfg["extract"]["shards"],
             "checkpoint_sha256": checkpoint_sha, "timm_version": timm.__version__,
             "torch_version": torch.__version__, "transform": plan.transform,
             "signature": signature, "rows": list(plan.rows)}
    writer = StoreWriter(out, plan.n_rows, layout, attrs, C.digest(signature), resume_key=resume_key)
    if writer.rows_done:
        log.info("resuming %s at row %d of %d", out, writer.rows_done, plan.n_rows)
    start = writer.rows_done
    workers = loader_workers(cfg["extract"]["num_workers"])  # auto: the job's threads - 1
    loader = torch.utils.data.DataLoader(
        plan.loader_data(start), batch_size=plan.images_per_batch, shuffle=False, num_workers=workers,
        collate_fn=plan.collate, pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None)
    compiled = cfg["extract"].get("compile", False)  # a config without it (tests, benches): off
    if compiled:  # the same weights, compiled kernels (one warm-up per batch shape)
        for block in encoder.backbone.blocks:  # every path (features, intermediates) calls them
            block.compile()
    step = plan.make_step(encoder, device, amp)
    where = f"{dataset}/{model}/{split}" + (f" shard {shard}" if cfg["extract"]["shards"] > 1 else "")
    log.info("extract %s: start on %s, precision %s, batch %d images, %d loader workers%s, %d rows to do (of %d)",
             where, device, amp or "fp32", plan.images_per_batch, workers,
             ", torch.compile" if compiled else "", plan.n_rows - start, plan.n_rows)
    t0, times = time.perf_counter(), LoopTimes()
    skipped = _skipped_before(writer, plan.images, start) + run_batches(
        loader, step, writer, chunk_rows, cfg["extract"].get("log_every_s", 30.0), times=times)
    seconds, rows = time.perf_counter() - t0, times.computed  # the rate counts computed rows only
    empty = plan.n_rows - start - rows
    log.info("extract %s: done, %d rows in %.1f s, %.1f patches/s; %s%s", where, rows, seconds,
             rows / max(seconds, 1e-9), times.line(), f"; {empty} rows of skipped images left empty" if empty else "")
    return writer.publish({"skipped_images": skipped, "precision": str(amp or "fp32"),
                           "device": str(device)})


def _skipped_before(writer: StoreWriter, images: list[str], start: int) -> list[str]:
    """Images skipped by an interrupted earlier run (their rows are `valid == 0`), once each."""
    if not start:
        return []
    invalid = np.flatnonzero(writer.backend.read("valid", 0, start) == 0)
    return list(dict.fromkeys(f"{images[i]}: skipped before the resume" for i in invalid))
