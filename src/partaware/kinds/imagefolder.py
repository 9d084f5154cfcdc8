"""Whole-image classification folders (ImageNet's `train/<wnid>/*.JPEG`, `val/<wnid>/*.JPEG`, or
any torchvision ImageFolder): the object-level probes of the paper's Table 1.

One store row per image, `cls` and `mean` at one fixed view (resize the shorter side, centre
crop: the probes read a cache, so there is no augmentation), label = class index. The attentive
probe needs every token (296 KiB per image at ViT-B, fp16), which would not fit a disk for all of
ImageNet, so it reads its own stores of the first `attentive_per_class` images of each class:
`<split>_attentive`.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from . import register
from .. import blocks as B
from ..data.demo_imagefolder import generate_demo_imagefolder
from ..data.imagefolder import class_names, first_per_class, list_images
from ..data.images import patch_transform
from ..errors import ConfigError, DataError
from ..extraction.loaders import WholeImages, collate_patches, split_transform
from ..extraction.plan import ExtractionPlan, shard_range
from ..extraction.steps import part_step
from .base import Kind, Readers

log = logging.getLogger(__name__)

SUBSET = "_attentive"  # store name suffix of the attentive probe's per-class subset
_STORE_NAME = re.compile(r"[A-Za-z0-9_\-]+")  # what the workflow's {split} wildcard accepts


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024


@register
class ImageFolder(Kind):
    name = "imagefolder"
    roles = ("pair", "tokens")
    required = ("root",)
    example = "root: data/imagenet"
    label_set = "object"  # the label_set column of its result rows
    schema = {
        "root": {"type": "string", "description": "the folder holding one sub-folder per split, e.g. train/ and val/"},
        "splits": {"type": "array", "items": {"type": "string"}, "default": ["train", "val"],
                   "description": "the folder names of the training split, then the evaluated one"},
        "max_per_class": {"type": "integer", "minimum": 1,
                          "description": "the first N images of each class only (quick runs)"},
        "attentive_per_class": {"type": "integer", "minimum": 1, "default": 50,
                                "description": "the attentive probe's subset: the first N images of each class "
                                               "of both splits (their tokens are cached)"},
        "resize": {"type": "integer", "minimum": 16, "default": 256,
                   "description": "the fixed view: shorter side (bicubic) before the centre crop of `size`"},
    }

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        splits = ds["splits"]
        if len(splits) != 2 or splits[0] == splits[1]:
            raise ConfigError(f"config key {where}.splits: give the training split's folder, then the evaluated "
                              f"one's, e.g. [train, val]; got {splits}")
        for split in splits:
            if not _STORE_NAME.fullmatch(split) or split.endswith(SUBSET):
                raise ConfigError(f"config key {where}.splits: {split!r} cannot name a store; use folder names of "
                                  f"letters, digits, '_' and '-' not ending in {SUBSET!r} (rename the folder)")
        if "demo" in ds and splits != ["train", "val"]:
            raise ConfigError(f"config key {where}.splits: a generated (demo) dataset has the splits [train, val]; "
                              "leave `splits` out")
        if ds["resize"] < ds["size"]:
            raise ConfigError(f"config key {where}.resize: {ds['resize']} is below size {ds['size']}; the centre "
                              f"crop of `size` needs resize >= size (the paper: 256 and 224)")

    # ---- stores
    def stores(self, role: str, ds: dict) -> list[str]:
        """The split folders' stores, or (`tokens`) their per-class subsets that cache every token."""
        return [s + SUBSET for s in ds["splits"]] if role == "tokens" else list(ds["splits"])

    def _folder(self, ds: dict, split: str) -> tuple[str, bool]:
        """A store name -> (its split folder, whether it is the attentive subset)."""
        if split in ds["splits"]:
            return split, False
        if split.endswith(SUBSET) and split[:-len(SUBSET)] in ds["splits"]:
            return split[:-len(SUBSET)], True
        raise DataError(f"dataset {ds.get('name', '?')!r}: no split {split!r}; its stores are "
                        f"{', '.join(self.stores('pair', ds) + self.stores('tokens', ds))}")

    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        return ["cls", "mean"] + (["tokens"] if self._folder(ds, split)[1] else [])

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        return [ds["root"]] if "demo" in ds else []

    def generate_demo(self, ds: dict, out: Path) -> None:
        generate_demo_imagefolder(out, **ds["demo"])

    # ---- rows
    def classes(self, ds: dict) -> list[str]:
        """The class folder names of the training split, sorted: class k has label k."""
        return class_names(ds["root"], ds["splits"][0])

    def samples(self, ds: dict, split: str, classes: list[str] | None = None) -> list[tuple[str, int]]:
        """(image path, label) of every row of a store, in row order."""
        folder, subset = self._folder(ds, split)
        rows = list_images(ds["root"], folder, classes or self.classes(ds), ds.get("max_per_class"))
        return first_per_class(rows, ds["attentive_per_class"]) if subset else rows

    def view(self, ds: dict, mean, std) -> str:
        m, s = (", ".join(f"{v:g}" for v in x) for x in (mean, std))
        return (f"whole image -> RGB -> resize shorter {ds['resize']} bicubic, center crop {ds['size']} -> "
                f"to_tensor -> normalize mean=({m}) std=({s}) (one cached fixed view, no augmentation)")

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()) -> ExtractionPlan:
        ds = cfg["datasets"][dataset]
        classes = self.classes(ds)
        samples = self.samples(ds, split, classes)
        lo, hi = shard_range(len(samples), shard, cfg["extract"]["shards"])
        paths = [p for p, _ in samples[lo:hi]]
        label_of = np.array([label for _, label in samples], np.int64)  # by global row
        mean, std = encoder.mean_std
        blocks = B.resolve(readers.blocks, encoder.depth, encoder.info.get("arch", ""))
        with torch.inference_mode():
            probe = B.encode(encoder, torch.zeros(1, 3, ds["size"], ds["size"], device=device), blocks)
        arrays = self.store_arrays(ds, split) + [a for a in B.array_names(blocks) if a in probe]
        chunk_rows, dtype = cfg["cache"]["chunk_rows"], cfg["cache"]["dtype"]
        layout = {a: (tuple(probe[a].shape[1:]), dtype, 1 if a == "tokens" else chunk_rows) for a in arrays}
        layout["label"] = ((), "int64", chunk_rows)
        B.log_disk(f"{dataset}/{split}", layout, hi - lo)
        if "tokens" in layout:
            (t, d), size = layout["tokens"][0], np.dtype(dtype).itemsize
            log.info("%s/%s: caching the tokens of %d images: %d x %d x %d x %d B = %s (%s per image)",
                     dataset, split, hi - lo, hi - lo, t, d, size, _human((hi - lo) * t * d * size),
                     _human(t * d * size))
        # the view of the paper's probe train split: resize the shorter side, centre crop
        pil_steps, table = split_transform(patch_transform("train", ds["size"], ds["resize"], mean, std))
        on_bad = cfg["data"]["on_bad_image"]
        view = self.view(ds, mean, std)
        note = f"cached fixed view: resize shorter {ds['resize']}, centre crop {ds['size']}"
        if split.endswith(SUBSET):
            note += f"; the first {ds['attentive_per_class']} images per class (the paper: all)"
        return ExtractionPlan(
            n_rows=hi - lo, layout=layout, transform=view, images=paths,
            resume_rows=label_of[lo:hi].tolist(), rows=(lo, hi),
            loader_data=lambda start: WholeImages(paths[start:], np.arange(lo + start, hi), pil_steps, on_bad),
            collate=collate_patches,
            make_step=lambda enc, dev, amp: part_step(enc, dev, amp, table, arrays, label_of, layout),
            images_per_batch=cfg["extract"]["batch_size"],
            attrs={"classes": classes, "label_set": self.label_set,
                   "protocol_note": note})
