"""What the online probe trains on: draw `d` is a fixed view of a fixed image.

Draws are numbered 0, 1, 2, ...: iteration `it` of batch size B takes draws [it * B, (it + 1) * B).
Draw d falls in pass d // n over the n images (each pass a seeded permutation of them, like
mmseg's shuffled InfiniteSampler) and its view comes from an rng seeded by (seed, d). So the
whole data order is a function of the iteration number, a run resumed at iteration `it` sees
exactly the batches an uninterrupted one would, and DataLoader workers may decode in any order.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.errors import DataError
from ..data.segfolder import OFFSET_KEY, check_same_size, load_label, load_seg_image, reduce_zero_label
from ..evals.batching import epoch_permutation

# OpenCV's thread pool does not survive fork(): a DataLoader worker forked after the parent used it
# can hang in its first cv2 call. One thread per process; the workers are the parallelism.
cv2.setNumThreads(1)

_ORDER, _VIEW = 0, 1  # separate seed streams for the image order and the augmentation draws


def epoch_order(n_images: int, epoch: int, seed: int) -> np.ndarray:
    """The image order of pass `epoch`: a seeded permutation, new every pass."""
    return epoch_permutation(n_images, seed, epoch, stream=_ORDER)


def image_of_draw(draw: int, n_images: int, seed: int) -> int:
    """Index of the image that draw `draw` shows."""
    epoch, pos = divmod(int(draw), int(n_images))
    return int(epoch_order(n_images, epoch, seed)[pos])


def view_rng(draw: int, seed: int) -> np.random.Generator:
    """The augmentation rng of draw `draw`: the same draw always gives the same view."""
    return np.random.default_rng([int(seed), _VIEW, int(draw)])


def load_labels(sample: Mapping, label_sets: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Every label set of a sample, checked (`load_label`) and `reduce_zero_label`'d, in order."""
    offsets = sample.get(OFFSET_KEY, {})
    return {name: reduce_zero_label(load_label(sample[name], classes, offsets.get(name, 0)))
            for name, classes in label_sets.items()}


def load_pair(sample: Mapping, label_sets: Mapping[str, int]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A sample's image (decoded as the released code does, `load_seg_image`) and its label maps
    (`load_labels`), checked to be of one size."""
    img = load_seg_image(sample["img"])
    labels = load_labels(sample, label_sets)
    check_same_size(sample["img"], img, labels, sample)
    return img, labels


class SegDraws(Dataset):
    """Map-style dataset over draw numbers: item d = (image uint8 (crop, crop, 3), labels uint8
    (L, crop, crop) in `label_sets` order, valid (h, w) int64), from `pipeline.train_view`.

    Decoding (JPEG / PNG) and augmentation happen here, i.e. in the DataLoader workers. The first
    label set is the one RandomCrop's cat_max_ratio check reads (as in a one-label mmseg run).
    """

    def __init__(self, samples: Sequence[Mapping], label_sets: Mapping[str, int], pipeline, seed: int = 0):
        if not samples:
            raise ValueError("no training samples")
        if not label_sets:
            raise ValueError("label_sets is empty: give at least one {name: classes}")
        missing = [n for n in label_sets if n not in samples[0]]
        if missing:
            raise DataError(f"samples have no label set(s) {missing}; they have {sorted(samples[0])}: give each "
                            "label set of the config a label folder (datasets.<name>.label_sets)")
        self.samples, self.label_sets = list(samples), dict(label_sets)
        self.pipeline, self.seed = pipeline, int(seed)
        self._orders: dict[int, np.ndarray] = {}

    def _image(self, draw: int) -> int:
        epoch, pos = divmod(draw, len(self.samples))
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.clear()
            self._orders[epoch] = epoch_order(len(self.samples), epoch, self.seed)
        return int(self._orders[epoch][pos])

    def __getitem__(self, draw: int):
        sample = self.samples[self._image(int(draw))]
        img, labels = load_pair(sample, self.label_sets)
        img, labels, hw = self.pipeline.train_view(img, labels, view_rng(int(draw), self.seed))
        stacked = np.stack([labels[name] for name in self.label_sets])
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(stacked), torch.tensor(hw)


class DrawRange(Sampler):
    """Draw numbers start, start + 1, ..., stop - 1."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = int(start), int(stop)

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def draw_loader(dataset: SegDraws, batch_size: int, start_iter: int, iters: int, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:
    """Batches of iterations start_iter .. iters - 1: batch `it` is draws [it * B, (it + 1) * B)."""
    extra = dict(prefetch_factor=4) if num_workers else {}
    draws = DrawRange(start_iter * batch_size, iters * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=draws, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False, **extra)
