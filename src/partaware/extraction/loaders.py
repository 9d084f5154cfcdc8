"""What DataLoader workers do for extraction: decode, cut and collate uint8 batches.

Each item is one image, decoded once for all of its rows (part patches, or the image and its
label maps); the batch stays uint8 so it is cheap to pin and copy, and the device normalises it
through a table the transform itself filled (`split_transform`, `normalise`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..data import segfolder
from ..data.errors import DataError
from ..data.geometry import box_problem
from ..data.images import crop_patch, load_rgb


def split_transform(transform):
    """A `patch_transform` -> (its PIL steps, a (3, 256) table of normalised values).

    The workers run only the PIL steps and send uint8 pixels; `normalise` then looks each pixel
    up in the table, which the transform's own ToTensor and Normalize filled from the values
    0..255, so the result equals the whole transform's bit for bit.
    """
    from torchvision import transforms as T

    *pil_steps, to_tensor, normalize = transform.transforms
    if not (isinstance(to_tensor, T.ToTensor) and isinstance(normalize, T.Normalize)):
        raise TypeError("expected a transform ending in ToTensor, Normalize (data.images.patch_transform)")
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)  # (1, 256, RGB)
    table = normalize(to_tensor(Image.fromarray(ramp)))[:, 0, :]
    return T.Compose(pil_steps), table.contiguous()


def normalise(patches: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, H, W, RGB) uint8 -> (B, 3, H, W) float32 through `table` (3, 256), on their device."""
    offsets = torch.arange(3, device=patches.device) * 256
    return table.reshape(-1)[patches.long() + offsets].permute(0, 3, 1, 2).contiguous()


def decode_or_skip(path, rows, on_bad_image: str):
    """(image, None); or, under `skip`, (None, the item that leaves every row of the unreadable
    image out with its reason). Any other mode lets the DataError naming the file through."""
    try:
        return load_rgb(path), None
    except DataError as err:
        if on_bad_image != "skip":
            raise
        return None, (rows, [None] * len(rows), [str(err)])


class PatchImages(torch.utils.data.Dataset):
    """One item per image (a run of consecutive index rows with one path): its part patches as
    uint8 (H, W, RGB) arrays, the image decoded once."""

    def __init__(self, index: pd.DataFrame, pil_steps, on_bad_image: str):
        paths = index["image_path"].to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]]) if len(paths) else np.zeros(0, int)
        self.bounds = np.append(starts, len(paths))
        self.paths = paths[starts]
        self.rows = index["row"].to_numpy(np.int64)
        self.boxes = index[["x0", "y0", "x1", "y1"]].to_numpy(np.int64)
        self.pil_steps = pil_steps
        self.on_bad_image = on_bad_image

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        """(rows, one uint8 patch or None per row, reasons for the None rows)."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        rows = self.rows[lo:hi]
        image, skipped = decode_or_skip(self.paths[i], rows, self.on_bad_image)
        if skipped:
            return skipped
        patches, errors = [], []
        for box in self.boxes[lo:hi].tolist():
            problem = box_problem(box, *image.size)
            if problem is None:
                patches.append(np.asarray(self.pil_steps(crop_patch(image, box))))
                continue
            message = f"{self.paths[i]}: {problem}"
            if self.on_bad_image != "skip":
                raise DataError(f"{message}; restore the right image, or set `data.on_bad_image: skip` "
                                "to leave such patches out")
            patches.append(None)
            errors.append(message)
        return rows, patches, errors


def collate_patches(items):
    """PatchImages items -> (rows (n,) int64, valid (n,) bool, patches (n_valid, H, W, RGB) uint8,
    error messages): tensors the DataLoader can pin, stacked in the worker."""
    rows = torch.from_numpy(np.concatenate([r for r, _, _ in items]))
    valid = torch.from_numpy(np.array([p is not None for _, ps, _ in items for p in ps], dtype=bool))
    good = [p for _, ps, _ in items for p in ps if p is not None]
    patches = torch.from_numpy(np.stack(good)) if good else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    return rows, valid, patches, [err for _, _, errs in items for err in errs]


class WholeImages(torch.utils.data.Dataset):
    """One item per image and store row (image folders): the whole image through `pil_steps`,
    in the item format of `PatchImages`, so `collate_patches` and `steps.part_step` serve both."""

    def __init__(self, paths: list[str], rows: np.ndarray, pil_steps, on_bad_image: str):
        self.paths, self.rows = paths, np.asarray(rows, np.int64)
        self.pil_steps, self.on_bad_image = pil_steps, on_bad_image

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        rows = self.rows[i:i + 1]
        image, skipped = decode_or_skip(self.paths[i], rows, self.on_bad_image)
        if skipped:
            return skipped
        return rows, [np.asarray(self.pil_steps(image))], []


class SegImages(torch.utils.data.Dataset):
    """One item per image: the fixed view of the image and of each of its label maps."""

    def __init__(self, samples: list[dict], label_sets: dict, size: int, mean, std, on_bad_image):
        self.samples, self.label_sets, self.size = samples, label_sets, size
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.on_bad_image = on_bad_image

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        sample = self.samples[i]
        rows = np.array([sample["row"]], dtype=np.int64)
        try:
            image = load_rgb(sample["img"])
            segfolder.check_size(sample["img"], image.size)
        except DataError as err:
            if self.on_bad_image != "skip":
                raise
            return rows, None, str(err)
        # a label outside the declared classes is a config error, never skipped
        offsets = sample.get(segfolder.OFFSET_KEY, {})
        labels = {name: segfolder.load_label(sample[name], spec["classes"], offsets.get(name, 0))
                  for name, spec in self.label_sets.items()}
        view_labels = {}
        for name, label in labels.items():
            view, view_labels[name] = segfolder.seg_view(image, label, self.size)
        x = torch.from_numpy(np.asarray(view, dtype=np.float32) / 255.0).permute(2, 0, 1)
        x = (x - self.mean) / self.std
        return rows, (x, {k: torch.from_numpy(np.asarray(v)) for k, v in view_labels.items()}), None


def collate_seg(items):
    """SegImages items -> (rows, valid, images (n_valid, 3, S, S), {set: labels (n_valid, S, S)},
    error messages)."""
    rows = torch.from_numpy(np.concatenate([r for r, _, _ in items]))
    valid = torch.tensor([v is not None for _, v, _ in items])
    good = [v for _, v, _ in items if v is not None]
    images = torch.stack([x for x, _ in good]) if good else torch.zeros(0)
    labels = {k: torch.stack([lab[k] for _, lab in good]) for k in (good[0][1] if good else {})}
    return rows, valid, images, labels, [err for _, _, err in items if err]
