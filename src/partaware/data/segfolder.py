"""Segmentation datasets in the folder layouts the authors ship (PROTOCOL.md section 5).

    layout mmseg (ADE20K-Part, Pascal-Part, LIP):
        <root>/img/{train,val}/<stem>.jpg
        <root>/<dir>/{train,val}/<stem>.png           one dir per label set, e.g. ann (parts),
                                                       ann_object (objects); default dir ann
    layout ade (ADEChallengeData2016: ADE20K-150, and ADE20K-Object (59)):
        <root>/images/{training,validation}/<stem>.jpg
        <root>/annotations/{training,validation}/<stem>.png

The workflow's split names stay `train` / `val`; a layout maps them onto its folders, and
explicit per-split folders (`images: {train: ..., val: ...}`, per label set `labels: {...}`)
override the preset. A label set may live in another release (its own `root` / `layout`):
its images must be the dataset's (same stems), since every label set of a dataset scores the
same images in one run.

Label PNGs hold class indices (mode L or P): 0 = background, 1..C = foreground classes,
255 = ignore. Training uses `reduce_zero_label` (PROTOCOL.md section 5), so background is
ignored and the C foreground classes become 0..C-1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from partaware.atomic import atomic_path
from partaware.constants import IGNORE_INDEX as IGNORE
from partaware.data.errors import DataError
from partaware.data.seg_transforms import uint8_counts

# Foreground class counts (labels 1..C; 0 = background, 255 = ignore). PROTOCOL.md section 5.
ADE20K_PART_CLASSES = 209
ADE20K_OBJECT_CLASSES = 59
PASCAL_PART_CLASSES = 193
PASCAL_OBJECT_CLASSES = 16
LIP_CLASSES = 19
NUM_CLASSES = {
    "ade20k_part": ADE20K_PART_CLASSES,
    "ade20k_object": ADE20K_OBJECT_CLASSES,
    "pascal_part": PASCAL_PART_CLASSES,
    "pascal_object": PASCAL_OBJECT_CLASSES,
    "lip": LIP_CLASSES,
}

OFFSET_KEY = "label_offset"  # a sample's {label set: value added before reading} (PartImageNet's 0-based parts)
_RESERVED_KEYS = {"id", "img", OFFSET_KEY}
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


# Where each release keeps a split: image folder, default label folder, and its folder name
# of each of our split names (splits not listed keep their own name).
LAYOUTS = {
    "mmseg": {"images": "img", "labels": "ann", "splits": {}},
    "ade": {"images": "images", "labels": "annotations", "splits": {"train": "training", "val": "validation"}},
}
SHOWN = 3  # stems named in an error, per side


def _layout(name: str) -> dict:
    if name not in LAYOUTS:
        raise ValueError(f"unknown segmentation folder layout {name!r}; use one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _under(root: Path, folder: str) -> Path:
    return Path(folder) if Path(folder).is_absolute() else root / folder


def image_folder(root, split: str, layout: str = "mmseg", images: Mapping[str, str] | None = None) -> Path:
    """The image folder of one split: `images[split]` (relative to root unless absolute) where
    given, else the layout preset's (mmseg: img/<split>; ade: images/{training,validation})."""
    root, preset = Path(root), _layout(layout)
    if images and split in images:
        return _under(root, images[split])
    return root / preset["images"] / preset["splits"].get(split, split)


def label_folder(root, split: str, layout: str = "mmseg", labels: Mapping[str, str] | None = None,
                 dir: str | None = None) -> Path:
    """The label folder of one split: `labels[split]` where given, else `<dir>/<split folder>` of
    the layout (dir defaults to the layout's: mmseg ann, ade annotations)."""
    root, preset = Path(root), _layout(layout)
    if labels and split in labels:
        return _under(root, labels[split])
    return root / (dir or preset["labels"]) / preset["splits"].get(split, split)


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.jpg"))


def _differ(name: str, theirs: Path, ours: Path, their_stems, our_stems) -> DataError:
    only_theirs = sorted(set(their_stems) - set(our_stems))
    only_ours = sorted(set(our_stems) - set(their_stems))

    def side(stems, folder):
        shown = ", ".join(stems[:SHOWN]) + (", ..." if len(stems) > SHOWN else "")
        return f"{len(stems)} only in {folder}" + (f" ({shown})" if stems else "")

    return DataError(f"label set {name!r}: its images {theirs} are not the dataset's images {ours}: "
                     f"{side(only_theirs, theirs)}; {side(only_ours, ours)}. The label sets of one dataset "
                     f"score the same images in one run: make {name!r} its own dataset (an entry of its "
                     "own under `datasets:` with this label set's root and layout)")


