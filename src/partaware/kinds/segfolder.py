"""Segmentation folders in the authors' mmseg layout: `img/{train,val}/*.jpg` and one label
folder per label set (`<dir>/{train,val}/*.png`; 0 = background, 255 = ignore). One store row per
image: the raw token maps of the probe's blocks and every label set, at one fixed view.
"""
from __future__ import annotations

from pathlib import Path

from . import register
from .base import ExtractionPlan, Kind
from .part_patches import shard_range


@register
class SegFolder(Kind):
    name = "segfolder"
    tasks = ("segmentation",)
    required = ("root", "label_sets")
    example = "label_sets: {part: {dir: ann, classes: 209}}"
    schema = {
        "root": {"type": "string", "description": "the folder holding img/ and the label folders"},
        "label_sets": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["dir", "classes"],
            "properties": {"dir": {"type": "string"}, "classes": {"type": "integer", "minimum": 1}}}},
        "splits": {"type": "array", "items": {"type": "string"}, "default": ["train", "val"],
                   "description": "the probe's train split, then the evaluated one"},
        "blocks": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                   "default": [4, 6, 8, 12], "description": "1-based blocks whose raw token maps feed the probe"},
    }

    def splits(self, ds: dict) -> list[str]:
        return list(ds["splits"])

    def task_splits(self, ds: dict, task: str) -> list[str]:
        return list(ds["splits"])

    def store_arrays(self, ds: dict, split: str) -> list[str]:
        return [f"layers/{b}" for b in ds["blocks"]] + [f"labels/{k}" for k in ds["label_sets"]]

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        return [ds["root"]] if "demo" in ds else []

    def generate_demo(self, ds: dict, out: Path) -> None:
        from ..data.demo_seg import generate_demo_seg

        generate_demo_seg(out, **ds["demo"])

    def samples(self, ds: dict, split: str) -> list[dict]:
        """Every image of a split with its label files, numbered by `row`."""
        from ..data import segfolder

        samples = segfolder.list_samples(ds["root"], split, {k: v["dir"] for k, v in ds["label_sets"].items()})
        for i, s in enumerate(samples):
            s["row"] = i
        return samples

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard) -> ExtractionPlan:
        import torch

        from ..extraction.loaders import SegImages, collate_seg
        from ..extraction.steps import seg_step

        ds = cfg["datasets"][dataset]
        samples = self.samples(ds, split)
        lo, hi = shard_range(len(samples), shard, cfg["extract"]["shards"])
        samples = samples[lo:hi]
        size, blocks, dtype = ds["size"], ds["blocks"], cfg["cache"]["dtype"]
        with torch.inference_mode():
            probe = encoder.dense(torch.zeros(1, 3, size, size, device=device), blocks)
        layout = {f"layers/{b}": (tuple(probe[b].shape[1:]), dtype, 1) for b in blocks}
        layout.update({f"labels/{k}": ((size, size), "uint8", 1) for k in ds["label_sets"]})
        mean, std = encoder.mean_std
        return ExtractionPlan(
            n_rows=len(samples), layout=layout,
            transform=f"seg fixed view: short side {size} bicubic, centre crop {size}; "
                      f"labels nearest; normalise mean={mean} std={std}",
            images=[str(s["img"]) for s in samples], resume_rows=[], rows=(lo, hi),
            loader_data=lambda start: SegImages(samples[start:], ds["label_sets"], size, mean, std,
                                                cfg["data"]["on_bad_image"]),
            collate=collate_seg,
            make_step=lambda enc, dev, amp: seg_step(enc, dev, amp, blocks, layout),
            images_per_batch=max(1, cfg["extract"]["batch_size"] // 4))
