"""Raw Pascal-Part (`Annotations_Part/<id>.mat` + VOC JPEGs) -> mmseg label maps.

Two maps per image, written in the layout of `segfolder`:
- part map (`ann/`): 0 = background, 1..193 = the (object class, part) classes in the order of
  the 193-row part list (`PART_CLASSES`, the rows of pascal_part_193_parts_DERIVED.tsv, i.e.
  twuilliam/pascal-part-py's part2ind restricted to the 16 classes with parts), 255 = ignore.
- object map (`ann_object/`): 0 = background, 1..16 = `OBJECT_CLASSES`.

Rules (the authors' own conversion is unpublished; these are ours):
- Numbered parts (`wheel_1`, `window_12`, `coach_3`) are one class per base name (`wheel`), as
  in the part list, whatever the number.
- Overlaps: smaller over larger. Objects are painted in decreasing mask area, and within an
  object its parts in decreasing area, so the smaller region wins where masks overlap (ties:
  the later annotation wins). Pascal-Part part masks nest heavily (an eye inside the head, a
  licence plate or window inside a car side), and the annotation order does not follow the
  nesting (a car's `bliplate` is often listed before `backside`), so "later over earlier"
  would erase small parts.
- Both maps use the same painting order, and parts are clipped to their object's mask, so
  every part pixel lies in a pixel of its parent object in the object map.
- Object pixels without a part (objects annotated without parts, e.g. many tvmonitors, and
  object pixels that none of the object's parts covers) are 255 in the part map: the object
  is known but its part is not, so calling them background would teach the probe that a
  monitor is background. The object map labels them with their object class.
- Objects of the four VOC classes without parts (boat, chair, diningtable, sofa) are
  background (0) in both maps; they are painted as 0 in their turn, so they still occlude.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from partaware.constants import IGNORE_INDEX as IGNORE
from partaware.data.errors import DataError
from partaware.data.segfolder import atomic_copy, atomic_save

# The 16 VOC classes with parts, in VOC (alphabetical) order: object label = position + 1.
OBJECT_CLASSES = (
    "aeroplane", "bicycle", "bird", "bottle", "bus", "car", "cat", "cow",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "train", "tvmonitor",
)
# The other four VOC classes (`table` is how the .mat files spell diningtable).
OBJECTS_WITHOUT_PARTS = ("boat", "chair", "diningtable", "table", "sofa")

# Parts per object class, in the order of the 193-row part list; `*` = numbered in the .mat
# files (`engine_1`, `engine_2`, ... are all `engine`).
_PARTS = {
    "aeroplane": "body stern lwing rwing tail engine* wheel*",
    "bicycle": "fwheel bwheel saddle handlebar chainwheel headlight*",
    "bird": "head leye reye beak torso neck lwing rwing lleg lfoot rleg rfoot tail",
    "bottle": "cap body",
    "bus": "frontside leftside rightside backside roofside leftmirror rightmirror fliplate "
           "bliplate door* wheel* headlight* window*",
    "car": "frontside leftside rightside backside roofside leftmirror rightmirror fliplate "
           "bliplate door* wheel* headlight* window*",
    "cat": "head leye reye lear rear nose torso neck lfleg lfpa rfleg rfpa lbleg lbpa rbleg rbpa "
           "tail",
    "cow": "head leye reye lear rear muzzle lhorn rhorn torso neck lfuleg lflleg rfuleg rflleg "
           "lbuleg lblleg rbuleg rblleg tail",
    "dog": "head leye reye lear rear nose torso neck lfleg lfpa rfleg rfpa lbleg lbpa rbleg rbpa "
           "tail muzzle",
    "horse": "head leye reye lear rear muzzle torso neck lfuleg lflleg rfuleg rflleg lbuleg lblleg "
             "rbuleg rblleg tail lfho rfho lbho rbho",
    "motorbike": "fwheel bwheel handlebar saddle headlight*",
    "person": "head leye reye lear rear lebrow rebrow nose mouth hair torso neck llarm luarm lhand "
              "rlarm ruarm rhand llleg luleg lfoot rlleg ruleg rfoot",
    "pottedplant": "pot plant",
    "sheep": "head leye reye lear rear muzzle lhorn rhorn torso neck lfuleg lflleg rfuleg rflleg "
             "lbuleg lblleg rbuleg rblleg tail",
    "train": "head hfrontside hleftside hrightside hbackside hroofside headlight* coach* "
             "cfrontside* cleftside* crightside* cbackside* croofside*",
    "tvmonitor": "screen",
}
# (object class, part) per part label 1..193 (position + 1).
PART_CLASSES = tuple((obj, p.rstrip("*")) for obj in OBJECT_CLASSES for p in _PARTS[obj].split())
# part label -> object label of its parent (index 0 = background -> 0).
PART_PARENT = np.array([0] + [OBJECT_CLASSES.index(o) + 1 for o, _ in PART_CLASSES], np.uint8)

_PART_ID = {c: i + 1 for i, c in enumerate(PART_CLASSES)}
_NUMBERED = {(o, p[:-1]) for o in OBJECT_CLASSES for p in _PARTS[o].split() if p.endswith("*")}
_NUMBER_SUFFIX = re.compile(r"^(.*)_(\d+)$")


def part_class_id(obj: str, part_name: str) -> int | None:
    """Part label 1..193 of a `.mat` part name of an object class; None if unknown."""
    if (obj, part_name) in _PART_ID:
        return _PART_ID[(obj, part_name)]
    m = _NUMBER_SUFFIX.match(part_name)
    if m and (obj, m.group(1)) in _NUMBERED:
        return _PART_ID[(obj, m.group(1))]
    return None


def _str(field) -> str:
    return str(np.asarray(field).ravel()[0])


def pascal_part_maps(mat_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(part map, object map) of one `.mat` file as (H, W) uint8 arrays; rules in the module doc."""
    try:
        anno = scipy.io.loadmat(mat_path)["anno"][0, 0]
        objects = list(anno["objects"].ravel())
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise DataError(f"{mat_path}: not a Pascal-Part annotation ({e})") from e
    if not objects:
        raise DataError(f"{mat_path}: no objects")
    shape = objects[0]["mask"].shape
    parts_map = np.zeros(shape, np.uint8)
    obj_map = np.zeros(shape, np.uint8)

    items = []  # (object label or 0, object mask, [(part label, part mask), ...])
    for obj in objects:
        cls = _str(obj["class"])
        mask = obj["mask"] > 0
        if mask.shape != shape:
            raise DataError(f"{mat_path}: object {cls!r} mask {mask.shape} differs from {shape}")
        if cls in OBJECT_CLASSES:
            label = OBJECT_CLASSES.index(cls) + 1
        elif cls in OBJECTS_WITHOUT_PARTS:
            label = 0
        else:
            raise DataError(f"{mat_path}: unknown object class {cls!r}")
        parts = []
        for part in obj["parts"].ravel() if label else ():
            name = _str(part["part_name"])
            pid = part_class_id(cls, name)
            if pid is None:
                raise DataError(
                    f"{mat_path}: part {name!r} of {cls!r} is not one of the 193 part classes"
                )
            parts.append((pid, (part["mask"] > 0) & mask))
        items.append((label, mask, parts))

    # Smaller over larger: paint in decreasing area; stable sort keeps annotation order on ties.
    for label, mask, parts in sorted(items, key=lambda it: -int(it[1].sum())):
        obj_map[mask] = label
        parts_map[mask] = IGNORE if label else 0
        for pid, pmask in sorted(parts, key=lambda p: -int(p[1].sum())):
            parts_map[pmask] = pid
    return parts_map, obj_map


