"""Run one frozen encoder over one dataset split and cache its features in a store.

The only module that runs an encoder. The path of a batch, each stage overlapping the others:

1. DataLoader workers decode each image once for all of its parts (full PIL decode), crop and
   resize every part (PIL, as `patch_transform`) and collate the batch into one uint8 tensor,
   which the loader pins; uint8 is a quarter of the float bytes to pass, pin and copy.
2. The main process copies it to the device without blocking, normalises it there through a
   256-entry table built by the transform itself (bit for bit what ToTensor + Normalize give on
   the CPU), runs the encoder (bf16 autocast on a GPU) and queues the copy of the features back.
   Batch k's features are read only after batch k+1 is queued, so the device does not wait
   for the host's bookkeeping.
3. A writer thread flushes whole chunks to the resumable store (see `store.py`) in row order;
   a chunk counts as done (the resume point) only once it has landed.

Decoding stays on the CPU with PIL's full decode, the pixels the paper's crops come from: a GPU
decoder (nvJPEG) is not bound to give the same pixels (`bench/extract.py --check-nvjpeg` measures
how far it is), and PIL's `draft` mode would change them. `bench/extract.py` measures this path.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision import transforms as T

from . import config as C
from .devices import autocast, autocast_dtype, resolve_device
from .data.errors import DataError
from .data.images import crop_patch, load_rgb, patch_transform, describe_transform
from .store import StoreWriter

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_WRITE_QUEUE = 2  # batches waiting for the writer thread


def shard_range(n_rows: int, shard: int, shards: int) -> tuple[int, int]:
    """Contiguous, near-equal row ranges: shard k of n covers [lo, hi)."""
    bounds = np.linspace(0, n_rows, shards + 1).round().astype(int)
    return int(bounds[shard]), int(bounds[shard + 1])


# --------------------------------------------------------------------------------- transforms
def split_transform(transform: T.Compose) -> tuple[T.Compose, torch.Tensor]:
    """A `patch_transform` -> (its PIL steps, a (3, 256) table of normalised values).

    The workers run only the PIL steps and send uint8 pixels; `normalise` then looks each pixel
    up in the table, which the transform's own ToTensor and Normalize filled from the values
    0..255, so the result equals the whole transform's bit for bit.
    """
    *pil_steps, to_tensor, normalize = transform.transforms
    if not (isinstance(to_tensor, T.ToTensor) and isinstance(normalize, T.Normalize)):
        raise TypeError("expected a transform ending in ToTensor, Normalize (data.images.patch_transform)")
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # (1, 256, RGB)
    table = normalize(to_tensor(Image.fromarray(ramp)))[:, 0, :]
    return T.Compose(pil_steps), table.contiguous()


def normalise(patches: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, H, W, RGB) uint8 -> (B, 3, H, W) float32 through `table` (3, 256), on their device."""
    offsets = torch.arange(3, device=patches.device) * 256
    return table.reshape(-1)[patches.long() + offsets].permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------- datasets
class PatchImages(torch.utils.data.Dataset):
    """One item per image (a run of consecutive index rows with one path): its part patches as
    uint8 (H, W, RGB) arrays, the image decoded once."""

    def __init__(self, index: pd.DataFrame, pil_steps, on_bad_image: str):
        paths = index["image_path"].to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]]) if len(paths) else np.zeros(0, int)
        self.bounds = np.append(starts, len(paths))
        self.paths = paths[starts]
        self.rows = index["row"].to_numpy(np.int64)
        self.boxes = index[["x0", "y0", "x1", "y1"]].to_numpy(np.int64)
        self.pil_steps = pil_steps
        self.on_bad_image = on_bad_image

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        lo, hi = self.bounds[i], self.bounds[i + 1]
        rows = self.rows[lo:hi]
        try:
            image = load_rgb(self.paths[i])
        except DataError as err:
            if self.on_bad_image != "skip":
                raise
            return rows, None, str(err)
        boxes = self.boxes[lo:hi].tolist()
        return rows, [np.asarray(self.pil_steps(crop_patch(image, box))) for box in boxes], None


def collate_patches(items):
    """PatchImages items -> (rows (n,) int64, valid (n,) bool, patches (n_valid, H, W, RGB) uint8,
    error messages): tensors the DataLoader can pin, stacked in the worker."""
    rows = torch.from_numpy(np.concatenate([r for r, _, _ in items]))
    valid = torch.from_numpy(np.concatenate([np.full(len(r), p is not None) for r, p, _ in items]))
    good = [patch for _, p, _ in items if p is not None for patch in p]
    patches = torch.from_numpy(np.stack(good)) if good else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    return rows, valid, patches, [err for _, _, err in items if err]


