"""What a result row rests on: the images it used, the images its stores skipped, and the
smallest class among its samples, so the table can say when a number rests on too little.

Result rows carry `images` (images with at least one usable row, over every store the row
read), `skipped` (images left out under `data.on_bad_image: skip`), `skipped_rows` (store
rows with `valid` 0: patches for part datasets, images otherwise) and, where samples have a
class, `min_class_n` (samples of the rarest class the metric averages over).
"""
from __future__ import annotations

import numpy as np


def store_coverage(store, valid: np.ndarray) -> dict:
    """{"images", "skipped", "skipped_rows"} of one store. Part stores map rows to images with
    their `image` array; other stores hold one row per image. A part store extracted before
    stores kept `image` counts its skipped images from its `skipped_images` list, and its used
    images as unknown (-1) when its rows are not one per image."""
    valid = np.asarray(valid, bool)
    rows = int((~valid).sum())
    if "image" in store.array_names():
        ids = np.asarray(store.read("image"))
        used = np.unique(ids[valid])
        skipped = np.setdiff1d(np.unique(ids[~valid]), used)
        return {"images": int(len(used)), "skipped": int(len(skipped)), "skipped_rows": rows}
    listed = store.attrs.get("skipped_images")
    if not listed or len(listed) == rows:  # one row per image
        return {"images": int(valid.sum()), "skipped": rows, "skipped_rows": rows}
    return {"images": -1, "skipped": len(listed), "skipped_rows": rows}


def combined(*parts: dict) -> dict:
    """The coverage of a row that read several stores (a probe's train and test)."""
    out = {k: sum(p[k] for p in parts) for k in ("images", "skipped", "skipped_rows")}
    if any(p["images"] < 0 for p in parts):
        out["images"] = -1
    return out


def min_class_count(labels) -> int:
    """Samples in the rarest class present (0 without samples)."""
    labels = np.asarray(labels).reshape(-1)
    return int(np.unique(labels, return_counts=True)[1].min()) if len(labels) else 0


def share_used(images, skipped) -> float:
    """The share (0..1) of a dataset's images a row used; NaN when unknown."""
    if images is None or skipped is None or np.isnan(images) or images < 0:
        return float("nan")
    total = images + skipped
    return float(images / total) if total else float("nan")
