"""A tiny synthetic image-classification dataset in the ImageFolder layout of `kind: imagefolder`.

For running the object-level probes end to end without ImageNet: one textured shape per image
(a dotted disc, a striped square, a checked triangle) at a random place, size and colour jitter
on a noisy background, in images of random size (not square, so the resize of the shorter side
and the centre crop both matter).

    <out>/train/<class>/<class>_<0000>.JPEG
    <out>/val/<class>/<class>_<0000>.JPEG
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

DEMO_CLASSES = ("disc", "square", "triangle")


def _shape(kind: int, cx, cy, r, yy, xx) -> np.ndarray:
    if kind == 0:
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
    if kind == 1:
        return (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
    return (yy <= cy + r) & (yy >= cy - r) & (abs(xx - cx) <= (yy - cy + r) / 2)


def _texture(kind: int, yy, xx, rng) -> np.ndarray:
    ph = rng.uniform(0, 8)
    if kind == 0:    # red with light dots
        t = np.sin(xx * 1.2 + ph) * np.sin(yy * 1.2 + ph) > 0.5
        col = (200, 50, 40), (250, 200, 190)
    elif kind == 1:  # blue, horizontal stripes
        t = ((yy + ph) // 3) % 2 == 0
        col = (50, 80, 200), (200, 210, 250)
    else:            # green checks
        t = (((xx + ph) // 4) + ((yy + ph) // 4)) % 2 == 0
        col = (40, 150, 60), (20, 70, 30)
    t = np.asarray(t, np.float32)[..., None]
    return (1 - t) * np.array(col[0]) + t * np.array(col[1]) + rng.uniform(-25, 25, 3)


def _render(kind: int, rng: np.random.Generator, min_side: int, max_side: int) -> np.ndarray:
    w, h = (int(v) for v in rng.integers(min_side, max_side + 1, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.uniform(80, 180, 3) + 30 * (xx / w - 0.5)[..., None] + rng.normal(0, 10, (h, w, 3))
    side = min(w, h)
    r = rng.uniform(0.2, 0.35) * side
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    mask = _shape(kind, cx, cy, r, yy, xx)
    img[mask] = _texture(kind, yy, xx, rng)[mask]
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def generate_demo_imagefolder(out_dir: str | os.PathLike, n_train: int = 8, n_val: int = 4, n_classes: int = 3,
                              min_side: int = 64, max_side: int = 96, seed: int = 0,
                              splits: tuple[str, str] = ("train", "val")) -> Path:
    """Write `n_train` / `n_val` JPEGs per class (classes: the first `n_classes` of DEMO_CLASSES)
    under `out_dir`; the same arguments give byte-identical files. Each (split, class) has its own
    random stream, so changing n_val leaves train alone."""
    if not 1 <= n_classes <= len(DEMO_CLASSES):
        raise ValueError(f"n_classes must be 1..{len(DEMO_CLASSES)}, got {n_classes}")
    out = Path(out_dir)
    for split_no, (split, n) in enumerate(zip(splits, (n_train, n_val))):
        for kind, name in enumerate(DEMO_CLASSES[:n_classes]):
            rng = np.random.default_rng([seed, split_no, kind])
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(_render(kind, rng, min_side, max_side)).save(
                    folder / f"{name}_{i:04d}.JPEG", format="JPEG", quality=92)
    return out
