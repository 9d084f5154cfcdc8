"""Keypoint pairs for the correspondence task: one table row per (pair, keypoint).

Columns (`COLUMNS`): `pair` (int64 id), `category`, `src_image` / `trg_image` (image keys, the
rows of the dense-feature store), `src_path` / `trg_path`, `part` (name), `src_x`, `src_y`,
`trg_x`, `trg_y` (original pixels), `visible` (the keypoint is visible in BOTH images: only these
are scored), `mirror_part` (the left/right counterpart's name, "" for none), `mirror_x`,
`mirror_y`, `mirror_visible` (the counterpart's location in the target, and whether it is
visible there), `trg_box` (max(height, width) of the target's object box: the PCK scale).

CUB: `n_pairs` ordered pairs of distinct test images of the same class, drawn without
replacement by `seed` from all such pairs (all of them when there are fewer), every one of the
15 parts per pair, among the images `keep` accepts (under `data.on_bad_image: skip`: those on
disk, so a partial copy gives the pairs its images allow). The table's `attrs` (kept in the
parquet file) say what the draw rested on: `images_left_out` (test images not kept),
`images_drawable` and `pairs_possible`. SPair-71k: `data.spair`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import cub
from .errors import DataError
from .parts import read_table

COLUMNS = ["pair", "category", "src_image", "trg_image", "src_path", "trg_path", "part", "src_x", "src_y",
           "trg_x", "trg_y", "visible", "mirror_part", "mirror_x", "mirror_y", "mirror_visible", "trg_box"]
_SIDE = re.compile(r"^(left|right)([ _-].+)$")


def mirror_names(names) -> dict[str, str]:
    """name -> its left/right counterpart among `names` (`left eye` <-> `right eye`, also
    `left_wing` / `right-wing`); names without one are left out."""
    names = set(names)
    out = {}
    for name in names:
        m = _SIDE.match(name)
        if m:
            other = ("right" if m.group(1) == "left" else "left") + m.group(2)
            if other in names:
                out[name] = other
    return out


def draw_same_class_pairs(classes: dict, n_pairs: int, seed: int) -> list[tuple]:
    """`n_pairs` distinct ordered pairs (a, b), a != b, of members of one class, uniformly
    without replacement over all such pairs (all of them if there are fewer), sorted by class
    then position; `classes` maps a class to its members in a fixed order."""
    groups = [(c, list(m)) for c, m in sorted(classes.items()) if len(m) > 1]
    sizes = np.array([len(m) * (len(m) - 1) for _, m in groups], np.int64)
    total = int(sizes.sum())
    if total == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=min(n_pairs, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    out = []
    for k in picks.tolist():
        g = int(np.searchsorted(starts, k, side="right")) - 1
        members = groups[g][1]
        i, j = divmod(k - int(starts[g]), len(members) - 1)
        out.append((members[i], members[j + (j >= i)]))
    return out


def cub_pairs(root: str | os.PathLike, n_pairs: int = 10000, seed: int = 0, split: str = "test",
              max_images: int | None = None, keep=None) -> pd.DataFrame:
    """The pair table of a CUB-layout dataset (see the module docstring); `keep(path)`: whether
    an image file may enter the draw (default: all)."""
    root = Path(root).expanduser().absolute()
    if not (root / "images.txt").is_file():
        raise DataError(f"{root / 'images.txt'}: CUB file not found; {cub.ROOT_FIX}")
    images = cub.read_images(root)
    if max_images is not None:
        images = dict(list(images.items())[:max_images])
    splits = cub.read_split(root, list(images))
    labels = cub.read_class_labels(root)
    boxes = cub.read_boxes(root)
    parts = cub.read_parts(root)
    locs = cub.read_all_locs(root, cub.read_images(root), parts)
    candidates = [i for i in images if splits[i] == split]
    use = [i for i in candidates if keep is None or keep(root / "images" / images[i])]
    for what, table in (("image_class_labels.txt", labels), ("bounding_boxes.txt", boxes)):
        missing = [i for i in use if i not in table]
        if missing:
            raise DataError(f"{root / what}: no entry for image id(s) {missing[:5]}; use the {what} that "
                            "belongs to this images.txt")
    by_class: dict[int, list[int]] = {}
    for i in use:
        by_class.setdefault(labels[i], []).append(i)
    mirror_of = mirror_names(parts.values())
    id_of = {name: pid for pid, name in parts.items()}
    rows = []
    drawn = draw_same_class_pairs(by_class, n_pairs, seed)
    for n, (a, b) in enumerate(drawn):
        ka, kb = locs.get(a, {}), locs.get(b, {})
        _, _, bw, bh = boxes[b]
        for pid, name in sorted(parts.items()):
            sx, sy, sv = ka.get(pid, (0.0, 0.0, False))
            tx, ty, tv = kb.get(pid, (0.0, 0.0, False))
            mname = mirror_of.get(name, "")
            mx, my, mv = kb.get(id_of[mname], (0.0, 0.0, False)) if mname else (0.0, 0.0, False)
            rows.append((n, str(labels[a]), str(a), str(b), str(root / "images" / images[a]),
                         str(root / "images" / images[b]), name, sx, sy, tx, ty, sv and tv, mname, mx, my, mv,
                         float(max(bw, bh))))
    out = typed(pd.DataFrame(rows, columns=COLUMNS))
    out.attrs.update(images_left_out=len(candidates) - len(use), images_drawable=len(use),
                     pairs_possible=sum(len(m) * (len(m) - 1) for m in by_class.values()))
    return out


def draw_messages(drawn: dict, wanted: int) -> list[str]:
    """Log lines on what a CUB pair draw rested on: test images left out (not on disk), and all
    the pairs the images allow when they are fewer than `correspondence.pairs`."""
    out = []
    if drawn.get("images_left_out"):
        out.append(f"{drawn['images_left_out']} test images not on disk left out of the pair draw "
                   f"(data.on_bad_image: skip); drawn among the {drawn['images_drawable']} on disk")
    if drawn.get("pairs_possible", wanted) < wanted:
        out.append(f"the {drawn['images_drawable']} usable test images allow {drawn['pairs_possible']} same-class "
                   f"pairs, fewer than correspondence.pairs ({wanted}): all of them are used")
    return out


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """The pair table with its column types fixed (parquet round trips keep them)."""
    return df.astype({"pair": "int64", "category": str, "src_image": str, "trg_image": str, "src_path": str,
                      "trg_path": str, "part": str, "src_x": "float64", "src_y": "float64", "trg_x": "float64",
                      "trg_y": "float64", "visible": bool, "mirror_part": str, "mirror_x": "float64",
                      "mirror_y": "float64", "mirror_visible": bool, "trg_box": "float64"})[COLUMNS]


def image_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """The images the pairs name, once each, sorted by key: `key`, `path` (the rows of the
    dense-feature store)."""
    both = pd.concat([pairs[["src_image", "src_path"]].set_axis(["key", "path"], axis=1),
                      pairs[["trg_image", "trg_path"]].set_axis(["key", "path"], axis=1)])
    return both.drop_duplicates("key").sort_values("key", kind="stable").reset_index(drop=True)


def write_pairs(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """results/index/<dataset>/pairs.parquet, published by rename."""
    from ..atomic import atomic_path

    table = typed(pairs)
    table.attrs = {k: int(v) for k, v in pairs.attrs.items()}  # what the draw rested on, in the file
    with atomic_path(Path(path)) as tmp:
        table.to_parquet(tmp, index=False)


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    return typed(read_table(path, COLUMNS, "pair table", "the pair_table rule, `partaware pairs`"))


def missing_pair_image(pair_file, images, on_bad_image: str) -> str | None:
    """The message of a listed pair whose image is not on disk (None when both are): an error
    naming the file and the fix, or, under `data.on_bad_image: skip`, the message to count."""
    missing = [str(p) for p in images if not Path(p).is_file()]
    if not missing:
        return None
    message = f"{pair_file}: image {missing[0]} not found"
    if on_bad_image != "skip":
        raise DataError(f"{message}; restore it, or set `data.on_bad_image: skip` to leave such pairs out")
    return message
