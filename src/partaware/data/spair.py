"""SPair-71k as shipped -> the correspondence pair table (`data.pairs.COLUMNS`).

Layout under `root` (the `SPair-71k` folder): `JPEGImages/<category>/<name>.jpg`,
`PairAnnotation/{trn,val,test}/<id>-<src>-<trg>:<category>.json` (`src_imname`, `trg_imname`,
`src_imsize` / `trg_imsize` = [width, height, depth], `src_bndbox` / `trg_bndbox` = [x1, y1, x2,
y2], `src_kps` / `trg_kps` = [[x, y], ...] of the keypoints visible in both, `kps_ids`,
`category`), `ImageAnnotation/<category>/<name>.json` (`kps`: {id: [x, y] or null}).

SPair's annotations name keypoints only by number; which ones are left/right counterparts is
not in the files, so the mirror map comes from the config (`mirror`: {category: [[id, id],
...]}); a category without one gets no left/right confusion. The mirrored part's location in
the target is read from the target's ImageAnnotation.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .errors import DataError
from .pairs import COLUMNS, missing_pair_image, typed

SPLITS = ("trn", "val", "test")
ROOT_FIX = "set the dataset's `root` to the SPair-71k folder that holds JPEGImages/, PairAnnotation/ and ImageAnnotation/"


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: SPair annotation not found; {ROOT_FIX}") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable SPair annotation ({err}); restore it from the official archive") from None


def _points(path: Path, ann: dict, key: str, size_key: str) -> list[tuple[float, float]]:
    """The [[x, y], ...] of `key`, each inside the image of `size_key` ([width, height, ...])."""
    try:
        w, h = float(ann[size_key][0]), float(ann[size_key][1])
        pts = [(float(x), float(y)) for x, y in ann[key]]
    except (KeyError, TypeError, ValueError, IndexError):
        raise DataError(f"{path}: `{key}` / `{size_key}` missing or malformed; restore the file from the official "
                        "SPair-71k archive") from None
    for k, (x, y) in enumerate(pts):
        if not (0 <= x <= w and 0 <= y <= h):
            raise DataError(f"{path}: keypoint {k} of `{key}` at ({x:g}, {y:g}) lies outside its {w:g} x {h:g} "
                            "image; fix or remove this annotation")
    return pts


def _box_size(path: Path, ann: dict, key: str) -> float:
    try:
        x1, y1, x2, y2 = (float(v) for v in ann[key])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: `{key}` must be [x1, y1, x2, y2]; restore the file from the official archive") from None
    size = max(x2 - x1, y2 - y1)
    if size <= 0:
        raise DataError(f"{path}: `{key}` {ann[key]} is empty; fix the box")
    return size


def pair_files(root: Path, split: str) -> list[Path]:
    if split not in SPLITS:
        raise DataError(f"SPair split {split!r}: use one of {SPLITS}")
    folder = root / "PairAnnotation" / split
    if not folder.is_dir():
        raise DataError(f"{folder}: SPair pair annotations not found; {ROOT_FIX}")
    return sorted(folder.glob("*.json"))


def spair_pairs(root: str | os.PathLike, split: str = "test", mirror: dict | None = None,
                on_bad_image: str = "error", max_pairs: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(pair table, messages of the pairs left out) of SPair's listed pairs of `split`.

    A pair naming a missing image raises a DataError under `on_bad_image: error`, and is left
    out (with a message) under `skip`."""
    root = Path(root).expanduser().absolute()
    mirror = mirror or {}
    image_kps: dict[Path, dict] = {}
    rows, skipped = [], []
    for n, path in enumerate(pair_files(root, split)[:max_pairs]):
        ann = _load(path)
        try:
            cat, src, trg, ids = ann["category"], ann["src_imname"], ann["trg_imname"], [str(i) for i in ann["kps_ids"]]
        except (KeyError, TypeError):
            raise DataError(f"{path}: needs `category`, `src_imname`, `trg_imname` and `kps_ids`; restore the file "
                            "from the official SPair-71k archive") from None
        src_pts, trg_pts = _points(path, ann, "src_kps", "src_imsize"), _points(path, ann, "trg_kps", "trg_imsize")
        if not (len(src_pts) == len(trg_pts) == len(ids)):
            raise DataError(f"{path}: {len(src_pts)} src_kps, {len(trg_pts)} trg_kps and {len(ids)} kps_ids differ; "
                            "restore the file from the official archive")
        paths = [root / "JPEGImages" / cat / name for name in (src, trg)]
        message = missing_pair_image(path, paths, on_bad_image)
        if message:
            skipped.append(message)
            continue
        box = _box_size(path, ann, "trg_bndbox")
        counterpart = {}
        for a, b in mirror.get(cat, []):
            counterpart[str(a)], counterpart[str(b)] = str(b), str(a)
        trg_all = {}
        if counterpart:
            ann_path = root / "ImageAnnotation" / cat / (Path(trg).stem + ".json")
            if ann_path not in image_kps:
                image_kps[ann_path] = _load(ann_path).get("kps") or {}
            trg_all = image_kps[ann_path]
        for kid, (sx, sy), (tx, ty) in zip(ids, src_pts, trg_pts):
            other = counterpart.get(kid, "")
            loc = trg_all.get(other) if other else None
            mx, my = (float(loc[0]), float(loc[1])) if loc else (0.0, 0.0)
            rows.append((n, cat, f"{cat}/{src}", f"{cat}/{trg}", str(paths[0]), str(paths[1]), f"{cat} {kid}",
                         sx, sy, tx, ty, True, f"{cat} {other}" if other else "", mx, my, loc is not None, box))
    return typed(pd.DataFrame(rows, columns=COLUMNS)), skipped
