"""Small metrics shared by the evaluations: confusion matrices, mmseg-style segmentation
scores, and top-1 accuracy.

Accuracies and IoUs are fractions in [0, 1] (multiply by 100 for the paper's tables).
"""
from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(pred, label, num_classes: int, ignore_index: int = 255):
    """(C, C) int64 counts, rows = ground truth, columns = prediction.

    Pixels whose label is `ignore_index` are skipped. Works on any device with torch tensors
    (so a probe can accumulate on the GPU); numpy in gives numpy out.
    """
    as_numpy = not isinstance(pred, torch.Tensor)
    pred_t = torch.as_tensor(pred).reshape(-1).long()
    label_t = torch.as_tensor(label).reshape(-1).to(pred_t.device).long()
    if pred_t.shape != label_t.shape:
        raise ValueError(f"pred and label sizes differ: {pred_t.numel()} vs {label_t.numel()}")
    keep = label_t != ignore_index
    pred_t, label_t = pred_t[keep], label_t[keep]
    if label_t.numel():
        bad_label = (label_t < 0) | (label_t >= num_classes)
        bad_pred = (pred_t < 0) | (pred_t >= num_classes)
        if bool((bad_label | bad_pred).any()):
            raise ValueError(f"labels or predictions outside [0, {num_classes}) (ignore={ignore_index})")
    conf = torch.bincount(label_t * num_classes + pred_t, minlength=num_classes * num_classes)
    conf = conf.reshape(num_classes, num_classes)
    return conf.cpu().numpy() if as_numpy else conf


def per_image_counts(pred, label, num_classes: int, ignore_index: int = 255):
    """Per-image, per-class pixel counts of a batch (B, H, W) of predictions and labels:
    (intersection, union, label), each (B, C) int64 (numpy in, numpy out).

    Summed over images they are the diagonal, row + column - diagonal and row sums of the
    batch's `confusion_matrix`: what `evals.bootstrap` resamples images with.
    """
    as_numpy = not isinstance(pred, torch.Tensor)
    pred_t = torch.as_tensor(pred).long()
    label_t = torch.as_tensor(label).to(pred_t.device).long()
    if pred_t.shape != label_t.shape:
        raise ValueError(f"pred and label shapes differ: {tuple(pred_t.shape)} vs {tuple(label_t.shape)}")
    if pred_t.dim() == 2:
        pred_t, label_t = pred_t[None], label_t[None]
    n, c = pred_t.shape[0], num_classes
    image = torch.arange(n, device=pred_t.device).view(-1, *[1] * (pred_t.dim() - 1)).expand_as(pred_t)
    keep = label_t != ignore_index
    lab, prd, img = label_t[keep], pred_t[keep], image[keep]
    if lab.numel() and bool(((lab < 0) | (lab >= c) | (prd < 0) | (prd >= c)).any()):
        raise ValueError(f"labels or predictions outside [0, {c}) (ignore={ignore_index})")
    lab_key, prd_key = img * c + lab, img * c + prd
    area_label = torch.bincount(lab_key, minlength=n * c).view(n, c)
    area_pred = torch.bincount(prd_key, minlength=n * c).view(n, c)
    inter = torch.bincount(lab_key[lab == prd], minlength=n * c).view(n, c)
    out = (inter, area_label + area_pred - inter, area_label)
    return tuple(t.cpu().numpy() for t in out) if as_numpy else out


def seg_metrics(conf) -> dict:
    """mIoU, mAcc, aAcc and per-class IoU / accuracy from a confusion matrix, as mmseg does.

    Per class c: IoU = TP / (GT + Pred - TP), Acc = TP / GT. A class absent from both ground
    truth and prediction has IoU NaN; a class without ground truth has Acc NaN (and IoU 0 if it
    was predicted, as mmseg counts it). The means are nan-means over classes.
    """
    conf = np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, dtype=np.float64)
    tp = np.diag(conf)
    area_label = conf.sum(axis=1)
    area_pred = conf.sum(axis=0)
    union = area_label + area_pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
        acc = tp / area_label
        aacc = tp.sum() / area_label.sum()
    nan_mean = lambda a: float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")  # noqa: E731
    return {"mIoU": nan_mean(iou), "mAcc": nan_mean(acc), "aAcc": float(aacc), "iou": iou, "acc": acc}


def top1(logits, labels) -> float:
    """Fraction of rows whose arg-max matches the label."""
    logits = torch.as_tensor(logits)
    labels = torch.as_tensor(labels).to(logits.device)
    if labels.numel() == 0:
        return float("nan")
    return float((logits.argmax(dim=1) == labels).float().mean())
