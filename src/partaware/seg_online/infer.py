"""Scoring the online heads the paper's way: keep-ratio resize to the test scale, slide inference
with the dataset's crop and stride (one encoder forward per window for all heads), logits resized
to the ORIGINAL image, argmax, one confusion matrix per label set over the whole split against the
original (reduce_zero_label'd) label maps."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.errors import DataError
from ..data.seg_pipeline import normalise_and_pad
from ..devices import resolve_device
from ..evals.metrics import confusion_matrix, per_image_counts, seg_metrics
from ..evals.segmentation import IGNORE, stack_counts
from ..evals.slide import resize_argmax, slide_inference
from ..progress import Progress
from .draws import load_pair
from .forward import block_maps, lowp_weights
from .train import amp_dtype, mean_std_255


log = logging.getLogger(__name__)


class TestViews(Dataset):
    """Item i = (test view uint8 (H', W', 3), labels uint8 (L, H, W) at the original size)."""

    def __init__(self, samples: Sequence[Mapping], label_sets: Mapping[str, int], pipeline):
        self.samples, self.label_sets, self.pipeline = list(samples), dict(label_sets), pipeline

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        img, labels = load_pair(sample, self.label_sets)
        view = np.ascontiguousarray(self.pipeline.test_view(img))
        return torch.from_numpy(view), torch.from_numpy(np.stack([labels[n] for n in self.label_sets]))


@torch.inference_mode()
def evaluate_online(encoder, heads: Mapping[str, torch.nn.Module], samples: Sequence[Mapping],
                    label_sets: Mapping[str, int], pipeline, blocks: Sequence[int], device=None, amp=None,
                    num_workers: int = 0, window_batch: int = 8, log_every_s: float = 60.0) -> dict[str, dict]:
    """{label set: seg_metrics (mIoU, mAcc, aAcc, iou, acc)} of `heads` on `samples`, with
    `per_image` (each sample's per-class pixel counts, in sample order) for the bootstrap.

    `window_batch` windows of one image share a forward (equal to mmseg's one at a time up to float
    rounding); `num_workers` DataLoader workers decode and resize the images; a progress line
    every `log_every_s` seconds (slide inference of a large split takes long).
    """
    dev = resolve_device(device)
    amp = amp_dtype(amp, dev)
    encoder.to(dev).eval()
    names, blocks = list(label_sets), [int(b) for b in blocks]
    missing = [n for n in names if n not in heads]
    if missing:
        raise DataError(f"no trained head for label set(s) {missing}; heads: {sorted(heads)}: the training "
                        "state holds other label sets; delete it (results/state/segment/...) and rerun")
    for n in names:
        heads[n].to(dev).eval()
    mean, std = mean_std_255(encoder)
    conf = {n: torch.zeros(label_sets[n], label_sets[n], dtype=torch.int64, device=dev) for n in names}
    counts = {n: [] for n in names}

    def forward(windows: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = block_maps(encoder, windows, blocks, amp)
        return {n: heads[n](feats) for n in names}

    loader = DataLoader(TestViews(samples, label_sets, pipeline), batch_size=None, num_workers=num_workers)
    progress = Progress(log, len(samples), "test images", every=log_every_s)
    with lowp_weights(encoder, amp):
        for done, (view, labels) in enumerate(loader, 1):
            h, w = view.shape[:2]
            x = normalise_and_pad(view[None].to(dev), [[h, w]], mean, std)
            logits = slide_inference(forward, x, pipeline.crop, pipeline.stride, window_batch)
            labels = labels.to(dev)
            for i, n in enumerate(names):
                pred = resize_argmax(logits[n], labels.shape[-2:])[0]
                conf[n] += confusion_matrix(pred, labels[i], label_sets[n], IGNORE)
                counts[n].append([t.cpu() for t in per_image_counts(pred, labels[i], label_sets[n], IGNORE)])
            progress.update(done)
    return {n: {**seg_metrics(conf[n]), "per_image": stack_counts(counts[n], label_sets[n])} for n in names}
