"""Linear segmentation probe on cached dense features (PROTOCOL section 5).

BatchNorm2d over the concatenated block maps -> 1x1 conv -> logits bilinearly resized to the
label size (align_corners=False), trained with AdamW under mmseg's poly schedule with linear
warm-up and cross entropy ignoring 255 (`resized_cross_entropy`: fused on a GPU so the
label-size logits are never stored). Training on cached features of fixed views is the fast
approximation of the paper's augmented, slide-inference mmseg runs; results must say so.
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn

from ..devices import pick_device
from .metrics import confusion_matrix, seg_metrics
from .resize import bilinear_resize
from .resized_ce import resized_cross_entropy

IGNORE = 255
WARMUP_RATIO = 1e-6  # mmseg / mmcv default for linear warm-up


class SegProbe(nn.Module):
    """feats (B, in_channels, h, w) -> logits (B, num_classes, H, W) at `size` (default h, w)."""

    def __init__(self, in_channels: int, num_classes: int, generator=None):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        with torch.no_grad():  # mmseg's conv_seg init
            self.conv.weight.normal_(0.0, 0.01, generator=generator)
            self.conv.bias.zero_()

    def forward(self, feats: torch.Tensor, size=None) -> torch.Tensor:
        logits = self.conv(self.bn(feats))
        if size is not None and tuple(size) != tuple(logits.shape[-2:]):
            logits = bilinear_resize(logits, size)
        return logits


def poly_lr(base_lr: float, it: int, iters: int, warmup_iters: int, power: float = 1.0) -> float:
    """mmcv's poly policy (min_lr 0) with linear warm-up from `WARMUP_RATIO` of it; `it` is
    the 0-based iteration about to run."""
    lr = base_lr * (1.0 - it / iters) ** power
    if it < warmup_iters:
        lr *= 1.0 - (1.0 - it / warmup_iters) * (1.0 - WARMUP_RATIO)
    return lr


def prepare_labels(labels, reduce_zero_label: bool, dev) -> torch.Tensor:
    """int64 labels on `dev`; with reduce_zero_label, 0 (background) -> 255, others - 1."""
    t = (labels if isinstance(labels, torch.Tensor) else torch.from_numpy(np.asarray(labels)))
    t = t.to(dev, non_blocking=True).long()
    if reduce_zero_label:
        t = torch.where((t == 0) | (t == IGNORE), IGNORE, t - 1)
    return t


def _feats(feats, dev) -> torch.Tensor:
    t = feats if isinstance(feats, torch.Tensor) else torch.from_numpy(np.asarray(feats))
    return t.to(dev, non_blocking=True).float()


def train_seg_probe(train_batches: Callable[[], Iterable[tuple]], num_classes: int, iters: int,
                    lr: float = 4e-4, betas=(0.9, 0.999), weight_decay: float = 0.05,
                    warmup_iters: int = 1500, power: float = 1.0, reduce_zero_label: bool = False,
                    avg_non_ignore: bool = False, seed: int = 0, device=None) -> SegProbe:
    """Train a `SegProbe` for `iters` steps, cycling over `train_batches()` (called again
    whenever it runs out) of (feats (B, C, h, w), labels (B, H, W)); fp16 feats are upcast.

    Weight decay applies to every parameter, as mmseg's default optimiser constructor does;
    `avg_non_ignore` as in `resized_cross_entropy` (False: mmseg 0.x, the paper's code).
    """
    if iters < 1:
        raise ValueError("iters must be at least 1")
    dev = pick_device(device)
    warmup_iters = min(warmup_iters, iters)
    model, opt, it = None, None, 0
    while it < iters:
        empty = True
        for feats, labels in train_batches():
            empty = False
            if it >= iters:
                break
            x = _feats(feats, dev)
            y = prepare_labels(labels, reduce_zero_label, dev)
            if model is None:
                model = SegProbe(x.shape[1], num_classes, torch.Generator().manual_seed(seed)).to(dev)
                opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(betas),
                                        weight_decay=weight_decay)
            for group in opt.param_groups:
                group["lr"] = poly_lr(lr, it, iters, warmup_iters, power)
            loss = resized_cross_entropy(model(x), y, IGNORE, avg_non_ignore)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
        if empty:
            raise ValueError("train_batches yielded nothing")
    return model


@torch.no_grad()
def evaluate_seg_probe(model: SegProbe, test_batches: Callable[[], Iterable[tuple]],
                       num_classes: int, reduce_zero_label: bool = False, device=None) -> dict:
    """seg_metrics (mIoU, mAcc, aAcc, iou, acc) of the arg-max at label size, from one
    confusion matrix accumulated over all test pixels; BN uses its running statistics."""
    dev = pick_device(device)
    model.to(dev).eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=dev)
    for feats, labels in test_batches():
        y = prepare_labels(labels, reduce_zero_label, dev)
        pred = model(_feats(feats, dev), size=y.shape[-2:]).argmax(dim=1)
        conf += confusion_matrix(pred, y, num_classes, IGNORE)
    return seg_metrics(conf)
