"""Feature maps: what a block's token map separates, shown as its first three principal
components in RGB, beside the image and its part labels.

The PCA is fitted per encoder over the tokens of all shown images together (not per image), so
one colour means one direction of that encoder's feature space across the row of images. Each
component is scaled to [0, 1] by its 1st..99th percentile, so a few outlier tokens (high-norm
"register" tokens are common in ViTs) do not wash the map out. The image is the cached fixed
view (`segfolder.seg_view`, the dataset's `size`); the labels are the store's, i.e. exactly what
the segmentation probe is trained on.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.errors import DataError
from ..data.images import load_rgb
from ..data.segfolder import list_samples, seg_view
from ..store import open_store
from . import tiles as T

MARGIN, PAD = 8, 6


def pca_rgb(maps: np.ndarray) -> np.ndarray:
    """(n, D, h, w) token maps -> (n, h, w, 3) floats in [0, 1]: the first three principal
    components over all n*h*w tokens; signs fixed (largest loading positive) so reruns agree."""
    n, d, h, w = maps.shape
    x = np.nan_to_num(maps.astype(np.float64)).transpose(0, 2, 3, 1).reshape(-1, d)
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:3]
    comps *= np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])[:, None]
    y = x @ comps.T
    if y.shape[1] < 3:  # fewer than three dimensions or tokens
        y = np.pad(y, ((0, 0), (0, 3 - y.shape[1])))
    lo, hi = np.percentile(y, 1, axis=0), np.percentile(y, 99, axis=0)
    y = np.clip((y - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return y.reshape(n, h, w, 3)


def last_block(store, blocks: Sequence[int] | None) -> str:
    """`layers/<b>` of the last configured block, else the deepest one the store holds."""
    have = sorted((int(n.split("/")[1]) for n in store.array_names() if n.startswith("layers/")))
    if not have:
        raise DataError(f"{store.paths[0]}: no layers/<block> arrays; not a segmentation store")
    b = blocks[-1] if blocks else have[-1]
    if b not in have:
        raise DataError(f"{store.paths[0]}: block {b} is not cached (it has {have}); rerun extraction")
    return f"layers/{b}"


def pick_images(store_valid: list[np.ndarray], n: int, seed: int) -> list[int]:
    """`n` seeded-random store positions valid in every store, in ascending order."""
    ok = np.logical_and.reduce(store_valid)
    candidates = np.flatnonzero(ok)
    if not len(candidates):
        raise DataError("no image is valid in every store; nothing to show")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(candidates, size=min(n, len(candidates)), replace=False))


def maps_geometry(n_images: int, n_models: int, cell: int) -> dict:
    """Pixel layout: columns image, labels, one per model; two title lines over each column."""
    row_h = cell + T.LINE + PAD
    head = 2 * T.LINE + 4

    def origin(r: int, c: int) -> tuple[int, int]:
        return MARGIN + c * (cell + PAD), MARGIN + head + r * row_h

    width = 2 * MARGIN + (n_models + 2) * cell + (n_models + 1) * PAD
    height = 2 * MARGIN + head + n_images * row_h - PAD
    return {"width": width, "height": height, "origin": origin}


def feature_maps(root, split: str, label_dirs: Mapping[str, str], stores: Mapping[str, str | Path], out,
                 size: int, blocks: Sequence[int] | None = None, label_set: str | None = None,
                 n_images: int = 4, seed: int = 0, cell: int = 128, samples: list[dict] | None = None) -> dict:
    """Draw image | part labels | PCA of each model's last block, for a few images of one split.
    `stores` maps model names (column order) to their stores of `split`; `samples` (the kind's
    `samples(ds, split)`, in store row order) default to the mmseg layout's `list_samples`."""
    opened = {m: open_store(p) for m, p in stores.items()}
    try:
        first = next(iter(opened.values()))
        names = first.array_names()
        valid = [s.read("valid").astype(bool) if "valid" in s.array_names() else np.ones(s.n_rows, bool)
                 for s in opened.values()]
        positions = pick_images(valid, n_images, seed)
        sets = [n.split("/", 1)[1] for n in names if n.startswith("labels/")]
        label_set = label_set or ("part" if "part" in sets else (sets[0] if sets else None))
        rows = [int(first.read("row", p, p + 1)[0]) for p in positions]
        labels = [first.read(f"labels/{label_set}", p, p + 1)[0] for p in positions] if label_set else None
        rgb, used = {}, {}
        for model, store in opened.items():
            used[model] = last_block(store, blocks)
            maps = np.concatenate([store.read(used[model], p, p + 1) for p in positions])
            rgb[model] = pca_rgb(maps)
    finally:
        for store in opened.values():
            store.close()

    samples = samples if samples is not None else list_samples(root, split, dict(label_dirs))
    geo = maps_geometry(len(positions), len(opened), cell)
    canvas = Image.new("RGB", (geo["width"], geo["height"]), T.WHITE)
    draw = ImageDraw.Draw(canvas)
    fnt, small = T.font(12), T.font(10)
    heads = [("image", f"{split}, {size} px view"), ("labels", label_set or "-")]
    heads += [(m, f"PCA of {used[m].replace('layers/', 'block ')}") for m in opened]
    for c, lines in enumerate(heads):
        x, y = geo["origin"](0, c)
        for i, line in enumerate(lines):
            draw.text((x, y - (2 - i) * T.LINE - 2), T.fit_text(draw, line, cell, fnt if i == 0 else small),
                      fill=T.TEXT if i == 0 else T.GREY, font=fnt if i == 0 else small)
    for r, row in enumerate(rows):
        image = load_rgb(samples[row]["img"])
        view, _ = seg_view(image, np.zeros((image.height, image.width), np.uint8), size)
        tiles = [view.resize((cell, cell), Image.Resampling.BICUBIC)]
        tiles.append(T.colour_labels(labels[r]).resize((cell, cell), Image.Resampling.NEAREST)
                     if labels is not None else Image.new("RGB", (cell, cell), T.GREY))
        for model in opened:
            pcs = Image.fromarray((255 * rgb[model][r]).round().astype(np.uint8))
            tiles.append(pcs.resize((cell, cell), Image.Resampling.NEAREST))
        for c, tile in enumerate(tiles):
            canvas.paste(tile, geo["origin"](r, c))
        x, y = geo["origin"](r, 0)
        draw.text((x, y + cell + 1), T.fit_text(draw, str(samples[row]["id"]), cell, small),
                  fill=T.GREY, font=small)
    T.save_png(canvas, out)
    return {"rows": rows, "label_set": label_set, "arrays": used, "size": canvas.size}
