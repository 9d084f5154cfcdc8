"""The paper's mmseg 0.x segmentation data pipeline (PROTOCOL.md section 5), in numpy + OpenCV.

Training view, in mmseg's order: Resize(img_scale, ratio_range) -> RandomCrop(crop, cat_max_ratio)
-> RandomFlip(0.5) -> PhotoMetricDistortion -> [Normalize -> Pad]. Test view: keep-ratio rescale
to the test img_scale. OpenCV does the resizing and the HSV conversion, as mmcv does, so pixels
match mmcv for the same draws. Images here are RGB where mmseg's are BGR: the photometric steps
are channel-order agnostic except HSV, and cv2's RGB2HSV on RGB equals BGR2HSV on the same pixels
stored BGR, so the results are the same pixels in the other channel order.

Every step is a small pure function taking its random draws explicitly, so tests can check it
against mmseg's formulas for the same draws; `SegPipeline.train_view` draws from one
`np.random.Generator` in mmseg's call order (see `SegPipeline.train_view`). A Generator is not
mmseg's global `np.random` stream, so the draws themselves differ from an mmseg run: the
transforms for given draws are what is identical.

No torch here except in `normalise_and_pad`, which imports it lazily (it runs on the device).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np

from partaware.data.errors import DataError

IGNORE = 255
# mmseg img_norm_cfg (RGB order, 0-255 units): the images here are RGB already.
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)
# PhotoMetricDistortion defaults (mmseg 0.x), used by every config of the paper.
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18
CROP_TRIES = 10  # RandomCrop re-draws a rejected box up to 10 times; the 11th box is kept unchecked


# ---------------------------------------------------------------- Resize (mmcv imrescale)

def sample_ratio(rng: np.random.Generator, ratio_range: tuple[float, float]) -> float:
    """mmseg `random_sample_ratio`: ONE uniform draw, r = u * (max - min) + min."""
    lo, hi = ratio_range
    return float(rng.random() * (hi - lo) + lo)


def ratio_scale(img_scale: tuple[int, int], ratio: float) -> tuple[int, int]:
    """The target scale for a drawn ratio: each side of img_scale times r, truncated (int())."""
    return int(img_scale[0] * ratio), int(img_scale[1] * ratio)


def rescale_size(old_wh: tuple[int, int], scale: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """mmcv `rescale_size`: ((new_w, new_h), factor) fitting (w, h) inside `scale` keeping its ratio.

    factor = min(max(scale) / long side, min(scale) / short side); each side becomes
    int(side * factor + 0.5). Sizes are (w, h), as in mmcv and cv2.
    """
    w, h = old_wh
    if w <= 0 or h <= 0:
        raise DataError(f"cannot rescale an empty image of size (w, h) = {old_wh}")
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    new = int(w * float(factor) + 0.5), int(h * float(factor) + 0.5)
    if new[0] < 1 or new[1] < 1:
        raise DataError(f"rescaling (w, h) = {old_wh} to fit {scale} gives an empty image {new}; "
                        f"the scale is too small for this image")
    return new, factor


def imrescale(arr: np.ndarray, scale: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """mmcv `imrescale`: keep-ratio cv2 resize to fit `scale`; bilinear, or nearest for labels."""
    h, w = arr.shape[:2]
    new_wh, _ = rescale_size((w, h), scale)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, new_wh, interpolation=interp)


def rescale(img: np.ndarray, labels: Mapping[str, np.ndarray], scale: tuple[int, int]
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """mmseg `Resize(keep_ratio=True)` for a given target scale: image bilinear, labels nearest.

    Labels use cv2 INTER_NEAREST, so they keep their original values (never blended).
    """
    return imrescale(img, scale), {k: imrescale(v, scale, nearest=True) for k, v in labels.items()}


# ---------------------------------------------------------------- RandomCrop

def draw_crop_box(shape_hw: tuple[int, int], crop: int, rng: np.random.Generator
                  ) -> tuple[int, int, int, int]:
    """mmseg `get_crop_bbox`: offsets uniform in [0, H - crop] then [0, W - crop] (two draws).

    Returns (y1, y2, x1, x2) with y2 = y1 + crop, x2 = x1 + crop; slicing clips them to the image,
    so an image smaller than the crop is taken whole on that axis.
    """
    margin_h = max(shape_hw[0] - crop, 0)
    margin_w = max(shape_hw[1] - crop, 0)
    y1 = int(rng.integers(0, margin_h + 1))
    x1 = int(rng.integers(0, margin_w + 1))
    return y1, y1 + crop, x1, x1 + crop


def apply_crop(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The (y1:y2, x1:x2) window of an image or label map."""
    y1, y2, x1, x2 = box
    return arr[y1:y2, x1:x2, ...]


