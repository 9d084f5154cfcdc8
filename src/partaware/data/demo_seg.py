"""A tiny synthetic part/object segmentation dataset in the mmseg layout of `segfolder`.

For running the segmentation pipeline end to end without downloads: objects of 3 kinds,
each made of 2 parts with their own colour and texture, on a noisy background.

    <out>/img/{train,val}/<0000>.jpg
    <out>/ann/{train,val}/<0000>.png          parts 1..6, 0 = background
    <out>/ann_object/{train,val}/<0000>.png   objects 1..3, 0 = background

Both label maps are painted together (later objects occlude earlier ones), so every part
pixel lies in a pixel of its parent object: `DEMO_PART_PARENT[part] == object`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from partaware.data.segfolder import atomic_save

DEMO_OBJECT_NAMES = ("house", "tree", "mushroom")  # object labels 1..3
DEMO_PART_NAMES = (  # part labels 1..6
    "house_roof", "house_wall", "tree_crown", "tree_trunk", "mushroom_cap", "mushroom_stem",
)
# part label -> parent object label (index 0 = background -> 0)
DEMO_PART_PARENT = np.array([0, 1, 1, 2, 2, 3, 3], dtype=np.uint8)


def _texture(kind: str, yy, xx, rng) -> np.ndarray:
    """(H, W, 3) float texture of one part; random phase and colour jitter per instance."""
    ph, jit = rng.uniform(0, 10), rng.uniform(-20, 20, 3)
    if kind == "house_roof":  # red, diagonal stripes
        t = ((xx + yy + ph) // 4) % 2
        col = np.array([200, 40, 30]), np.array([120, 20, 20])
    elif kind == "house_wall":  # blue bricks
        t = (((yy + ph) % 8) < 1.5) | ((((xx + ph) + 6 * ((yy + ph) // 8 % 2)) % 12) < 1.5)
        col = np.array([60, 90, 200]), np.array([230, 230, 230])
    elif kind == "tree_crown":  # green, dotted
        t = (np.sin(xx * 1.3 + ph) * np.sin(yy * 1.3 + ph) > 0.5)
        col = np.array([40, 160, 50]), np.array([150, 220, 90])
    elif kind == "tree_trunk":  # brown, vertical stripes
        t = ((xx + ph) // 3) % 2
        col = np.array([110, 70, 30]), np.array([70, 40, 20])
    elif kind == "mushroom_cap":  # purple with white polka dots
        t = ((xx + ph) % 10 - 5) ** 2 + ((yy + ph) % 10 - 5) ** 2 < 6
        col = np.array([150, 40, 160]), np.array([245, 245, 245])
    else:  # mushroom_stem: pale yellow, horizontal stripes
        t = ((yy + ph) // 3) % 2
        col = np.array([240, 220, 140]), np.array([200, 180, 100])
    t = np.asarray(t, dtype=np.float32)[..., None]
    return (1 - t) * col[0] + t * col[1] + jit


def _part_masks(kind: int, cx: float, cy: float, s: float, yy, xx) -> list[np.ndarray]:
    """Boolean masks of an object's parts, in painting order (both parts in DEMO order)."""
    if kind == 1:  # house: triangular roof on a square wall
        wall = (abs(xx - cx) <= s / 2) & (yy >= cy) & (yy <= cy + 0.8 * s)
        top = cy - 0.6 * s  # roof apex; the roof widens linearly to 0.65 s at the wall
        roof = (yy < cy) & (yy >= top) & (abs(xx - cx) <= 0.65 * s * (yy - top) / (0.6 * s))
        return [roof, wall]
    if kind == 2:  # tree: round crown over a trunk
        trunk = (abs(xx - cx) <= 0.12 * s) & (yy >= cy) & (yy <= cy + 0.9 * s)
        crown = (xx - cx) ** 2 + (yy - cy + 0.2 * s) ** 2 <= (0.5 * s) ** 2
        return [crown, trunk & ~crown]
    # mushroom: half-ellipse cap over a stem
    cap = (yy <= cy) & (((xx - cx) / (0.6 * s)) ** 2 + ((yy - cy) / (0.45 * s)) ** 2 <= 1)
    stem = (abs(xx - cx) <= 0.15 * s) & (yy > cy) & (yy <= cy + 0.7 * s)
    return [cap, stem]


def _render(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(90, 170, 3)
    img = base + 25 * (yy / size - 0.5)[..., None] + rng.normal(0, 8, (size, size, 3))
    parts = np.zeros((size, size), np.uint8)
    objs = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(1, 4))
        s = rng.uniform(0.25, 0.45) * size
        cx, cy = rng.uniform(0.2, 0.8) * size, rng.uniform(0.3, 0.6) * size
        for k, mask in enumerate(_part_masks(kind, cx, cy, s, yy, xx)):
            pid = 2 * kind - 1 + k
            img[mask] = _texture(DEMO_PART_NAMES[pid - 1], yy, xx, rng)[mask]
            parts[mask], objs[mask] = pid, kind
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img, parts, objs


def generate_demo_seg(
    out_dir: str | os.PathLike, n_train: int = 24, n_val: int = 12, size: int = 128, seed: int = 0
) -> Path:
    """Write the demo dataset under `out_dir`; same seed -> byte-identical files.

    Each split has its own random stream (seed, split), so changing n_val leaves train alone.
    """
    out = Path(out_dir)
    for split_no, (split, n) in enumerate((("train", n_train), ("val", n_val))):
        rng = np.random.default_rng([seed, split_no])
        for i in range(n):
            img, parts, objs = _render(rng, size)
            atomic_save(Image.fromarray(img), out / "img" / split / f"{i:04d}.jpg", quality=95)
            atomic_save(Image.fromarray(parts), out / "ann" / split / f"{i:04d}.png")
            atomic_save(Image.fromarray(objs), out / "ann_object" / split / f"{i:04d}.png")
    return out