class SegImages(torch.utils.data.Dataset):
    """One item per image: the fixed view of the image and of each of its label maps."""

    def __init__(self, samples: list[dict], label_sets: dict, size: int, mean, std, on_bad_image):
        from .data import segfolder

        self.samples, self.label_sets, self.size = samples, label_sets, size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.on_bad_image = on_bad_image
        self.segfolder = segfolder

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        sample = self.samples[i]
        rows = np.array([sample["row"]], dtype=np.int64)
        try:
            image = load_rgb(sample["img"])
        except DataError as err:
            if self.on_bad_image != "skip":
                raise
            return rows, None, str(err)
        view_labels = {}
        for name, spec in self.label_sets.items():
            label = self.segfolder.load_label(sample[name], spec["classes"])
            view, view_labels[name] = self.segfolder.seg_view(image, label, self.size)
        x = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = (x - self.mean) / self.std
        return rows, (x, {k: torch.from_numpy(np.asarray(v)) for k, v in view_labels.items()}), None


def collate_seg(items):
    """SegImages items -> (rows, valid, images (n_valid, 3, S, S), {set: labels (n_valid, S, S)},
    error messages)."""
    rows = torch.from_numpy(np.concatenate([r for r, _, _ in items]))
    valid = torch.tensor([v is not None for _, v, _ in items])
    good = [v for _, v, _ in items if v is not None]
    images = torch.stack([x for x, _ in good]) if good else torch.zeros(0)
    labels = {k: torch.stack([lab[k] for _, lab in good]) for k in (good[0][1] if good else {})}
    return rows, valid, images, labels, [err for _, _, err in items if err]