def list_samples(root: str | os.PathLike, split: str, label_sets: Mapping[str, str | Mapping],
                 layout: str = "mmseg", images: Mapping[str, str] | None = None) -> list[dict]:
    """Pair every image of a split with its `<stem>.png` in each label set.

    `label_sets` maps a label set name to its label `dir` (mmseg: `<root>/<dir>/<split>`), or to
    its config (`dir`, `root`, `layout`, `images`, `labels`; other keys such as `classes` are
    ignored; `root` / `layout` default to the dataset's). Returns one dict per image, sorted by
    stem: `{"id": stem, "img": Path, <set>: Path, ...}`. A missing label file is an error rather
    than a skipped image, so that every label set scores the same images; so is a label set whose
    own image folder holds other images than the dataset's.
    """
    root = Path(root)
    bad = _RESERVED_KEYS & set(label_sets)
    if bad:
        raise ValueError(f"label set names {sorted(bad)} are reserved; rename them")
    img_dir = image_folder(root, split, layout, images)
    stems = _stems(img_dir) if img_dir.is_dir() else []
    if not stems:
        raise DataError(f"{img_dir}: no *.jpg images (expected the {layout} layout's images of split {split!r}, "
                        f"or set the dataset's `images: {{{split}: <folder>}}`)")
    folders = {}
    for name, spec in label_sets.items():
        spec = {"dir": spec} if isinstance(spec, str) else dict(spec)
        set_root, set_layout = Path(spec.get("root", root)), spec.get("layout", layout)
        folders[name] = label_folder(set_root, split, set_layout, spec.get("labels"), spec.get("dir"))
        own = {"root", "layout", "images"} & set(spec)
        set_img = image_folder(set_root, split, set_layout, spec.get("images")) if own else img_dir
        if set_img.resolve() != img_dir.resolve() and set_img.is_dir():  # its own copy of the images
            theirs = _stems(set_img)
            if theirs != stems:
                raise _differ(name, set_img, img_dir, theirs, stems)
    samples = []
    for stem in stems:
        img = img_dir / f"{stem}.jpg"
        sample = {"id": stem, "img": img}
        for name, folder in folders.items():
            lab = folder / f"{stem}.png"
            if not lab.is_file():
                raise DataError(f"{lab}: missing {name!r} label file for image {img}; every image of a "
                                "dataset needs a label in each label set (restore it, or remove the image)")
            sample[name] = lab
        samples.append(sample)
    return samples


