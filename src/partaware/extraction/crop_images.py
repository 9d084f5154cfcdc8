"""Dense token maps of box-cropped images for the part-discovery task: one store row per image.

Each image is cropped to its object box (`data.box_crops`, Choudhury et al.'s "FG" variant, so
the token grid covers the object only) and resized to `size` x `size` (bicubic), then
normalised with the encoder's mean / std. A row holds `dense_final` (D, h, w) (final tokens),
`dense/<k>` (raw block k maps) as `dense_images` does, plus `keypoints` (P, 3) float32 (x, y in
box units, visible) and `box` (4,) float32 (x0, y0, w, h in pixels), so the store alone scores
its clusters. Stores: `train_crop<size>` and `test_crop<size>` (the crop is in the name and in
the store's signature: never confused with correspondence's uncropped `test_dense<size>`).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.images import describe_transform, patch_transform
from ..devices import autocast
from .dense_images import dense_maps
from .loaders import decode_or_skip, normalise, split_transform
from .crop_names import is_crop_store, split_of, store_name  # noqa: F401 (re-exported)
from .loop import batch_arrays, done_marker, to_host
from .plan import ExtractionPlan, shard_range

class CropImages(torch.utils.data.Dataset):
    """One item per image: (rows (1,), [uint8 (S, S, RGB) view of the box] or [None], reasons)."""

    def __init__(self, paths, boxes, rows, pil_steps, on_bad_image: str):
        self.paths, self.boxes, self.rows = paths, boxes, np.asarray(rows, np.int64)
        self.pil_steps, self.on_bad_image = pil_steps, on_bad_image

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        rows = self.rows[i:i + 1]
        image, skipped = decode_or_skip(self.paths[i], rows, self.on_bad_image)
        if skipped:
            return rows, [None], skipped[2]
        x0, y0, w, h = self.boxes[i]
        box = (round(x0), round(y0), max(round(x0 + w), round(x0) + 1), max(round(y0 + h), round(y0) + 1))
        return rows, [np.asarray(self.pil_steps(image.crop(box)))], []


def collate_crops(items):
    """-> (rows (n,), valid (n,) bool, views (n_valid, S, S, RGB) uint8, errors)."""
    rows = torch.from_numpy(np.concatenate([r for r, _, _ in items]))
    valid = torch.tensor([v[0] is not None for _, v, _ in items], dtype=torch.bool)
    good = [v[0] for _, v, _ in items if v[0] is not None]
    views = torch.from_numpy(np.stack(good)) if good else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    return rows, valid, views, [e for _, _, errs in items for e in errs]


def crop_step(encoder, device, amp, table, blocks, layout, keypoints, boxes):
    """The per-batch device function: maps of the valid views; `row`, `keypoints`, `box` of all rows
    (looked up by row in the plan's arrays)."""
    table = table.to(device)

    def step(batch):
        rows, valid, views, errors = batch
        maps = {}
        if len(views):
            x = normalise(views.to(device, non_blocking=True), table)
            with torch.inference_mode(), autocast(device, amp):
                maps = to_host(dense_maps(encoder, x, blocks), layout)
        wait = done_marker(device)

        def finish():
            wait()
            r = rows.numpy()
            known = {"row": r, "keypoints": keypoints[r], "box": boxes[r]}
            return batch_arrays(layout, valid.numpy(), known, {k: v.numpy() for k, v in maps.items()}), errors
        return finish
    return step


def crop_plan(cfg: dict, images, keypoints: np.ndarray, part_names: list[str], encoder, device, size: int,
              blocks, shard: int):
    """The ExtractionPlan of the box crops of `images` (`data.box_crops.box_keypoints`: `key`,
    `path`, `x0`, `y0`, `w`, `h`, one store row each) at input `size`, with the raw maps of `blocks`."""
    blocks = sorted({int(b) for b in blocks})
    lo, hi = shard_range(len(images), shard, cfg["extract"]["shards"])
    paths = images["path"].tolist()
    boxes = images[["x0", "y0", "w", "h"]].to_numpy(np.float32)
    mean, std = encoder.mean_std
    with torch.inference_mode():
        probe = dense_maps(encoder, torch.zeros(1, 3, size, size, device=device), blocks)
    dtype = cfg["cache"]["dtype"]
    layout = {name: (tuple(t.shape[1:]), dtype, 1) for name, t in probe.items()}
    chunk = cfg["cache"]["chunk_rows"]
    layout["keypoints"] = ((keypoints.shape[1], 3), "float32", chunk)
    layout["box"] = ((4,), "float32", chunk)
    pil_steps, table = split_transform(patch_transform("eval", size, size, mean, std))
    on_bad = cfg["data"]["on_bad_image"]
    view = describe_transform("eval", size, size, mean, std).replace("crop box (PIL, zero fill)", "object box")
    return ExtractionPlan(
        n_rows=hi - lo, layout=layout, transform=view, images=paths[lo:hi],
        resume_rows=images["key"].tolist()[lo:hi], rows=(lo, hi),
        loader_data=lambda start: CropImages(paths[lo + start:hi], boxes[lo + start:hi], np.arange(lo + start, hi),
                                             pil_steps, on_bad),
        collate=collate_crops,
        make_step=lambda enc, dev, amp: crop_step(enc, dev, amp, table, blocks, layout, keypoints, boxes),
        images_per_batch=max(1, cfg["extract"]["batch_size"] // 4),
        attrs={"image_keys": images["key"].tolist(), "image_paths": paths, "part_names": list(part_names),
               "input_size": int(size), "patch_size": int(encoder.patch_size),
               "protocol_note": f"object box cropped, resized to {size} x {size} (bicubic), dense final tokens"})
