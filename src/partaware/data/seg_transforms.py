"""The mmseg 0.x segmentation transforms (PROTOCOL.md section 5) as small pure numpy + OpenCV
functions: Resize (mmcv imrescale), RandomCrop, RandomFlip, PhotoMetricDistortion, Pad.

OpenCV does the resizing and the HSV conversion, as mmcv does, so pixels match mmcv for the
same draws. Images here are RGB where mmseg's are BGR: the photometric steps are channel-order
agnostic except HSV, and cv2's RGB2HSV on RGB equals BGR2HSV on the same pixels stored BGR, so
the results are the same pixels in the other channel order. Every step takes its random draws
explicitly, so tests can check it against mmseg's formulas for the same draws;
`seg_pipeline.SegPipeline.train_view` composes them in mmseg's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import cv2
import numpy as np

from partaware.constants import IGNORE_INDEX as IGNORE
from partaware.data.errors import DataError
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


def uint8_counts(arr: np.ndarray) -> np.ndarray:
    """How often each value 0..255 occurs in a uint8 array, as int64 (256,). OpenCV's histogram
    counts exactly below 2**24 pixels (float32 bins); larger arrays are counted by numpy."""
    if arr.ndim == 2 and arr.size < 2 ** 24 and arr.strides[-1] == 1:
        return cv2.calcHist([arr], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(arr.ravel(), minlength=256)


def crop_accepted(label_crop: np.ndarray, cat_max_ratio: float, ignore: int = IGNORE) -> bool:
    """mmseg's check: more than one class (ignore not counted) and the largest one covers
    less than `cat_max_ratio` of the labelled (non-ignore) pixels."""
    if label_crop.dtype == np.uint8 and 0 <= ignore < 256:  # the counts np.unique gives, by counting
        counts = uint8_counts(label_crop)
        counts[ignore] = 0
        counts = counts[counts > 0]
    else:
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
    if arr.ndim in (2, 3) and arr.dtype == np.uint8 and arr.strides[-1] == arr.itemsize:
        return cv2.flip(arr, 1)  # the same copy in one pass (numpy's reversed copy is elementwise)
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


_UINT8 = np.arange(256, dtype=np.uint8)


def _convert_values(values: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    out = values.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255).astype(np.uint8)


def _lookup(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """`lut[img]` for uint8 `img` (OpenCV's LUT where the layout allows: one pass, no index copy)."""
    if img.flags.c_contiguous and img.ndim in (2, 3) and lut.ndim == 1:
        return cv2.LUT(img, lut)
    return lut[img]


def convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg `convert`: float32 img * alpha + beta, clipped to 0-255, truncated to uint8.

    A uint8 image takes the same arithmetic on its 256 possible values and looks each pixel up:
    the same output as computing it per pixel, without three full-size float copies."""
    if img.dtype == np.uint8:
        return _lookup(img, _convert_values(_UINT8, alpha, beta))
    return _convert_values(img, alpha, beta)


def _hsv_step(img: np.ndarray, channel: int, lut: np.ndarray) -> np.ndarray:
    """RGB -> HSV, `lut` on one HSV channel (the others unchanged), -> RGB."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    luts = np.stack([_UINT8] * 3, axis=-1)
    luts[:, channel] = lut
    return cv2.cvtColor(cv2.LUT(hsv, luts.reshape(1, 256, 3)), cv2.COLOR_HSV2RGB)


def saturation_step(img: np.ndarray, alpha: float) -> np.ndarray:
    """Scale HSV saturation (channel 1) by alpha with `convert`'s clip/truncate; RGB in and out."""
    return _hsv_step(img, 1, _convert_values(_UINT8, alpha, 0.0))


def hue_step(img: np.ndarray, delta: int) -> np.ndarray:
    """Shift HSV hue (channel 0, OpenCV's 0-179 scale) by delta modulo 180; RGB in and out."""
    return _hsv_step(img, 0, ((_UINT8.astype(int) + delta) % 180).astype(np.uint8))


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