def crop_accepted(label_crop: np.ndarray, cat_max_ratio: float, ignore: int = IGNORE) -> bool:
    """mmseg's check: more than one class (ignore not counted) and the largest one covers
    less than `cat_max_ratio` of the labelled (non-ignore) pixels."""
    values, counts = np.unique(label_crop, return_counts=True)
    counts = counts[values != ignore]
    return len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio


def random_crop_box(label: np.ndarray, crop: int, rng: np.random.Generator,
                    cat_max_ratio: float = 0.75, ignore: int = IGNORE) -> tuple[int, int, int, int]:
    """mmseg `RandomCrop` box: draw a box; while rejected, redraw, checking at most 10 boxes.

    With cat_max_ratio < 1 a box failing `crop_accepted` is replaced by a fresh draw up to 10
    times, so at most 11 boxes are drawn and the 11th is used unchecked. cat_max_ratio >= 1
    draws one box and checks nothing.
    """
    box = draw_crop_box(label.shape[:2], crop, rng)
    if cat_max_ratio < 1.0:
        for _ in range(CROP_TRIES):
            if crop_accepted(apply_crop(label, box), cat_max_ratio, ignore):
                break
            box = draw_crop_box(label.shape[:2], crop, rng)
    return box


# ---------------------------------------------------------------- RandomFlip

def draw_flip(rng: np.random.Generator, prob: float = 0.5) -> bool:
    """mmseg `RandomFlip`: one draw, flip when u < prob."""
    return bool(rng.random() < prob)


def hflip(arr: np.ndarray) -> np.ndarray:
    """Horizontal flip (mmcv `imflip`), as a contiguous copy."""
    return np.ascontiguousarray(arr[:, ::-1, ...])


# ---------------------------------------------------------------- PhotoMetricDistortion

@dataclass(frozen=True)
class PhotoDraws:
    """One PhotoMetricDistortion draw. A step whose value is None is skipped (its coin was 0).

    contrast_first: mmseg's `mode == 1` puts contrast right after brightness; mode 0 puts it
    last, after hue. (mmseg's own comment has the two modes the other way round; its code does
    this.)
    """
    brightness: float | None = None   # beta added, in U(-32, 32)
    contrast_first: bool = False
    contrast: float | None = None     # alpha multiplied, in U(0.5, 1.5)
    saturation: float | None = None   # alpha on HSV channel 1, in U(0.5, 1.5)
    hue: int | None = None            # added to HSV channel 0 mod 180, integer in [-18, 17]


