"""COCO person keypoints -> part patches (PROTOCOL.md section 2).

One call reads one split: a `person_keypoints_*.json` and its image folder (train2017 is the
retrieval set and the probes' train split, val2017 their test split).

As the released code (`PatchLoaderCOCO`): only keypoints with v == 2 (labelled and visible) of
the selected ids count; a person needs at least two of them, else it is skipped entirely;
d is taken per image over all kept persons' keypoints as (x, y, annotation_id) triples, so
keypoints of different persons are also separated by the difference of their annotation ids
(in practice persons never see each other: ids differ by thousands). Crowd annotations are not
treated specially (they have no keypoints). Within an image, rows keep the released order:
annotation order in the file, then keypoint id; images are sorted by id.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .geometry import crop_box, keep, nearest_other_distance

DEFAULT_KEYPOINTS = (1, 11, 16)  # nose, right wrist, left ankle (1-based)
COCO_KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def load_json(path: Path) -> dict:
    """The annotation file, or a DataError naming it (and the line of a syntax error)."""
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found; set `annotations` to a person_keypoints_*.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); re-download the annotation file") from None
    for key in ("images", "annotations"):
        if not isinstance(data, dict) or key not in data:
            raise DataError(f"{path}: no `{key}` list; this is not a COCO person-keypoints file")
    return data


def keypoint_names(data: dict) -> list[str]:
    """Names from the person category (1-based ids index this list), else COCO's 17."""
    for cat in data.get("categories", []):
        if cat.get("keypoints"):
            return list(cat["keypoints"])
    return list(COCO_KEYPOINT_NAMES)


def check_keypoint_ids(ids: Sequence[int], names: list[str], path: Path) -> None:
    bad = [k for k in ids if not (isinstance(k, int) and 1 <= k <= len(names))]
    if bad:
        raise DataError(
            f"{path}: keypoint id(s) {bad} from the dataset's `parts` are unknown; ids are 1-based, "
            f"1..{len(names)} = {', '.join(f'{i} {n}' for i, n in enumerate(names, 1))}"
        )
    if len(set(ids)) != len(ids):
        raise DataError(f"dataset `parts` {list(ids)} lists a keypoint twice; list each id once")


def person_keypoints(ann: dict, ids: Sequence[int], path: Path) -> list[tuple[int, float, float]]:
    """(keypoint id, x, y) of the selected ids with v == 2, in id order of the annotation."""
    kps = ann.get("keypoints")
    if not isinstance(kps, list) or len(kps) % 3:
        raise DataError(f"{path}: annotation id {ann.get('id')} has no [x, y, v] * K `keypoints` list; fix or remove it")
    wanted = set(ids)
    out = []
    for i in range(len(kps) // 3):
        if i + 1 in wanted and kps[3 * i + 2] >= 2:  # released: `< 2` is skipped
            out.append((i + 1, kps[3 * i], kps[3 * i + 1]))
    return out


def coco_patches(
    annotations: str | os.PathLike,
    images: str | os.PathLike,
    split: str,
    keypoint_ids: Sequence[int] = DEFAULT_KEYPOINTS,
    max_images: int | None = None,
) -> pd.DataFrame:
    """Part patches of one COCO split, images sorted by id (columns as `cub.cub_patches`)."""
    path = Path(annotations).expanduser().absolute()
    img_dir = Path(images).expanduser().absolute()
    data = load_json(path)
    names = keypoint_names(data)
    check_keypoint_ids(list(keypoint_ids), names, path)
    entries = data["images"][:max_images] if max_images is not None else data["images"]
    files: dict[int, str] = {}
    for im in entries:
        if "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: image entry {im!r:.80} lacks `id` or `file_name`; fix the entry")
        files[im["id"]] = im["file_name"]
    known = {im.get("id") for im in data["images"]}

    persons: dict[int, list[tuple[int, float, float, int]]] = {}
    for ann in data["annotations"]:
        image_id = ann.get("image_id")
        if image_id not in known:
            raise DataError(f"{path}: annotation id {ann.get('id')} refers to image_id {image_id}, "
                            "which is not in `images`; fix or remove the annotation")
        if image_id not in files:
            continue
        if "id" not in ann:
            raise DataError(f"{path}: an annotation of image {image_id} has no `id`; the id is part of the "
                            "distance (PROTOCOL.md section 2), so give every annotation its COCO id")
        kps = person_keypoints(ann, keypoint_ids, path)
        if len(kps) >= 2:
            persons.setdefault(image_id, []).extend((k, x, y, ann["id"]) for k, x, y in kps)

    rows = []
    for image_id in sorted(persons):
        kps = persons[image_id]
        d = nearest_other_distance(np.array([(x, y, a) for _, x, y, a in kps], dtype=np.float64))
        for (k, x, y, _), di in zip(kps, d):
            if keep(di):
                rows.append((image_id, str(img_dir / files[image_id]), k, names[k - 1],
                             float(x), float(y), float(di), *crop_box(x, y, di), split))
    return pd.DataFrame(rows, columns=["image_id", "image_path", "part_id", "part_name", "x", "y", "d",
                                       "x0", "y0", "x1", "y1", "split"])