# --------------------------------------------------------------------------------- the loop
class _Buffer:
    """Accumulates batch outputs and hands out whole chunks, so each store chunk is written once."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            self.parts.setdefault(k, []).append(v)

    def __len__(self):
        return sum(len(v) for v in next(iter(self.parts.values()), []))

    def take(self, n: int) -> dict[str, np.ndarray]:
        whole = {k: np.concatenate(v) for k, v in self.parts.items()}
        self.parts = {k: [v[n:]] for k, v in whole.items()}
        return {k: v[:n] for k, v in whole.items()}


class BackgroundWriter:
    """Hands batches to a thread that writes them to `writer` in order, in whole chunks.

    `put` blocks only while `depth` batches already wait, so the store's pace never stalls the
    device for longer. `writer.rows_done` (the resume point) moves only after a chunk lands.
    Leaving the `with` block writes what is queued, then joins the thread; a write error is
    raised in the caller, at the next `put` or on leaving.
    """

    def __init__(self, writer: StoreWriter, chunk_rows: int, depth: int = _WRITE_QUEUE):
        self.writer, self.chunk_rows = writer, chunk_rows
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def put(self, arrays: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(arrays)

    def _loop(self):
        buffer, writer = _Buffer(), self.writer
        while (arrays := self.queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining so `put` never blocks on a dead thread
            try:
                buffer.add(arrays)
                while len(buffer) >= self.chunk_rows or (
                        len(buffer) and writer.rows_done + len(buffer) == writer.n_rows):
                    writer.write(buffer.take(min(self.chunk_rows, len(buffer))))
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                self.error = err

    def __exit__(self, exc_type, exc, tb):
        self.queue.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


def _run(loader, step, writer: StoreWriter, chunk_rows: int, log_every=30.0):
    """Feed every batch through `step`, one batch ahead, and hand the results to a writer thread.

    `step(batch)` queues the batch's device work and returns `finish`; `finish()` waits for it
    and returns (store arrays, error messages). A batch is finished after the next one is queued.
    """
    skipped = []
    t0, last_log, done0 = time.time(), time.time(), writer.rows_done
    with BackgroundWriter(writer, chunk_rows) as background:
        def hand_over(finish):
            arrays, errors = finish()
            skipped.extend(errors)
            background.put(arrays)

        pending = None
        for batch in loader:
            queued = step(batch)
            if pending is not None:
                hand_over(pending)
            pending = queued
            if time.time() - last_log > log_every:
                rate = (writer.rows_done - done0) / (time.time() - t0)
                eta = (writer.n_rows - writer.rows_done) / max(rate, 1e-9)
                log.info("%d/%d rows, %.1f rows/s, ETA %.0f s", writer.rows_done, writer.n_rows, rate, eta)
                last_log = time.time()
        if pending is not None:
            hand_over(pending)
    return skipped


def _batch_arrays(layout: dict, valid: np.ndarray, known: dict, per_valid: dict) -> dict:
    """One batch's store arrays: `known` cover every row, `per_valid` only the valid ones (the
    other rows stay zero; when all are valid they are used as they are, without a copy)."""
    out = {**known, "valid": valid.astype(np.uint8)}
    for name, (tail, dtype, _) in layout.items():
        if name in out:
            continue
        if name in per_valid and valid.all():
            out[name] = per_valid[name]
            continue
        out[name] = np.zeros((len(valid), *tail), dtype=dtype)
        if name in per_valid:
            out[name][valid] = per_valid[name]
    return out


def _to_host(tensors: dict, layout: dict) -> dict:
    """Cast features to their store dtype on the device and queue their copy to the host."""
    return {k: v.float().to(_TORCH_DTYPES[layout[k][1]]).to("cpu", non_blocking=True)
            for k, v in tensors.items()}


def _done_marker(device):
    """Waits (when called) for everything queued on the device so far."""
    if device.type != "cuda":
        return lambda: None
    event = torch.cuda.Event()
    event.record()
    return event.synchronize


def _part_step(encoder, device, amp, table, arrays, label_of, layout):
    table = table.to(device)

    def step(batch):
        rows, valid, patches, errors = batch
        feats = {}
        if len(patches):
            x = normalise(patches.to(device, non_blocking=True), table)
            with torch.inference_mode(), autocast(device, amp):
                out = encoder(x)
            feats = _to_host({a: out[a] for a in arrays}, layout)
        wait = _done_marker(device)

        def finish():
            wait()
            rows_np = rows.numpy()
            known = {"row": rows_np, "label": label_of[rows_np]}
            return _batch_arrays(layout, valid.numpy(), known, {k: v.numpy() for k, v in feats.items()}), errors
        return finish
    return step


def _seg_step(encoder, device, amp, blocks, layout):
    def step(batch):
        rows, valid, images, labels, errors = batch
        maps = {}
        if len(images):
            with torch.inference_mode(), autocast(device, amp):
                out = encoder.dense(images.to(device, non_blocking=True), blocks)
            maps = _to_host({f"layers/{b}": out[b] for b in blocks}, layout)
        wait = _done_marker(device)

        def finish():
            wait()
            per_valid = {**{k: v.numpy() for k, v in maps.items()},
                         **{f"labels/{k}": v.numpy() for k, v in labels.items()}}
            return _batch_arrays(layout, valid.numpy(), {"row": rows.numpy()}, per_valid), errors
        return finish
    return step


def extract(cfg: dict, dataset: str, model: str, split: str, index_path: Path | None, out: Path,
            checkpoint: Path | None = None, shard: int = 0) -> Path:
    """Extract the features of `model` on one split of `dataset` into the store `out`."""
    from .models.encoder import build_encoder

    ds, mcfg = cfg["datasets"][dataset], cfg["models"][model]
    shards = cfg["extract"]["shards"]
    signature = C.extract_signature(cfg, dataset, model, split)
    config_hash = C.digest(signature)
    device = resolve_device(cfg["device"])
    amp = autocast_dtype(cfg["extract"]["precision"], device)
    torch.manual_seed(cfg["seed"])
    encoder = build_encoder({**mcfg, "img_size": mcfg.get("img_size", ds["size"])}, checkpoint).to(device).eval()
    mean, std = C.normalisation(mcfg)
    dtype = cfg["cache"]["dtype"]
    chunk_rows = cfg["cache"]["chunk_rows"]

    if ds["kind"] == "segfolder":
        from .data import segfolder

        samples = segfolder.list_samples(ds["root"], split, {k: v["dir"] for k, v in ds["label_sets"].items()})
        for i, s in enumerate(samples):
            s["row"] = i
        lo, hi = shard_range(len(samples), shard, shards)
        samples = samples[lo:hi]
        with torch.inference_mode():
            probe = encoder.dense(torch.zeros(1, 3, ds["size"], ds["size"], device=device), ds["blocks"])
        layout = {f"layers/{b}": (tuple(probe[b].shape[1:]), dtype, 1) for b in ds["blocks"]}
        layout.update({f"labels/{k}": ((ds["size"], ds["size"]), "uint8", 1) for k in ds["label_sets"]})
        transform_desc = f"seg fixed view: short side {ds['size']} bicubic, centre crop {ds['size']}; " \
                         f"labels nearest; normalise mean={mean} std={std}"
        n_rows = len(samples)
    else:
        index = pd.read_parquet(index_path)
        lo, hi = shard_range(len(index), shard, shards)
        index = index.iloc[lo:hi]
        with torch.inference_mode():
            probe = encoder(torch.zeros(1, 3, ds["size"], ds["size"], device=device))
        arrays = [a for a in C.store_arrays(ds, split) if a in probe]
        layout = {a: (tuple(probe[a].shape[1:]), dtype, 1 if a == "tokens" else chunk_rows) for a in arrays}
        transform = patch_transform(C.view_of(split), size=ds["size"], resize=ds["resize"], mean=mean, std=std)
        transform_desc = describe_transform(C.view_of(split), size=ds["size"], resize=ds["resize"], mean=mean, std=std)
        n_rows = len(index)
    layout["row"] = ((), "int64", chunk_rows)
    layout["valid"] = ((), "uint8", chunk_rows)
    if ds["kind"] != "segfolder":
        layout["label"] = ((), "int64", chunk_rows)

    import timm

    checkpoint_sha = encoder.checkpoint_sha256 or ""  # hashed once, when the encoder verified it
    images = ([str(s["img"]) for s in samples] if ds["kind"] == "segfolder"
                               else index["image_path"].astype(str).tolist())
    # What the config hash cannot see: the checkpoint's bytes and the exact rows to extract.
    boxes = [] if ds["kind"] == "segfolder" else index[["label", "x0", "y0", "x1", "y1"]].to_numpy().tolist()
    resume_key = f"{checkpoint_sha}:{C.digest([images, boxes])}"
    attrs = {"model": model, "arch": mcfg["arch"], "weights": mcfg["weights"], "group": mcfg.get("group", ""),
             "dataset": dataset, "split": split, "shard": shard, "shards": shards,
             "checkpoint_sha256": checkpoint_sha, "timm_version": timm.__version__,
             "torch_version": torch.__version__, "transform": transform_desc,
             "signature": signature, "rows": [lo, hi]}
    writer = StoreWriter(out, n_rows, layout, attrs, config_hash, resume_key=resume_key)
    if writer.rows_done:
        log.info("resuming %s at row %d of %d", out, writer.rows_done, n_rows)
    start = writer.rows_done
    workers = cfg["extract"]["num_workers"]
    if ds["kind"] == "segfolder":
        data = SegImages(samples[start:], ds["label_sets"], ds["size"], mean, std, cfg["data"]["on_bad_image"])
        collate, step = collate_seg, _seg_step(encoder, device, amp, ds["blocks"], layout)
        images_per_batch = max(1, cfg["extract"]["batch_size"] // 4)
    else:
        pil_steps, table = split_transform(transform)
        data = PatchImages(index.iloc[start:], pil_steps, cfg["data"]["on_bad_image"])
        rows = index["row"].to_numpy(np.int64)
        label_of = np.zeros(int(rows.max()) + 1 if len(rows) else 0, np.int64)
        label_of[rows] = index["label"].to_numpy(np.int64)
        collate, step = collate_patches, _part_step(encoder, device, amp, table, arrays, label_of, layout)
        per_image = max(1.0, len(index) / max(1, index["image_path"].nunique()))
        images_per_batch = max(1, int(cfg["extract"]["batch_size"] / per_image))
    loader = torch.utils.data.DataLoader(
        data, batch_size=images_per_batch, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None)
    skipped = _skipped_before(writer, images, start) + _run(loader, step, writer, chunk_rows)
    return writer.publish({"skipped_images": skipped, "precision": str(amp or "fp32"),
                           "device": str(device)})


def _skipped_before(writer: StoreWriter, images: list[str], start: int) -> list[str]:
    """Images skipped by an interrupted earlier run (their rows are `valid == 0`), once each."""
    if not start:
        return []
    invalid = np.flatnonzero(writer.backend.read("valid", 0, start) == 0)
    return list(dict.fromkeys(f"{images[i]}: skipped before the resume" for i in invalid))
