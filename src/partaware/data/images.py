"""Images and patch transforms (PROTOCOL.md section 2, steps 3-4).

Patches are cut from the full RGB image with PIL's `Image.crop`, which zero-fills the part of a
box outside the image (as the released code). The released code used `Resize(224)` (shorter
side) for eval patches; part boxes are square, so that equals the 224 x 224 resize used here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .errors import DataError



def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The image as RGB, fully decoded now, so a truncated or corrupt file fails here."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")  # L, LA, P, CMYK, RGBA, I;16 ... -> RGB, as the released loader
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        reason = "not found" if isinstance(e, FileNotFoundError) else f"unreadable ({type(e).__name__}: {e})"
        raise DataError(
            f"{os.fspath(path)}: image {reason}; restore the file, or set `data.on_bad_image: skip` "
            "to leave its patches out"
        ) from None


def crop_patch(img: Image.Image, box: Sequence[float]) -> Image.Image:
    """`Image.crop` semantics: the box may leave the image; outside pixels are zero."""
    return img.crop(tuple(float(v) for v in box))  # PIL rounds each coordinate (half to even)


def _view(view: str, size: int, resize: int) -> list:
    from torchvision import transforms as T  # here: jobs that only read stores never import torchvision

    bicubic = T.InterpolationMode.BICUBIC
    if view == "eval":
        return [T.Resize((size, size), interpolation=bicubic)]
    if view == "train":
        return [T.Resize(resize, interpolation=bicubic), T.CenterCrop(size)]
    raise DataError(f"transform view {view!r} is unknown; use 'eval' (retrieval, test split) or 'train'")


def patch_transform(
    view: str = "eval",
    size: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL patch -> normalised float tensor (3, size, size).

    eval: bicubic resize to size x size. train (the probes' train split): bicubic resize of the
    shorter side to `resize`, then centre crop `size`. No random augmentation in either.
    """
    from torchvision import transforms as T

    return T.Compose([*_view(view, size, resize), T.ToTensor(), T.Normalize(mean=list(mean), std=list(std))])


def describe_transform(
    view: str = "eval",
    size: int = 224,
    resize: int = 256,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> str:
    """One-line description of `patch_transform(...)` for store attributes."""
    steps = {"eval": f"resize {size}x{size} bicubic", "train": f"resize shorter {resize} bicubic, center crop {size}"}
    if view not in steps:
        _view(view, size, resize)  # raises the DataError
    m = ", ".join(f"{v:g}" for v in mean)
    s = ", ".join(f"{v:g}" for v in std)
    return f"{view}: crop box (PIL, zero fill) -> RGB -> {steps[view]} -> to_tensor -> normalize mean=({m}) std=({s})"
