"""PartImageNet (He et al., ECCV 2022, TACJu/PartImageNet), the PartImageNet_Seg release as
shipped, read by the segmentation-folder machinery (`data.segfolder`, `kinds/partimagenet.py`).

Layout under `root` (the PartImageNet_Seg folder), for each split (train, val, test):
    images/<split>/<stem>.JPEG
    annotations/<split>/<stem>.png       part map: 0-39 the 40 part classes, 40 background, 255 ignore
    annotations/<split>_whole/<stem>.png object mask (label set `object`)
    annotations/<split>.json             the COCO-style polygons (not read: the PNGs are the labels)

Labels (PROTOCOL.md section 8; Compositor's convention): 41 classes = 40 parts + background,
background last, ignore 255, mIoU over all 41. The probes apply mmseg's `reduce_zero_label`
(0 ignored, the rest shifted down), so every value is read with an offset of 1
(`segfolder.OFFSET_KEY`): part c -> c + 1 -> class c, background 40 -> 41 -> class 40; so
background is a class scored like the parts, and 255 stays ignored. The object masks are read
the same way (`object.classes` = object classes + background, background the last value);
that the `_whole` masks hold super-category indices with background last is our reading of the
release (not stated officially): a file with another coding stops with the out-of-range error.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .segfolder import OFFSET_KEY

PART_CLASSES = 41            # 40 parts + background (the last)
OBJECT_CLASSES = 12          # 11 super-categories + background (the last)
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpeg", ".jpg")
ROOT_FIX = ("set the dataset's `root` to the PartImageNet_Seg folder that holds images/<split>/ and "
            "annotations/<split>/, annotations/<split>_whole/")


def folders(root, split: str, label_sets) -> dict[str, Path]:
    """`img` and each label set's folder of one split (`part`: annotations/<split>, `object`:
    annotations/<split>_whole)."""
    root = Path(root)
    out = {"img": root / "images" / split}
    for name in label_sets:
        out[name] = root / "annotations" / (split if name == "part" else f"{split}_whole")
    return out


def missing_folder(root, split: str, label_sets) -> Path | None:
    """The first folder of the layout that is absent, or None."""
    return next((f for f in folders(root, split, label_sets).values() if not f.is_dir()), None)


def list_samples(root, split: str, label_sets) -> list[dict]:
    """Every image of a split with its label files, sorted by stem: `{"id", "img", <set>: Path,
    OFFSET_KEY: {<set>: 1}}`. A missing folder or label file is an error naming it."""
    where = folders(root, split, label_sets)
    absent = missing_folder(root, split, label_sets)
    if absent is not None:
        raise DataError(f"{absent}: PartImageNet_Seg folder not found; {ROOT_FIX}")
    images = sorted(p for p in where["img"].iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{where['img']}: no .JPEG images; {ROOT_FIX}")
    samples = []
    for img in images:
        sample = {"id": img.stem, "img": img, OFFSET_KEY: {name: 1 for name in label_sets}}
        for name in label_sets:
            label = where[name] / f"{img.stem}.png"
            if not label.is_file():
                raise DataError(f"{label}: missing {name!r} label file for image {img}; restore it from the "
                                "PartImageNet_Seg archive (every image needs a label in each label set)")
            sample[name] = label
        samples.append(sample)
    return samples


def generate_partimagenet(out, splits=("train", "val"), per_split: int = 4, size: int = 64, seed: int = 0) -> Path:
    """A PartImageNet_Seg-layout folder of generated images (a dark object of one super-category
    with two parts on a light ground, labels as the release codes them): for tests and demos."""
    out, rng = Path(out), np.random.default_rng(seed)
    for split in splits:
        for sub in (f"images/{split}", f"annotations/{split}", f"annotations/{split}_whole"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": f"part {c}"} for c in range(40)]}
        for i in range(per_split):
            stem = f"n0{1440764 + i}_{split}_{i}"
            sup = int(rng.integers(0, OBJECT_CLASSES - 1))
            parts = rng.choice(40, size=2, replace=False)
            x0, y0 = (int(v) for v in rng.integers(4, size // 3, size=2))
            x1, y1 = x0 + size // 2, y0 + size // 2
            part = np.full((size, size), PART_CLASSES - 1, np.uint8)
            part[y0:(y0 + y1) // 2, x0:x1], part[(y0 + y1) // 2:y1, x0:x1] = parts
            part[y1 - 1, x0:x1] = 255                                     # an ignored seam
            whole = np.where(part == PART_CLASSES - 1, OBJECT_CLASSES - 1, sup).astype(np.uint8)
            whole[part == 255] = 255
            shade = np.where(part == PART_CLASSES - 1, 200, 60 + 2 * (part % 64)).astype(np.int64)
            img = np.clip(shade[..., None] + rng.integers(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(out / "images" / split / f"{stem}.JPEG", format="JPEG", quality=95)
            Image.fromarray(part).save(out / "annotations" / split / f"{stem}.png")
            Image.fromarray(whole).save(out / "annotations" / f"{split}_whole" / f"{stem}.png")
            coco["images"].append({"id": i, "file_name": f"{stem}.JPEG", "width": size, "height": size})
        (out / "annotations" / f"{split}.json").write_text(json.dumps(coco))
    return out
