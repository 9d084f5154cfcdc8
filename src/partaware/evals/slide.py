"""Slide inference as mmseg 0.x `EncoderDecoder.slide_inference` does it, for several heads at once.

The image is covered by crop x crop windows on a grid of `max(H - crop + stride - 1, 0) // stride
+ 1` rows (columns likewise); a window running past the far border is moved back inside
(y1 = max(y2 - crop, 0)), and where the image is smaller than the crop the window is the whole
side and runs unpadded. Each window's logits are resized (bilinear, align_corners=False) to the
window, summed into a full-size map and divided by the number of windows covering each pixel.
One forward per window serves every head: `forward` returns a dict of logits, one per label set,
each with its own class count. `resize_argmax` then takes the averaged logits to the ORIGINAL
image size, in row chunks so a large image never holds all its full-size logits at once.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from .resize import interp_matrix


def grid_size(size: int, crop: int, stride: int) -> int:
    """Windows along one axis, mmseg's formula."""
    if crop < 1 or stride < 1:
        raise ValueError(f"crop and stride must be positive, got crop={crop}, stride={stride}")
    return max(size - crop + stride - 1, 0) // stride + 1


def window_boxes(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of every window in mmseg's order (rows outer, columns inner).

    All windows of one image have the same size: crop on an axis at least crop long, the whole
    side otherwise."""
    boxes = []
    for i in range(grid_size(height, crop, stride)):
        for j in range(grid_size(width, crop, stride)):
            y2, x2 = min(i * stride + crop, height), min(j * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def window_counts(height: int, width: int, crop: int, stride: int) -> torch.Tensor:
    """(H, W) number of windows covering each pixel (mmseg's count_mat)."""
    counts = torch.zeros(height, width)
    for y1, y2, x1, x2 in window_boxes(height, width, crop, stride):
        counts[y1:y2, x1:x2] += 1
    return counts


def slide_inference(forward: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], img: torch.Tensor,
                    crop: int, stride: int, window_batch: int = 1) -> dict[str, torch.Tensor]:
    """Averaged window logits {name: (B, K_name, H, W) float32} of `img` (B, 3, H, W).

    `forward(windows)` gets (n * B, 3, h, w) windows and returns {name: logits (n * B, K, h', w')}
    at any resolution (the token grid); they are resized to the window here. `window_batch` windows
    go through `forward` together (all windows of an image share one size, so they stack); 1 is
    mmseg's one window at a time, more is faster and equal up to float rounding.
    """
    if img.dim() != 4:
        raise ValueError(f"slide_inference needs a (B, 3, H, W) image batch, got shape {tuple(img.shape)}")
    b, _, height, width = img.shape
    boxes = window_boxes(height, width, crop, stride)
    counts = window_counts(height, width, crop, stride).to(img.device)
    preds: dict[str, torch.Tensor] = {}
    for start in range(0, len(boxes), max(1, int(window_batch))):
        group = boxes[start:start + max(1, int(window_batch))]
        windows = torch.cat([img[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
        out = forward(windows)
        if not isinstance(out, Mapping):
            raise TypeError(f"forward must return a dict of logits per head, got {type(out).__name__}")
        for name, logits in out.items():
            logits = F.interpolate(logits.float(), size=windows.shape[-2:], mode="bilinear",
                                   align_corners=False)
            if name not in preds:
                preds[name] = img.new_zeros((b, logits.shape[1], height, width), dtype=torch.float32)
            for k, (y1, y2, x1, x2) in enumerate(group):
                preds[name][:, :, y1:y2, x1:x2] += logits[k * b:(k + 1) * b]
    return {name: p / counts for name, p in preds.items()}


def resize_argmax(logits: torch.Tensor, size, max_elements: int = 1 << 26) -> torch.Tensor:
    """argmax over classes of `logits` (B, K, h, w) bilinearly resized (align_corners=False) to
    `size` (H, W): (B, H, W) int64. Output rows go in chunks of at most `max_elements` logits;
    the weights are F.interpolate's, so this equals interpolate + argmax up to float rounding."""
    b, k, h, w = logits.shape
    out_h, out_w = (int(s) for s in size)
    logits = logits.float()
    rows = interp_matrix(h, out_h, logits.device)
    cols = interp_matrix(w, out_w, logits.device)
    chunk = max(1, max_elements // max(1, b * k * out_w))
    pred = torch.empty(b, out_h, out_w, dtype=torch.long, device=logits.device)
    for r0 in range(0, out_h, chunk):
        part = torch.einsum("rh,bkhw->bkrw", rows[r0:r0 + chunk], logits) @ cols.T
        pred[:, r0:r0 + chunk] = part.argmax(dim=1)
    return pred
