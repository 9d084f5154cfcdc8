"""The paper's ImageNet patch grid (Figures 2 and 4; released `pr_patch_retrieval_imagenet_vis.py`
and `moco/loader.py` `PatchLoader`): each image is resized (shorter side 256, bicubic), centre
cropped to 224, resized (bicubic) to 896 x 896, and cut into 7 x 7 overlapping 224 x 224 patches
at stride 112, row by row (top offset outer, left offset inner). The patches go to the encoder
as they are (no further resize).

Pure PIL / numpy: extraction cuts its rows with it and the figures re-cut the shown pixels with
the same code.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DataError
from .imagefolder import IMG_EXTENSIONS


@dataclass(frozen=True)
class Grid:
    """The crop sequence: `size` = centre crop and patch side, `resize` = shorter side before the
    crop, the crop upscaled to `grid * size` per side, patches every `stride` pixels
    (default `size // 2`, the released code's)."""

    size: int = 224
    resize: int = 256
    grid: int = 4
    stride: int | None = None

    @classmethod
    def of(cls, ds: dict) -> "Grid":
        return cls(ds["size"], ds["resize"], ds["grid"], ds.get("stride"))

    @property
    def step(self) -> int:
        return self.stride or self.size // 2

    @property
    def side(self) -> int:
        """The upscaled view's side (896)."""
        return self.size * self.grid

    @property
    def per_side(self) -> int:
        """Patches per row and per column (7): offsets 0, step, ... while a whole patch fits."""
        return (self.side - self.size) // self.step + 1

    @property
    def n_patches(self) -> int:
        return self.per_side ** 2

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """(left, top, right, bottom) of each patch in the upscaled view, in row order."""
        offsets = range(0, self.side - self.size + 1, self.step)
        return [(left, top, left + self.size, top + self.size) for top in offsets for left in offsets]

    def view_steps(self):
        """The released PIL steps (torchvision `interpolation=3` is bicubic): resize the shorter
        side, centre crop, resize to the upscaled side."""
        from torchvision import transforms as T

        bicubic = T.InterpolationMode.BICUBIC
        return T.Compose([T.Resize(self.resize, interpolation=bicubic), T.CenterCrop(self.size),
                          T.Resize(self.side, interpolation=bicubic)])

    def view(self, image: Image.Image) -> Image.Image:
        """The upscaled view (side x side) the patches are cut from."""
        return self.view_steps()(image)

    def patches(self, view: Image.Image) -> np.ndarray:
        """(n_patches, size, size, RGB) uint8: the patches of a view, in row order."""
        pixels = np.asarray(view)
        return np.stack([pixels[t:b, l:r] for l, t, r, b in self.boxes()])

    def describe(self, mean, std) -> str:
        m, s = (", ".join(f"{v:g}" for v in x) for x in (mean, std))
        return (f"patch grid: RGB -> resize shorter {self.resize} bicubic, center crop {self.size}, resize "
                f"{self.side}x{self.side} bicubic -> {self.per_side}x{self.per_side} patches {self.size}x{self.size} "
                f"at stride {self.step} (row order) -> to_tensor -> normalize mean=({m}) std=({s})")


def list_images(root: str | os.PathLike, max_images: int | None = None) -> list[str]:
    """Image files under `root` (recursive, links followed), ordered by file name, then path, so a
    flat ImageNet val folder and one sorted into class folders give the same rows, and the first
    N are val images 1..N (the released script searched images numbered below 25000)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found; set the dataset's `root` to a folder of images "
                        "(e.g. data/imagenet/val)")
    found = []
    for where, _, names in os.walk(root, followlinks=True):
        found += [Path(where) / n for n in names if n.lower().endswith(IMG_EXTENSIONS)]
    if not found:
        raise DataError(f"{root}: no images ({', '.join(IMG_EXTENSIONS)}) in the folder or below it")
    found.sort(key=lambda p: (p.name, str(p)))
    return [str(p) for p in found[:max_images]]
