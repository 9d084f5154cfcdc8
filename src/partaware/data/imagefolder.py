"""Image folders as torchvision's `ImageFolder` reads them: `<root>/<split>/<class>/**/<image>`.

ImageNet-1k is one (`train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG` once the validation images are
sorted into class folders). Classes are the sorted sub-folder names of the training split, so a
class has the same label in every split; images are the files with an image extension, in
torchvision's order (sorted walk, links followed), so row k is torchvision's sample k.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError

# torchvision.datasets.folder.IMG_EXTENSIONS, compared case-insensitively as there
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _split_dir(root, split: str) -> Path:
    path = Path(root) / split
    if not path.is_dir():
        raise DataError(f"{path}: split folder not found; the image folder needs <root>/{split}/<class>/<images> "
                        "(set the dataset's `root`, or `splits` to the folder names of its splits)")
    return path


def _images_in(folder: Path) -> list[Path]:
    """Image files under `folder`, in torchvision's order (sorted walk, links followed)."""
    out = []
    for where, _, names in sorted(os.walk(folder, followlinks=True)):
        out += [Path(where) / n for n in sorted(names) if n.lower().endswith(IMG_EXTENSIONS)]
    return out


def class_names(root, split: str) -> list[str]:
    """The sorted class folder names of one split (the label of class k is k)."""
    path = _split_dir(root, split)
    classes = sorted(e.name for e in os.scandir(path) if e.is_dir())
    if not classes:
        loose = [e.name for e in os.scandir(path) if e.name.lower().endswith(IMG_EXTENSIONS)]
        hint = (f" (it holds {len(loose)} images directly: sort them into one folder per class, as "
                "ImageNet's validation images must be)") if loose else ""
        raise DataError(f"{path}: no class folders{hint}; the image folder needs <root>/{split}/<class>/<images>")
    return classes


def list_images(root, split: str, classes: list[str], max_per_class: int | None = None) -> list[tuple[str, int]]:
    """(path, label) of every image of a split, class by class, each class's first
    `max_per_class` images only when given. A class folder the training split lacks, or one
    without images, is an error naming it."""
    path = _split_dir(root, split)
    label_of = {c: k for k, c in enumerate(classes)}
    out = []
    for name in class_names(root, split):
        if name not in label_of:
            raise DataError(f"{path / name}: class folder not in the training split's classes, so it has no "
                            "label; remove it, or add the class to the training split")
        images = _images_in(path / name)
        if not images:
            raise DataError(f"{path / name}: class folder holds no images ({', '.join(IMG_EXTENSIONS)}); "
                            "restore its images or remove the folder")
        out += [(str(p), label_of[name]) for p in images[:max_per_class]]
    return out


def first_per_class(samples: list[tuple[str, int]], n: int) -> list[tuple[str, int]]:
    """The first `n` samples of each class, in their order (the attentive probe's subset)."""
    seen: dict[int, int] = {}
    out = []
    for path, label in samples:
        if seen.get(label, 0) < n:
            seen[label] = seen.get(label, 0) + 1
            out.append((path, label))
    return out
