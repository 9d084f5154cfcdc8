"""Linear segmentation probe (PROTOCOL section 5) and its cached-feature trainer.

The head (`head`): `conv`, the released one (mmseg FCNHead with num_convs=0): ONE 1x1 conv on
the raw concatenated block maps, weights N(0, 0.01), bias 0, no normalisation; or `bn_conv`, a
named variant with a BatchNorm2d in front. Logits are bilinearly resized to the label size
(align_corners=False) for the loss, trained with AdamW under mmseg's poly schedule with linear
warm-up and cross entropy ignoring 255 (`resized_cross_entropy`: fused on a GPU so the
label-size logits are never stored). `train_seg_probe` trains on cached features of fixed views,
in a seeded new order every pass (`shuffled_batches`): the fast approximation of the paper's
augmented, slide-inference mmseg runs (`partaware.seg_online`); results must say so.
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from ..constants import IGNORE_INDEX as IGNORE
from ..devices import pick_device
from ..progress import Progress
from .batching import epoch_permutation
from .metrics import confusion_matrix, per_image_counts, seg_metrics
from .resize import bilinear_resize
from .resized_ce import resized_cross_entropy

log = logging.getLogger(__name__)

WARMUP_RATIO = 1e-6  # mmseg / mmcv default for linear warm-up
HEADS = ("conv", "bn_conv")


class SegProbe(nn.Module):
    """feats (B, in_channels, h, w) -> logits (B, num_classes, H, W) at `size` (default h, w).

    head `conv`: the released 1x1 conv alone; `bn_conv`: BatchNorm2d then the conv (a variant).
    """

    def __init__(self, in_channels: int, num_classes: int, generator=None, head: str = "conv"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"segmentation head {head!r} is unknown; use one of {HEADS} "
                             f"(conv = the released head, bn_conv = BatchNorm + conv variant)")
        self.head = head
        self.bn = nn.BatchNorm2d(in_channels) if head == "bn_conv" else None
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
        with torch.no_grad():  # mmseg's conv_seg init
            self.conv.weight.normal_(0.0, 0.01, generator=generator)
            self.conv.bias.zero_()

    def forward(self, feats: torch.Tensor, size=None) -> torch.Tensor:
        logits = self.conv(feats if self.bn is None else self.bn(feats))
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


def pass_order(n_rows: int, epoch: int, seed: int) -> np.ndarray:
    """The row order of pass `epoch`: a seeded permutation, new every pass, fixed per (seed, epoch)."""
    return epoch_permutation(int(n_rows), int(seed), int(epoch))


def shuffled_batches(read_rows: Callable[[np.ndarray], tuple], n_rows: int, batch_size: int,
                     seed: int) -> Callable[[int], Iterator[tuple]]:
    """`train_batches` for `train_seg_probe`: pass `epoch` yields `read_rows(rows)` for consecutive
    slices of `pass_order(n_rows, epoch, seed)`, so every pass sees new batches in a new order
    (as mmseg's shuffled sampler) and a rerun sees the same ones."""
    if n_rows < 1 or batch_size < 1:
        raise ValueError(f"shuffled_batches needs n_rows >= 1 and batch_size >= 1, "
                         f"got {n_rows}, {batch_size}")

    def batches(epoch: int) -> Iterator[tuple]:
        order = pass_order(n_rows, epoch, seed)
        for lo in range(0, n_rows, batch_size):
            yield read_rows(order[lo:lo + batch_size])
    return batches


def _takes_pass_number(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def train_seg_probe(train_batches: Callable[[int], Iterable[tuple]], num_classes: int, iters: int,
                    lr: float = 4e-4, betas=(0.9, 0.999), weight_decay: float = 0.05,
                    warmup_iters: int = 1500, power: float = 1.0, reduce_zero_label: bool = False,
                    avg_non_ignore: bool = False, seed: int = 0, device=None,
                    head: str = "conv") -> SegProbe:
    """Train a `SegProbe` (`head` conv | bn_conv) for `iters` steps over passes of
    `train_batches(epoch)` (epoch = 0, 1, ...; build it with `shuffled_batches` so each pass has
    its own seeded order) yielding (feats (B, C, h, w), labels (B, H, W)); fp16 feats are upcast.
    A callable taking no argument is still accepted and then gives the same order every pass.

    Weight decay applies to every parameter, as mmseg's default optimiser constructor does;
    `avg_non_ignore` as in `resized_cross_entropy` (False: mmseg 0.x, the paper's code).
    """
    if iters < 1:
        raise ValueError("iters must be at least 1")
    dev = pick_device(device)
    warmup_iters = min(warmup_iters, iters)
    per_pass = _takes_pass_number(train_batches)
    if not per_pass:
        log.warning("train_batches takes no pass number: every pass sees the same order; give it "
                    "an `epoch` argument (evals.segmentation.shuffled_batches) to shuffle")
    model, opt, it, epoch = None, None, 0, 0
    progress = Progress(log, iters, "iterations")
    while it < iters:
        empty = True
        for feats, labels in (train_batches(epoch) if per_pass else train_batches()):
            empty = False
            if it >= iters:
                break
            x = _feats(feats, dev)
            y = prepare_labels(labels, reduce_zero_label, dev)
            if model is None:
                model = SegProbe(x.shape[1], num_classes, torch.Generator().manual_seed(seed),
                                 head=head).to(dev)
                opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=tuple(betas),
                                        weight_decay=weight_decay)
            for group in opt.param_groups:
                group["lr"] = poly_lr(lr, it, iters, warmup_iters, power)
            loss = resized_cross_entropy(model(x), y, IGNORE, avg_non_ignore)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
            if progress.due(it):  # reading the loss waits for the device: only when logging
                progress.update(it, f"loss {float(loss.detach()):.4f}")
        if empty:
            raise ValueError("train_batches yielded nothing")
        epoch += 1
    return model


@torch.no_grad()
def evaluate_seg_probe(model: SegProbe, test_batches: Callable[[], Iterable[tuple]],
                       num_classes: int, reduce_zero_label: bool = False, device=None) -> dict:
    """seg_metrics (mIoU, mAcc, aAcc, iou, acc) of the arg-max at label size, from one
    confusion matrix accumulated over all test pixels; a `bn_conv` head uses its running statistics.
    `per_image` holds each test image's per-class pixel counts (`metrics.per_image_counts`:
    `inter`, `union`, `label`, each (images, C) int64, in batch order) for the bootstrap."""
    dev = pick_device(device)
    model.to(dev).eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=dev)
    counts = []
    for feats, labels in test_batches():
        y = prepare_labels(labels, reduce_zero_label, dev)
        pred = model(_feats(feats, dev), size=y.shape[-2:]).argmax(dim=1)
        conf += confusion_matrix(pred, y, num_classes, IGNORE)
        counts.append([t.cpu() for t in per_image_counts(pred, y, num_classes, IGNORE)])
    return {**seg_metrics(conf), "per_image": stack_counts(counts, num_classes)}


def stack_counts(counts: list, num_classes: int) -> dict[str, np.ndarray]:
    """Batches of `per_image_counts` -> {"inter", "union", "label"}: (images, C) int64 arrays."""
    return {name: (torch.cat([c[k] for c in counts]).numpy() if counts else np.zeros((0, num_classes), np.int64))
            for k, name in enumerate(("inter", "union", "label"))}