def load_label(path: str | os.PathLike, num_classes: int, offset: int = 0) -> np.ndarray:
    """Read a label PNG as a (H, W) uint8 array of class indices, checking its values; `offset`
    is added to every value but 255 first (a release whose classes start at 0, `OFFSET_KEY`).

    Allowed values: 0 (background), 1..num_classes, 255 (ignore). Anything else means the
    file belongs to another label set or was saved as colours, which would silently corrupt
    mIoU, so it is an error naming the file, the bad values and the declared class count.
    """
    if not 0 < num_classes < IGNORE:
        raise ValueError(f"num_classes must be in 1..254 for uint8 labels, got {num_classes}")
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DataError(
                    f"{path}: label PNG has mode {im.mode}; expected L or P (class indices)"
                )
            label = np.array(im, dtype=np.uint8)  # for mode P: the palette indices
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read label image ({e})") from e
    if offset:
        if np.any((label != IGNORE) & (label.astype(np.int64) + offset >= IGNORE)):
            raise DataError(f"{path}: label values up to {int(label[label != IGNORE].max())} + offset {offset} "
                            f"reach 255 (ignore); this file is not a {num_classes}-class label map")
        label = np.where(label == IGNORE, label, label + np.uint8(offset)).astype(np.uint8)
    values = np.flatnonzero(uint8_counts(label))  # np.unique's values, by counting
    bad = values[(values > num_classes) & (values != IGNORE)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise DataError(
            f"{path}: label value(s) {shown} out of range for {num_classes} classes "
            f"(allowed 0 = background, 1..{num_classes}, 255 = ignore)"
        )
    return label


# An image (or label map) whose shorter side is below this is a bad input: at 16 px it does
# not fill one ViT patch, and upscaling it to a probe's view would invent the pixels scored.
MIN_SIDE = 16


def check_size(path, size: tuple[int, int], what: str = "image") -> None:
    """DataError naming `path` when its (width, height) is below `MIN_SIDE` on a side."""
    if min(size) < MIN_SIDE:
        raise DataError(f"{path}: {what} is {size[0]}x{size[1]} px, below the {MIN_SIDE} px minimum side "
                        "of a segmentation sample; restore the file, or set `data.on_bad_image: skip` "
                        "to leave it out")


_REDUCE_ZERO = np.arange(-1, 255).astype(np.uint8)  # c -> c - 1 ...
_REDUCE_ZERO[0] = _REDUCE_ZERO[IGNORE] = IGNORE     # ... except 0 -> 255 and 255 -> 255


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's `reduce_zero_label`: 0 -> 255 (ignored), c -> c - 1, 255 stays 255."""
    label = np.asarray(label, dtype=np.uint8)
    return cv2.LUT(label, _REDUCE_ZERO) if label.ndim == 2 and label.flags.c_contiguous else _REDUCE_ZERO[label]


def load_seg_image(path: str | os.PathLike) -> np.ndarray:
    """A segmentation image as (H, W, 3) uint8 RGB, decoded as the released mmseg code does
    (mmcv `imfrombytes`, OpenCV `imdecode` in colour): a JPEG's EXIF orientation is applied."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        reason = "not found" if isinstance(e, FileNotFoundError) else f"unreadable ({e})"
        raise DataError(f"{os.fspath(path)}: image {reason}; restore the file, or set "
                        "`data.on_bad_image: skip` to leave it out") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise DataError(f"{os.fspath(path)}: image unreadable (OpenCV cannot decode it); restore the file, "
                        "or set `data.on_bad_image: skip` to leave it out")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def check_same_size(image_path, image: np.ndarray, labels: Mapping[str, np.ndarray],
                    label_paths: Mapping[str, object]) -> None:
    """DataError naming both files when a decoded image and one of its label maps differ in size
    (e.g. a JPEG whose EXIF orientation turns it, with a label map drawn on the unturned pixels)."""
    for name, label in labels.items():
        if label.shape[:2] != image.shape[:2]:
            raise DataError(f"{label_paths[name]}: label map {name!r} is {label.shape[1]}x{label.shape[0]} px but "
                            f"its image {image_path} decodes to {image.shape[1]}x{image.shape[0]} (after its "
                            f"EXIF orientation, as the released code reads it); fix or remove the pair")


def seg_view(
    img: Image.Image, label: np.ndarray | Image.Image, size: int
) -> tuple[Image.Image, np.ndarray]:
    """The cached fixed view of an (image, label) pair: short side -> `size`, centre crop.

    Image bicubic, label nearest (class indices must not be blended). This is the one
    deterministic view whose features are cached; it is NOT the paper's augmented training
    (random resize 0.5-2.0, random crop, flip, photometric distortion) nor its slide
    inference, so results from it are the fast approximation of PROTOCOL.md section 5.
    Returns (RGB image size x size, uint8 label size x size).
    """
    img = img.convert("RGB")
    lab = label
    if not isinstance(lab, Image.Image):
        lab = Image.fromarray(np.asarray(lab, dtype=np.uint8))
    if img.size != lab.size:
        raise DataError(f"image size {img.size} differs from label size {lab.size}")
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (nw - size) // 2, (nh - size) // 2
    box = (left, top, left + size, top + size)
    img = img.resize((nw, nh), Image.Resampling.BICUBIC).crop(box)
    lab = lab.resize((nw, nh), Image.Resampling.NEAREST).crop(box)
    return img, np.array(lab, dtype=np.uint8)


def atomic_save(image: Image.Image, path: str | os.PathLike, **save_kwargs) -> None:
    """Save via a temporary file and one rename, so a killed job never leaves a half file."""
    with atomic_path(path) as tmp:
        image.save(tmp, format=_FORMATS[Path(path).suffix.lower()], **save_kwargs)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy bytes unchanged (no JPEG re-encoding) via a temporary file and one rename."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
