"""SPair-71k's per-pair difficulty and its geometry-aware keypoints, for the correspondence
task's reporting splits (`tasks.correspondence_splits`).

Difficulty: every pair file carries `viewpoint_variation` and `scale_variation` (0 easy, 1
medium, 2 hard) and `truncation` and `occlusion` (0 none, 1 source, 2 target, 3 both), checked
on the real files in tests/fixtures/real/spair.

Geometry-aware keypoints ("Telling Left from Right", Zhang et al., CVPR 2024): per category,
groups of keypoints equal up to symmetry or repetition (two eyes, four wheels). A keypoint of a
pair counts when it is visible in both images and at least two members of its group are visible
in the target. The tables below are data from GeoAware-SC @ 99fd6b6 `utils/utils_geoware.py`
(`SPAIR_GEO_AWARE`, `SPAIR_LR`), in SPair's own keypoint ids (the raw ids: bus and car number
their keypoints 0-29, ids 8 and 9 of bus unused).
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .errors import DataError
from .spair import pair_files

# Groups of symmetric or repeated keypoints; singletons (never geometry-aware) left out.
# Source: GeoAware-SC @ 99fd6b6 utils/utils_geoware.py SPAIR_GEO_AWARE (bus written there as id + 2).
GEO_GROUPS: dict[str, list[list[int]]] = {
    "aeroplane": [[4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15], [16, 17], [18, 19], [20, 21]],
    "bicycle": [[2, 3], [6, 7], [9, 10]],
    "bird": [[1, 2], [10, 11], [12, 13], [14, 15]],
    "boat": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12]],
    "bottle": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]],
    "bus": [[0, 1], [2, 3, 5, 6], [4, 7], [10, 13, 20, 23], [11, 14, 21, 24], [12, 15, 22, 25], [16, 17, 26, 27],
            [18, 19, 28, 29]],
    "car": [[0, 1], [2, 3, 6, 7], [4, 8], [5, 9], [10, 13, 20, 23], [11, 14, 21, 24], [12, 15, 22, 25],
            [16, 17, 26, 27], [18, 19, 28, 29]],
    "cat": [[2, 3], [9, 10, 11, 12]],
    "chair": [[0, 1], [2, 3], [4, 5, 6, 7], [8, 9], [10, 11], [12, 13]],
    "cow": [[2, 3], [9, 10, 11, 12], [15, 16, 17, 18], [19, 20]],
    "dog": [[2, 3], [9, 10, 11, 12]],
    "horse": [[2, 3], [10, 11, 12, 13], [16, 17, 18, 19]],
    "motorbike": [[0, 1], [2, 3]],
    "person": [[8, 9], [10, 11], [12, 13], [14, 15], [16, 17], [18, 19]],
    "pottedplant": [[0, 1, 2, 3], [4, 5], [6, 8]],
    "sheep": [[2, 3], [9, 10, 11, 12], [15, 16, 17, 18], [19, 20]],
    "train": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11], [12, 13], [14, 15], [16, 17]],
    "tvmonitor": [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14], [9, 11, 13, 15]],
}

# Side of each keypoint id (index): 0 neutral, 1 left, 2 right.
# Source: GeoAware-SC @ 99fd6b6 utils/utils_geoware.py SPAIR_LR.
SIDES: dict[str, list[int]] = {
    "aeroplane": [0, 0, 0, 0, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 0, 0, 0],
    "bicycle": [0, 0, 2, 1, 0, 0, 2, 1, 0, 2, 1, 0, 0, 0],
    "bird": [0, 2, 1, 0, 2, 1, 0, 2, 1, 0, 2, 1, 2, 1, 2, 1, 0],
    "boat": [0, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 0],
    "bottle": [1, 2, 1, 2, 1, 2, 1, 2, 1, 2],
    "bus": [2, 1, 2, 1, 0, 2, 1, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 1],
    "car": [2, 1, 2, 1, 0, 0, 2, 1, 0, 0, 2, 2, 2, 2, 2, 2, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 2, 1],
    "cat": [2, 1, 2, 1, 2, 1, 2, 1, 0, 2, 1, 2, 1, 0, 0],
    "chair": [2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1],
    "cow": [2, 1, 2, 1, 2, 1, 2, 1, 0, 2, 1, 2, 1, 0, 0, 2, 1, 2, 1, 2, 1],
    "dog": [2, 1, 2, 1, 2, 1, 0, 0, 0, 2, 1, 2, 1, 0, 0, 0],
    "horse": [2, 1, 2, 1, 2, 1, 2, 1, 0, 0, 2, 1, 2, 1, 0, 0, 2, 1, 2, 1],
    "motorbike": [2, 1, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "person": [2, 1, 2, 1, 0, 0, 0, 0, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1],
    "pottedplant": [2, 0, 1, 0, 2, 1, 2, 0, 1],
    "sheep": [2, 1, 2, 1, 2, 1, 2, 1, 0, 2, 1, 2, 1, 0, 0, 2, 1, 2, 1, 2, 1],
    "train": [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2],
    "tvmonitor": [2, 0, 1, 2, 2, 0, 1, 1, 2, 0, 1, 2, 2, 0, 1, 1],
}

# The difficulty fields of a pair file and their allowed values.
DIFFICULTY = {"viewpoint_variation": (0, 1, 2), "scale_variation": (0, 1, 2), "truncation": (0, 1, 2, 3),
              "occlusion": (0, 1, 2, 3)}
GEO = "geo_aware"


def geo_aware(category: str, both: set[str], target: set[str]) -> set[str]:
    """The keypoint ids (strings) of `both` (visible in both images) that are geometry-aware:
    members of a group of `category` of which at least two are visible in the target."""
    out: set[str] = set()
    for group in GEO_GROUPS.get(category, []):
        ids = {str(k) for k in group}
        if len(ids & target) >= 2:
            out |= ids & both
    return out


def _difficulty(path: Path, ann: dict) -> dict:
    out = {}
    for key, allowed in DIFFICULTY.items():
        value = ann.get(key)
        if value not in allowed:
            raise DataError(f"{path}: `{key}` is {value!r}, not one of {list(allowed)}; restore the file from the "
                            "official SPair-71k archive")
        out[key] = int(value)
    return out


def spair_details(root, split: str, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per row of the pair table (`pair`, `part`): the pair's difficulty fields and whether the
    keypoint is geometry-aware. Pair ids are positions in the split's sorted pair files, as
    `data.spair.spair_pairs` numbers them."""
    root = Path(root).expanduser().absolute()
    files = pair_files(root, split)
    visible: dict[Path, set[str]] = {}
    rows = []
    for pid, rows_of_pair in pairs.groupby("pair", sort=True):
        path = files[int(pid)]
        ann = json.loads(path.read_text(encoding="utf-8"))
        cat = ann["category"]
        first = rows_of_pair.iloc[0]
        if (first["src_image"], first["trg_image"]) != (f"{cat}/{ann['src_imname']}", f"{cat}/{ann['trg_imname']}"):
            raise DataError(f"{path}: pair {pid} of the pair table names {first['src_image']} -> {first['trg_image']}, "
                            "not this file's images: the pair table was built from other files; rerun the pair_table "
                            "job (delete results/index/<dataset>/pairs.parquet)")
        trg_ann = root / "ImageAnnotation" / cat / (Path(ann["trg_imname"]).stem + ".json")
        if trg_ann not in visible:
            try:
                kps = json.loads(trg_ann.read_text(encoding="utf-8")).get("kps") or {}
            except FileNotFoundError:
                raise DataError(f"{trg_ann}: SPair image annotation not found; the geometry-aware subset needs "
                                "each target's ImageAnnotation: restore it from the official archive") from None
            visible[trg_ann] = {str(k) for k, v in kps.items() if v is not None}
        ids = {p.split(" ", 1)[1] for p in rows_of_pair["part"]}
        geo = geo_aware(cat, ids, visible[trg_ann] | ids)
        diff = _difficulty(path, ann)
        rows += [{"pair": int(pid), "part": part, **diff, GEO: part.split(" ", 1)[1] in geo}
                 for part in rows_of_pair["part"]]
    return pd.DataFrame(rows, columns=["pair", "part", *DIFFICULTY, GEO])
