"""CUB-200-2011 part keypoints -> part patches (PROTOCOL.md section 2).

Reads the official text files under `root` (the folder holding `images.txt`):
`images.txt` (`id relative/path.jpg`), `train_test_split.txt` (`id is_train`),
`parts/parts.txt` (`id name`, names contain spaces), `parts/part_locs.txt`
(`image_id part_id x y visible`, 15 rows an image). Every line is validated; a bad one raises
`DataError` naming the file and line.

As the released code: only visible keypoints of the selected parts are used; d is taken per
image over those keypoints only; keypoints outside the image are kept (PIL zero-fills the crop).
Unlike the released code, image paths are looked up by id instead of by line position.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, at
from .geometry import crop_box, keep, nearest_other_distance

DEFAULT_PARTS = (11, 12, 9, 14)  # right eye, right leg, left wing, tail
ROOT_FIX = "set the dataset's `root` to the CUB_200_2011 folder that holds images.txt, parts/ and images/"


def _lines(path: Path, ncols: int, maxsplit: int = -1) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) of the non-blank lines, each with exactly `ncols` fields."""
    if not path.is_file():
        raise DataError(f"{path}: CUB file not found; {ROOT_FIX}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            fields = line.split(None, maxsplit)
            if not fields:
                continue
            if len(fields) != ncols:
                raise DataError(
                    f"{at(path, n)}: expected {ncols} columns, found {len(fields)} in {line.strip()!r}; "
                    "restore this line from the official CUB-200-2011 archive"
                )
            yield n, fields


def _number(kind: type, text: str, path: Path, n: int, what: str):
    try:
        return kind(text)
    except ValueError:
        raise DataError(
            f"{at(path, n)}: {what} {text!r} is not a valid {kind.__name__}; "
            "restore this line from the official CUB-200-2011 archive"
        ) from None


def read_images(root: Path) -> dict[int, str]:
    """image id -> path relative to `root/images`, in file order."""
    path = root / "images.txt"
    out: dict[int, str] = {}
    for n, (i, rel) in _lines(path, 2, maxsplit=1):
        out[_number(int, i, path, n, "image id")] = rel.strip()
    return out


def read_split(root: Path, image_ids: Sequence[int]) -> dict[int, str]:
    """image id -> 'train' | 'test' for every id in images.txt (1 = train, 0 = test)."""
    path = root / "train_test_split.txt"
    out: dict[int, str] = {}
    for n, (i, flag) in _lines(path, 2):
        if flag not in ("0", "1"):
            raise DataError(f"{at(path, n)}: is_train must be 0 or 1, found {flag!r}; fix the line")
        out[_number(int, i, path, n, "image id")] = "train" if flag == "1" else "test"
    missing = [i for i in image_ids if i not in out]
    if missing:
        raise DataError(
            f"{path}: no train/test entry for {len(missing)} image id(s) of images.txt, e.g. {missing[:5]}; "
            "use the train_test_split.txt that belongs to this images.txt"
        )
    return out


def read_parts(root: Path) -> dict[int, str]:
    """part id -> name (`7 left eye`: the name is everything after the first space)."""
    path = root / "parts" / "parts.txt"
    return {_number(int, i, path, n, "part id"): name.strip() for n, (i, name) in _lines(path, 2, maxsplit=1)}


def read_visible_locs(
    root: Path, images: dict[int, str], parts: dict[int, str], wanted: set[int], use: set[int]
) -> list[tuple[int, int, float, float]]:
    """Visible keypoints (image_id, part_id, x, y) of the `wanted` parts in images `use`.

    Every line is checked, also those of other images, so a damaged file fails early.
    """
    path = root / "parts" / "part_locs.txt"
    seen: set[tuple[int, int]] = set()
    out = []
    for n, (i, p, x, y, v) in _lines(path, 5):
        image_id = _number(int, i, path, n, "image id")
        part_id = _number(int, p, path, n, "part id")
        xf, yf = _number(float, x, path, n, "x"), _number(float, y, path, n, "y")
        if image_id not in images:
            raise DataError(f"{at(path, n)}: image id {image_id} is not in images.txt; {ROOT_FIX}")
        if part_id not in parts:
            raise DataError(
                f"{at(path, n)}: part id {part_id} is not in parts/parts.txt (ids {min(parts)}..{max(parts)}); "
                "use the parts.txt that belongs to this part_locs.txt"
            )
        if v not in ("0", "1"):
            raise DataError(f"{at(path, n)}: visible must be 0 or 1, found {v!r}; fix the line")
        if (image_id, part_id) in seen:
            raise DataError(f"{at(path, n)}: second row for image {image_id}, part {part_id}; delete the duplicate")
        seen.add((image_id, part_id))
        if v == "1" and part_id in wanted and image_id in use:
            out.append((image_id, part_id, xf, yf))
    return out


def check_part_ids(part_ids: Sequence[int], names: dict[int, str], source: os.PathLike | str) -> None:
    """Configured part ids must exist and be distinct (the label is their position in the list)."""
    unknown = [p for p in part_ids if p not in names]
    if unknown:
        valid = ", ".join(f"{k} {v}" for k, v in sorted(names.items()))
        raise DataError(f"{source}: part id(s) {unknown} from the dataset's `parts` are unknown; valid: {valid}")
    if len(set(part_ids)) != len(part_ids):
        raise DataError(f"dataset `parts` {list(part_ids)} lists a part twice; list each part id once")


def cub_patches(root: str | os.PathLike, part_ids: Sequence[int] = DEFAULT_PARTS, max_images: int | None = None) -> pd.DataFrame:
    """Part patches of a CUB-layout dataset, sorted by image id then part id.

    Columns: image_id, image_path, part_id, part_name, x, y, d, x0, y0, x1, y1, split.
    `max_images` keeps the first N images of images.txt (quick runs, test fixtures).
    """
    root = Path(root).expanduser().absolute()
    if not (root / "images.txt").is_file():
        raise DataError(f"{root / 'images.txt'}: CUB file not found; {ROOT_FIX}")
    images = read_images(root)
    split = read_split(root, list(images))
    names = read_parts(root)
    check_part_ids(part_ids, names, root / "parts" / "parts.txt")
    use = set(list(images)[:max_images] if max_images is not None else images)
    locs = read_visible_locs(root, images, names, set(part_ids), use)

    by_image: dict[int, list[tuple[int, float, float]]] = {}
    for image_id, part_id, x, y in sorted(locs):
        by_image.setdefault(image_id, []).append((part_id, x, y))
    rows = []
    for image_id, kps in by_image.items():
        d = nearest_other_distance(np.array([(x, y) for _, x, y in kps]).reshape(-1, 2))
        for (part_id, x, y), di in zip(kps, d):
            if keep(di):
                rows.append((image_id, str(root / "images" / images[image_id]), part_id, names[part_id],
                             x, y, float(di), *crop_box(x, y, di), split[image_id]))
    return pd.DataFrame(rows, columns=["image_id", "image_path", "part_id", "part_name", "x", "y", "d",
                                       "x0", "y0", "x1", "y1", "split"])


# ------------------------------------------------------------------ keypoint pairs (correspondence)
def read_class_labels(root: Path) -> dict[int, int]:
    """image id -> class id (`image_class_labels.txt`)."""
    path = root / "image_class_labels.txt"
    return {_number(int, i, path, n, "image id"): _number(int, c, path, n, "class id")
            for n, (i, c) in _lines(path, 2)}


def read_boxes(root: Path) -> dict[int, tuple[float, float, float, float]]:
    """image id -> object box (x, y, width, height) in pixels (`bounding_boxes.txt`)."""
    path = root / "bounding_boxes.txt"
    out = {}
    for n, (i, *box) in _lines(path, 5):
        x, y, w, h = (_number(float, v, path, n, "box value") for v in box)
        if w <= 0 or h <= 0:
            raise DataError(f"{at(path, n)}: box width {w} / height {h} must be positive; fix the line")
        out[_number(int, i, path, n, "image id")] = (x, y, w, h)
    return out


def read_all_locs(root: Path, images: dict[int, str], parts: dict[int, str]) -> dict[int, dict[int, tuple[float, float, bool]]]:
    """image id -> {part id: (x, y, visible)} for every row of `parts/part_locs.txt`, checked as
    `read_visible_locs` checks it."""
    path = root / "parts" / "part_locs.txt"
    out: dict[int, dict[int, tuple[float, float, bool]]] = {}
    for n, (i, p, x, y, v) in _lines(path, 5):
        image_id = _number(int, i, path, n, "image id")
        part_id = _number(int, p, path, n, "part id")
        if image_id not in images:
            raise DataError(f"{at(path, n)}: image id {image_id} is not in images.txt; {ROOT_FIX}")
        if part_id not in parts:
            raise DataError(f"{at(path, n)}: part id {part_id} is not in parts/parts.txt; "
                            "use the parts.txt that belongs to this part_locs.txt")
        if v not in ("0", "1"):
            raise DataError(f"{at(path, n)}: visible must be 0 or 1, found {v!r}; fix the line")
        kps = out.setdefault(image_id, {})
        if part_id in kps:
            raise DataError(f"{at(path, n)}: second row for image {image_id}, part {part_id}; delete the duplicate")
        kps[part_id] = (_number(float, x, path, n, "x"), _number(float, y, path, n, "y"), v == "1")
    return out