def draw_photometric(rng: np.random.Generator) -> PhotoDraws:
    """Draw in mmseg's call order: brightness coin [+ delta], mode coin, (mode 1: contrast coin
    [+ alpha]), saturation coin [+ alpha], hue coin [+ delta], (mode 0: contrast coin [+ alpha]).

    A value is drawn only when its coin is 1, as in mmseg. Hue uses randint(-18, 18), so 18 itself
    is never drawn.
    """
    brightness = (float(rng.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
                  if rng.integers(2) else None)
    contrast_first = bool(rng.integers(2) == 1)
    contrast = None
    if contrast_first:
        contrast = float(rng.uniform(*CONTRAST_RANGE)) if rng.integers(2) else None
    saturation = float(rng.uniform(*SATURATION_RANGE)) if rng.integers(2) else None
    hue = int(rng.integers(-HUE_DELTA, HUE_DELTA)) if rng.integers(2) else None
    if not contrast_first:
        contrast = float(rng.uniform(*CONTRAST_RANGE)) if rng.integers(2) else None
    return PhotoDraws(brightness, contrast_first, contrast, saturation, hue)


def convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg `convert`: float32 img * alpha + beta, clipped to 0-255, truncated to uint8."""
    out = img.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255).astype(np.uint8)


def saturation_step(img: np.ndarray, alpha: float) -> np.ndarray:
    """Scale HSV saturation (channel 1) by alpha with `convert`'s clip/truncate; RGB in and out."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=alpha)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def hue_step(img: np.ndarray, delta: int) -> np.ndarray:
    """Shift HSV hue (channel 0, OpenCV's 0-179 scale) by delta modulo 180; RGB in and out."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + delta) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def photometric(img: np.ndarray, draws: PhotoDraws) -> np.ndarray:
    """mmseg `PhotoMetricDistortion` on a uint8 RGB image for the given draws."""
    if draws.brightness is not None:
        img = convert(img, beta=draws.brightness)
    if draws.contrast_first and draws.contrast is not None:
        img = convert(img, alpha=draws.contrast)
    if draws.saturation is not None:
        img = saturation_step(img, draws.saturation)
    if draws.hue is not None:
        img = hue_step(img, draws.hue)
    if not draws.contrast_first and draws.contrast is not None:
        img = convert(img, alpha=draws.contrast)
    return img


# ---------------------------------------------------------------- Pad

def pad_to(img: np.ndarray, labels: Mapping[str, np.ndarray], crop: int, ignore: int = IGNORE
           ) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[int, int]]:
    """mmcv `impad(shape=(crop, crop))` at bottom/right: image 0, labels `ignore`.

    Returns (image, labels, (h, w)) with (h, w) the valid extent before padding. mmseg pads the
    NORMALISED image with 0; here the uint8 image is padded with 0 and the caller must zero the
    area outside (h, w) after normalising (`normalise_and_pad`).
    """
    h, w = img.shape[:2]
    if h > crop or w > crop:
        raise DataError(f"image of size (h, w) = {(h, w)} is larger than the crop {crop}; crop it first")
    out = np.zeros((crop, crop) + img.shape[2:], dtype=img.dtype)
    out[:h, :w] = img
    padded = {}
    for k, v in labels.items():
        lab = np.full((crop, crop), ignore, dtype=v.dtype)
        lab[:h, :w] = v
        padded[k] = lab
    return out, padded, (h, w)


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
}


def preset(dataset: str) -> SegPipeline:
    """The preset of a dataset name: 'ade20k*' (parts, objects, 150 classes), 'pascal*', 'lip'."""
    for family in PRESETS:
        if dataset == family or dataset.startswith(family + "_"):
            return PRESETS[family]
    raise DataError(f"no segmentation pipeline preset for dataset {dataset!r}; known families: "
                    f"{sorted(PRESETS)} (e.g. 'ade20k_part', 'pascal_object', 'lip')")


# ---------------------------------------------------------------- Normalize + Pad (torch, device)

def normalise_and_pad(images, valid_hw, mean: Sequence[float] = IMAGENET_MEAN_255,
                      std: Sequence[float] = IMAGENET_STD_255):
    """mmseg Normalize then Pad, on a batch moved as uint8: float32 (B, 3, H, W).

    `images`: (B, H, W, 3) or (B, 3, H, W) tensor of 0-255 RGB values (uint8 preferred);
    `valid_hw`: (B, 2) per-image valid (h, w) from `train_view`. mean/std are in 0-255 units
    (mmseg's img_norm_cfg). Pixels outside (h, w) become exactly 0, as mmseg's Pad after
    Normalize leaves them.
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
    if max(mean) <= 1.0:
        raise ValueError(f"mean {tuple(mean)} looks like 0-1 units; pass mean/std in 0-255 units "
                         f"(e.g. {IMAGENET_MEAN_255} / {IMAGENET_STD_255}) for 0-255 images")
    x = images.float()
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    stdinv = (1.0 / torch.tensor(std, dtype=torch.float64)).float().to(x.device).view(1, 3, 1, 1)
    x = (x - mean_t) * stdinv
    hw = torch.as_tensor(valid_hw, device=x.device).reshape(-1, 2)
    if hw.shape[0] != x.shape[0]:
        raise ValueError(f"valid_hw has {hw.shape[0]} rows for a batch of {x.shape[0]} images")
    _, _, height, width = x.shape
    rows = torch.arange(height, device=x.device).view(1, height, 1) < hw[:, 0].view(-1, 1, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width) < hw[:, 1].view(-1, 1, 1)
    return torch.where((rows & cols).unsqueeze(1), x, torch.zeros((), device=x.device))