def convert_pascal_part(
    ann_dir: str | os.PathLike,
    voc_jpeg_dir: str | os.PathLike,
    out_root: str | os.PathLike,
    split_ids: dict[str, list[str]],
) -> dict[str, int]:
    """Write `img/{split}/<id>.jpg` (bytes copied), `ann/{split}/<id>.png` (193 parts) and
    `ann_object/{split}/<id>.png` (16 objects) under `out_root` for the given image ids.

    Every file is written to a temporary name and renamed, so an interrupted run leaves only
    complete files. Returns the number of images written per split.
    """
    ann_dir, voc_jpeg_dir, out_root = Path(ann_dir), Path(voc_jpeg_dir), Path(out_root)
    counts = {}
    for split, ids in split_ids.items():
        for image_id in ids:
            mat, jpg = ann_dir / f"{image_id}.mat", voc_jpeg_dir / f"{image_id}.jpg"
            for f in (mat, jpg):
                if not f.is_file():
                    raise DataError(f"{f}: missing file for Pascal-Part image {image_id} ({split})")
            part_map, obj_map = pascal_part_maps(mat)
            with Image.open(jpg) as im:
                if im.size[::-1] != part_map.shape:
                    raise DataError(f"{jpg}: image size {im.size[::-1]} differs from mask size "
                                    f"{part_map.shape} in {mat}")
            atomic_save(Image.fromarray(part_map), out_root / "ann" / split / f"{image_id}.png")
            atomic_save(Image.fromarray(obj_map),
                        out_root / "ann_object" / split / f"{image_id}.png")
            atomic_copy(jpg, out_root / "img" / split / f"{image_id}.jpg")
        counts[split] = len(ids)
    return counts
