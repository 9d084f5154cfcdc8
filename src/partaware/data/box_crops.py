"""The images of a CUB-layout split with their object box and every keypoint in box units: the
rows of the part-discovery stores (task `part_discovery`, Choudhury et al.'s "FG" variant: each
image cropped to its ground-truth box).

`box_keypoints(root, split, max_images)` -> (`images`: `key` (image id as text), `path`, `x0`,
`y0`, `w`, `h` (the box in pixels), in images.txt order; `keypoints` (n, P, 3) float32: per part
(parts.txt order) x and y in box units ((x - x0) / w, (y - y0) / h) and visible (1 / 0; an
invisible keypoint is all zeros); the P part names).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import cub
from .errors import DataError


def box_keypoints(root: str | os.PathLike, split: str, max_images: int | None = None):
    root = Path(root).expanduser().absolute()
    if not (root / "images.txt").is_file():
        raise DataError(f"{root / 'images.txt'}: CUB file not found; {cub.ROOT_FIX}")
    every = cub.read_images(root)
    images = dict(list(every.items())[:max_images]) if max_images is not None else every
    splits = cub.read_split(root, list(images))
    boxes = cub.read_boxes(root)
    parts = cub.read_parts(root)
    locs = cub.read_all_locs(root, every, parts)
    use = [i for i in images if splits[i] == split]
    missing = [i for i in use if i not in boxes]
    if missing:
        raise DataError(f"{root / 'bounding_boxes.txt'}: no box for image id(s) {missing[:5]}; use the "
                        "bounding_boxes.txt that belongs to this images.txt")
    flat = [i for i in use if boxes[i][2] <= 0 or boxes[i][3] <= 0]
    if flat:
        raise DataError(f"{root / 'bounding_boxes.txt'}: image id {flat[0]} has an empty box {boxes[flat[0]]}; "
                        "width and height must be positive")
    pids = sorted(parts)
    kp = np.zeros((len(use), len(pids), 3), np.float32)
    for n, i in enumerate(use):
        x0, y0, w, h = boxes[i]
        for j, pid in enumerate(pids):
            x, y, vis = locs.get(i, {}).get(pid, (0.0, 0.0, False))
            if vis:
                kp[n, j] = ((x - x0) / w, (y - y0) / h, 1.0)
    table = pd.DataFrame({"key": [str(i) for i in use], "path": [str(root / "images" / images[i]) for i in use],
                          "x0": [float(boxes[i][0]) for i in use], "y0": [float(boxes[i][1]) for i in use],
                          "w": [float(boxes[i][2]) for i in use], "h": [float(boxes[i][3]) for i in use]})
    return table, kp, [parts[p] for p in pids]
