"""The cached segmentation protocol: a linear probe (PROTOCOL section 5) trained on cached features.

The heads, their schedule and their optimiser step are `seg_heads` (shared with the paper's
online protocol, `partaware.seg_online`). `train_seg_probe` trains on cached features of fixed
views, in a seeded new order every pass (`shuffled_batches`): the fast approximation of the
paper's augmented, slide-inference mmseg runs; results must say so.
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..constants import IGNORE_INDEX as IGNORE
from ..devices import pick_device
from ..progress import Progress
from .batching import epoch_permutation
from .metrics import confusion_matrix, per_image_counts, seg_metrics
from .resized_ce import check_labels
from .seg_heads import HEADS, WARMUP_RATIO, HeadTrainer, SegHeads, SegProbe, poly_lr

__all__ = ["HEADS", "IGNORE", "WARMUP_RATIO", "SegProbe", "evaluate_seg_probe", "pass_order", "poly_lr",
           "prepare_labels", "shuffled_batches", "stack_counts", "train_seg_probe"]

log = logging.getLogger(__name__)


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
                    head: str = "conv", log_every_s: float = 30.0) -> SegProbe:
    """Train a `SegProbe` (`head` conv | bn_conv) for `iters` steps over passes of
    `train_batches(epoch)` (epoch = 0, 1, ...; build it with `shuffled_batches` so each pass has
    its own seeded order) yielding (feats (B, C, h, w), labels (B, H, W)); fp16 feats are upcast.
    A callable taking no argument is still accepted and then gives the same order every pass.

    Weight decay applies to every parameter, as mmseg's default optimiser constructor does;
    `avg_non_ignore` as in `resized_cross_entropy` (False: mmseg 0.x, the paper's code).
    A progress line every `log_every_s` seconds (`segmentation.log_every_s`).
    """
    if iters < 1:
        raise ValueError("iters must be at least 1")
    dev = pick_device(device)
    per_pass = _takes_pass_number(train_batches)
    if not per_pass:
        log.warning("train_batches takes no pass number: every pass sees the same order; give it "
                    "an `epoch` argument (evals.segmentation.shuffled_batches) to shuffle")
    trainer, it, epoch = None, 0, 0
    progress = Progress(log, iters, "iterations", every=log_every_s)
    while it < iters:
        empty = True
        for feats, labels in (train_batches(epoch) if per_pass else train_batches()):
            empty = False
            if it >= iters:
                break
            x = _feats(feats, dev)
            y = _checked_labels(labels, reduce_zero_label, num_classes, dev)
            if trainer is None:
                heads = SegHeads(x.shape[1], {"probe": num_classes}, {"probe": seed}, head=head).to(dev)
                trainer = HeadTrainer(heads, iters, lr, betas, weight_decay, warmup_iters, power, avg_non_ignore)
            loss = trainer.step(x, [y], it)
            it += 1
            if progress.due(it):  # reading the loss waits for the device: only when logging
                progress.update(it, f"loss {float(loss[0]):.4f}")
        if empty:
            raise ValueError("train_batches yielded nothing")
        epoch += 1
    return trainer.heads.probes()["probe"]


def _checked_labels(labels, reduce_zero_label: bool, num_classes: int, dev) -> torch.Tensor:
    """`prepare_labels`, range-checked on the host before the copy (labels on a device are checked
    there), so the training step itself never waits for the device."""
    on_host = not (isinstance(labels, torch.Tensor) and labels.device.type != "cpu")
    y = prepare_labels(labels, reduce_zero_label, "cpu" if on_host else dev)
    check_labels(y, num_classes, IGNORE)
    return y.to(dev, non_blocking=True) if on_host else y


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
