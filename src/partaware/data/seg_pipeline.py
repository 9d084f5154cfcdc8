"""The paper's mmseg 0.x segmentation data pipeline (PROTOCOL.md section 5), in numpy + OpenCV.

Training view, in mmseg's order: Resize(img_scale, ratio_range) -> RandomCrop(crop, cat_max_ratio)
-> RandomFlip(0.5) -> PhotoMetricDistortion -> [Normalize -> Pad]. Test view: keep-ratio rescale
to the test img_scale. The steps are small pure functions taking their random draws explicitly
(`seg_transforms.py`, re-exported here); `SegPipeline.train_view` draws from one
`np.random.Generator` in mmseg's call order (see `SegPipeline.train_view`). A Generator is not
mmseg's global `np.random` stream, so the draws themselves differ from an mmseg run: the
transforms for given draws are what is identical.

No torch here except in `normalise_and_pad`, which imports it lazily (it runs on the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from partaware.data.errors import DataError
from partaware.data.seg_transforms import (BRIGHTNESS_DELTA, CONTRAST_RANGE, CROP_TRIES, HUE_DELTA, IGNORE,
                                           SATURATION_RANGE, PhotoDraws, apply_crop, convert, crop_accepted,
                                           draw_crop_box, draw_flip, draw_photometric, hflip, hue_step,
                                           imrescale, pad_to, photometric, random_crop_box, ratio_scale,
                                           rescale, rescale_size, sample_ratio, saturation_step)

__all__ = [  # the transforms are re-exported: callers and tests import them from here
    "BRIGHTNESS_DELTA", "CONTRAST_RANGE", "CROP_TRIES", "HUE_DELTA", "IGNORE", "SATURATION_RANGE",
    "IMAGENET_MEAN_255", "IMAGENET_STD_255", "PhotoDraws", "apply_crop", "convert", "crop_accepted",
    "draw_crop_box", "draw_flip", "draw_photometric", "hflip", "hue_step", "imrescale", "pad_to",
    "photometric", "random_crop_box", "ratio_scale", "rescale", "rescale_size", "sample_ratio",
    "saturation_step", "SegPipeline", "PRESETS", "preset", "norm_constants", "normalise_and_pad"]

# mmseg img_norm_cfg (RGB order, 0-255 units): the images here are RGB already.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


# ---------------------------------------------------------------- the pipeline

def _check_inputs(img: np.ndarray, labels: Mapping[str, np.ndarray]) -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise DataError(f"train_view needs an (H, W, 3) uint8 RGB image, got "
                        f"{getattr(img, 'dtype', type(img))} of shape {getattr(img, 'shape', None)}; "
                        f"open images with PIL .convert('RGB') and np.asarray")
    if not labels:
        raise DataError("train_view needs at least one label map (the primary label set first)")
    for k, v in labels.items():
        if not isinstance(v, np.ndarray) or v.dtype != np.uint8 or v.shape != img.shape[:2]:
            raise DataError(f"label map {k!r} must be a uint8 array of the image's size {img.shape[:2]}, "
                            f"got {getattr(v, 'dtype', type(v))} of shape {getattr(v, 'shape', None)}")


@dataclass(frozen=True)
class SegPipeline:
    """One dataset's mmseg training/test views (crop, scales, slide stride) from the authors' configs."""

    crop: int                         # crop x crop
    train_scale: tuple[int, int]      # mmseg img_scale for training, e.g. (2048, 512)
    test_scale: tuple[int, int]       # img_scale at test, e.g. (2048, 512)
    stride: int                       # slide-inference stride (used by the evaluator)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    ignore: int = IGNORE

    def __post_init__(self) -> None:
        if self.crop <= 0 or self.stride <= 0:
            raise DataError(f"crop and stride must be positive, got crop={self.crop}, stride={self.stride}")
        for name in ("train_scale", "test_scale"):
            s = getattr(self, name)
            if len(s) != 2 or min(s) <= 0:
                raise DataError(f"{name} must be two positive ints (long, short), got {s}")
        if not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise DataError(f"ratio_range must be (min, max) with 0 < min <= max, got {self.ratio_range}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise DataError(f"flip_prob must lie in [0, 1], got {self.flip_prob}")

    def train_view(self, img: np.ndarray, labels: Mapping[str, np.ndarray], rng: np.random.Generator
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]:
        """One augmented training view: (crop x crop uint8 image, padded labels, valid (h, w)).

        `labels` are (H, W) uint8 maps already `reduce_zero_label`'d (255 = ignore), all of the
        image's size; the FIRST one is the primary label set that RandomCrop's cat_max_ratio check
        reads. One draw of scale/crop/flip applies to the image and every label map alike.
        Draws from `rng`, in mmseg's order: the ratio (1), crop offsets (h, w) per box tried,
        the flip (1), then the photometric draws (`draw_photometric`).

        The image is padded with 0 at bottom/right in uint8; mmseg pads AFTER Normalize, i.e.
        with 0 in normalised space, so the caller must normalise and then zero every pixel
        outside (h, w) (`normalise_and_pad` does both). Labels are padded with `ignore`.
        """
        _check_inputs(img, labels)
        scale = ratio_scale(self.train_scale, sample_ratio(rng, self.ratio_range))
        img, labels = rescale(img, labels, scale)
        primary = next(iter(labels.values()))
        box = random_crop_box(primary, self.crop, rng, self.cat_max_ratio, self.ignore)
        img = apply_crop(img, box)
        labels = {k: apply_crop(v, box) for k, v in labels.items()}
        if draw_flip(rng, self.flip_prob):
            img = hflip(img)
            labels = {k: hflip(v) for k, v in labels.items()}
        img = photometric(img, draw_photometric(rng))
        return pad_to(img, labels, self.crop, self.ignore)

    def test_view(self, img: np.ndarray) -> np.ndarray:
        """mmseg test Resize: keep-ratio rescale to `test_scale` (mmcv imrescale, bilinear); no random."""
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            raise DataError(f"test_view needs an (H, W, 3) RGB image, got shape {getattr(img, 'shape', None)}")
        return imrescale(img, self.test_scale)


# From segmentation/configs_local/_base_/datasets/*.py (train Resize img_scale, test
# MultiScaleFlipAug img_scale, crop_size) and the lp_freeze12 model configs (test_cfg stride);
# the same as PROTOCOL.md section 5.
PRESETS: dict[str, SegPipeline] = {
    "ade20k": SegPipeline(crop=512, train_scale=(2048, 512), test_scale=(2048, 512), stride=341),
    "pascal": SegPipeline(crop=480, train_scale=(520, 520), test_scale=(3840, 480), stride=161),
    "lip": SegPipeline(crop=320, train_scale=(1024, 320), test_scale=(4096, 320), stride=161),
    # PartImageNet (no released mmseg config of the paper): ImageNet-sized images, the 512 views of
    # ADE20K (kinds/partimagenet.py; README "PartImageNet")
    "partimagenet": SegPipeline(crop=512, train_scale=(2048, 512), test_scale=(2048, 512), stride=341),
}


def preset(dataset: str) -> SegPipeline:
    """The preset of a dataset name: 'ade20k*' (parts, objects, 150 classes), 'pascal*', 'lip'."""
    for family in PRESETS:
        if dataset == family or dataset.startswith(family + "_"):
            return PRESETS[family]
    raise DataError(f"no segmentation pipeline preset for dataset {dataset!r}; known families: "
                    f"{sorted(PRESETS)} (e.g. 'ade20k_part', 'pascal_object', 'lip')")


# ---------------------------------------------------------------- Normalize + Pad (torch, device)

def norm_constants(mean: Sequence[float], std: Sequence[float], device):
    """(mean, 1 / std) as (1, 3, 1, 1) float32 tensors on `device`, for `normalise_and_pad`'s
    `constants` (made once: building them per batch copies from the host and waits for it)."""
    import torch

    if max(mean) <= 1.0:
        raise ValueError(f"mean {tuple(mean)} looks like 0-1 units; pass mean/std in 0-255 units "
                         f"(e.g. {IMAGENET_MEAN_255} / {IMAGENET_STD_255}) for 0-255 images")
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(device)
    stdinv = (1.0 / torch.tensor(std, dtype=torch.float64)).float().view(1, 3, 1, 1).to(device)
    return mean_t, stdinv


def normalise_and_pad(images, valid_hw, mean: Sequence[float] = IMAGENET_MEAN_255,
                      std: Sequence[float] = IMAGENET_STD_255, constants=None):
    """mmseg Normalize then Pad, on a batch moved as uint8: float32 (B, 3, H, W).

    `images`: (B, H, W, 3) or (B, 3, H, W) tensor of 0-255 RGB values (uint8 preferred);
    `valid_hw`: (B, 2) per-image valid (h, w) from `train_view`. mean/std are in 0-255 units
    (mmseg's img_norm_cfg). Pixels outside (h, w) become exactly 0, as mmseg's Pad after
    Normalize leaves them. `constants`: `norm_constants(mean, std, device)` made once (then
    `mean`/`std` are not read); with `valid_hw` on the device too nothing here waits for it.
    """
    import torch

    if images.ndim != 4:
        raise ValueError(f"normalise_and_pad needs a 4-d batch, got shape {tuple(images.shape)}")
    last, first = images.shape[-1] == 3, images.shape[1] == 3
    if last and first:
        raise ValueError(f"cannot tell the channel axis of a batch of shape {tuple(images.shape)}; "
                         f"pass (B, 3, H, W) images larger than 3 x 3")
    if last:
        images = images.permute(0, 3, 1, 2)
    elif not first:
        raise ValueError(f"normalise_and_pad needs 3 channels first or last, got shape {tuple(images.shape)}")
    x = images.float()
    mean_t, stdinv = constants if constants is not None else norm_constants(mean, std, x.device)
    x = (x - mean_t) * stdinv
    hw = torch.as_tensor(valid_hw, device=x.device).reshape(-1, 2)
    if hw.shape[0] != x.shape[0]:
        raise ValueError(f"valid_hw has {hw.shape[0]} rows for a batch of {x.shape[0]} images")
    _, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, height, 1) < hw[:, 0].view(-1, 1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width) < hw[:, 1].view(-1, 1, 1)
    return torch.where((rows & cols).unsqueeze(1), x, torch.zeros((), device=x.device))
