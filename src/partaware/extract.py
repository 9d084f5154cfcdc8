"""Run one frozen encoder over one dataset split and cache its features in a store.

The only module that runs an encoder. Each image is decoded once for all of its parts, batches
stream through a DataLoader (worker processes, pinned memory) so memory does not grow with the
dataset, the forward pass runs under bf16 autocast on a GPU, and finished chunks are flushed to a
resumable store (see `store.py`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import config as C
from .data.errors import DataError
from .data.images import crop_patch, load_rgb, patch_transform, describe_transform
from .store import StoreWriter

log = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but no CUDA GPU is visible; use device: auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device):
    """None means fp32. `auto` is bf16 on a GPU (features agree with fp32 to cos >= 0.999)."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def shard_range(n_rows: int, shard: int, shards: int) -> tuple[int, int]:
    """Contiguous, near-equal row ranges: shard k of n covers [lo, hi)."""
    bounds = np.linspace(0, n_rows, shards + 1).round().astype(int)
    return int(bounds[shard]), int(bounds[shard + 1])


# --------------------------------------------------------------------------------- datasets
class PatchImages(torch.utils.data.Dataset):
    """One item per image: all of its part patches (rows >= start), decoded once."""

    def __init__(self, index: pd.DataFrame, transform, on_bad_image: str):
        self.groups = [g for _, g in index.groupby("image_path", sort=False)]
        self.transform = transform
        self.on_bad_image = on_bad_image

    def __len__(self):
        return len(self.groups)

    def __getitem__(self, i):
        group = self.groups[i]
        rows = torch.as_tensor(group["row"].to_numpy())
        try:
            image = load_rgb(group["image_path"].iloc[0])
        except DataError as err:
            if self.on_bad_image != "skip":
                raise
            return rows, None, str(err)
        boxes = group[["x0", "y0", "x1", "y1"]].to_numpy()
        patches = torch.stack([self.transform(crop_patch(image, tuple(int(v) for v in b))) for b in boxes])
        return rows, patches, None


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
        rows = torch.as_tensor([sample["row"]])
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
        return rows, (x[None], {k: torch.from_numpy(np.asarray(v))[None] for k, v in view_labels.items()}), None


def _collate(items):
    return items


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


def _run(loader, forward, writer: StoreWriter, chunk_rows: int, layout: dict, log_every=30.0):
    """Drive the loader, run `forward` on each batch and flush whole chunks to the writer."""
    buffer, skipped = _Buffer(), []
    t0, last_log, done0 = time.time(), time.time(), writer.rows_done
    for items in loader:
        outputs = forward(items, skipped, layout)
        buffer.add(outputs)
        while len(buffer) >= chunk_rows or (len(buffer) and writer.rows_done + len(buffer) == writer.n_rows):
            writer.write(buffer.take(min(chunk_rows, len(buffer))))
        if time.time() - last_log > log_every:
            rate = (writer.rows_done - done0) / (time.time() - t0)
            eta = (writer.n_rows - writer.rows_done) / max(rate, 1e-9)
            log.info("%d/%d rows, %.1f rows/s, ETA %.0f s", writer.rows_done, writer.n_rows, rate, eta)
            last_log = time.time()
    return skipped


def _empty_like(layout: dict, n: int) -> dict[str, np.ndarray]:
    return {k: np.zeros((n, *tail), dtype=dtype) for k, (tail, dtype, _) in layout.items()}


def _part_forward(encoder, device, amp, arrays):
    def forward(items, skipped, layout):
        rows = torch.cat([r for r, _, _ in items]).numpy()
        out = _empty_like(layout, len(rows))
        out["row"][:] = rows
        good = [i for i, (_, p, _) in enumerate(items) if p is not None]
        for _, _, err in items:
            if err:
                skipped.append(err)
        if good:
            mask = np.concatenate([np.full(len(r), p is not None) for r, p, _ in items])
            x = torch.cat([items[i][1] for i in good]).to(device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                feats = encoder(x)
            for name in arrays:
                out[name][mask] = feats[name].float().cpu().numpy()
            out["valid"][mask] = 1
        return out
    return forward


def _seg_forward(encoder, device, amp, blocks):
    def forward(items, skipped, layout):
        rows = torch.cat([r for r, _, _ in items]).numpy()
        out = _empty_like(layout, len(rows))
        out["row"][:] = rows
        for _, _, err in items:
            if err:
                skipped.append(err)
        good = [i for i, (_, p, _) in enumerate(items) if p is not None]
        if good:
            x = torch.cat([items[i][1][0] for i in good]).to(device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                maps = encoder.dense(x, blocks)
            for b in blocks:
                out[f"layers/{b}"][good] = maps[b].float().cpu().numpy()
            for name in [k for k in layout if k.startswith("labels/")]:
                key = name.split("/", 1)[1]
                out[name][good] = torch.cat([items[i][1][1][key] for i in good]).numpy()
            out["valid"][good] = 1
        return out
    return forward


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

    attrs = {"model": model, "arch": mcfg["arch"], "weights": mcfg["weights"], "group": mcfg.get("group", ""),
             "dataset": dataset, "split": split, "shard": shard, "shards": shards,
             "checkpoint_sha256": _sha256_of(checkpoint), "timm_version": timm.__version__,
             "torch_version": torch.__version__, "transform": transform_desc,
             "signature": signature, "rows": [lo, hi]}
    writer = StoreWriter(out, n_rows, layout, attrs, config_hash)
    if writer.rows_done:
        log.info("resuming %s at row %d of %d", out, writer.rows_done, n_rows)
    start = writer.rows_done
    workers = cfg["extract"]["num_workers"]
    if ds["kind"] == "segfolder":
        data = SegImages(samples[start:], ds["label_sets"], ds["size"], mean, std, cfg["data"]["on_bad_image"])
        forward = _seg_forward(encoder, device, amp, ds["blocks"])
        images_per_batch = max(1, cfg["extract"]["batch_size"] // 4)
    else:
        part = index.iloc[start:].copy()
        data = PatchImages(part, transform, cfg["data"]["on_bad_image"])
        label_of = dict(zip(index["row"], index["label"]))
        base_forward = _part_forward(encoder, device, amp, arrays)

        def forward(items, skipped, layout):
            out = base_forward(items, skipped, layout)
            out["label"][:] = [label_of[r] for r in out["row"]]
            return out
        per_image = max(1.0, len(index) / max(1, index["image_path"].nunique()))
        images_per_batch = max(1, int(cfg["extract"]["batch_size"] / per_image))
    loader = torch.utils.data.DataLoader(
        data, batch_size=images_per_batch, shuffle=False, num_workers=workers, collate_fn=_collate,
        pin_memory=device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers else None)
    skipped = _run(loader, forward, writer, chunk_rows, layout)
    return writer.publish({"skipped_images": skipped, "precision": str(amp or "fp32"),
                           "device": str(device)})


def _sha256_of(path: Path | None) -> str:
    if path is None:
        return ""
    sidecar = Path(str(path) + ".sha256")
    if sidecar.exists():
        return sidecar.read_text().split()[0]
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
