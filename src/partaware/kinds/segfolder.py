"""Segmentation folders as the authors ship them: a split's images and one label folder per
label set (`<stem>.png`; 0 = background, 255 = ignore), in a named layout (`mmseg`: img/<split>,
<dir>/<split>; `ade`: images/{training,validation}, annotations/{training,validation}) or
explicit per-split folders. One store row per image: the raw token maps of the probe's blocks
and every label set, at one fixed view. See `data.segfolder` for the folder rules.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..data import segfolder
from ..data.demo_seg import generate_demo_seg
from ..data.seg_pipeline import PRESETS, SegPipeline
from ..data.segfolder import LAYOUTS
from . import register
from ..errors import ConfigError, seg_protocols
from ..extraction.loaders import SegImages, collate_seg
from ..extraction.plan import ExtractionPlan, shard_range
from ..extraction.steps import seg_step
from .base import Kind, Readers

SCALE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2}
LAYOUT = {"enum": list(LAYOUTS), "description": "mmseg: img/<split>, <dir>/<split> (ADE20K-Part, Pascal-Part, "
          "LIP); ade: images/{training,validation}, annotations/{training,validation} (ADEChallengeData2016)"}
FOLDERS = {"type": "object", "additionalProperties": {"type": "string", "minLength": 1},
           "description": "one folder per split, e.g. {train: img/train, val: img/val}, relative to the root "
                          "unless absolute; overrides the layout's folder of that split"}


@register
class SegFolder(Kind):
    name = "segfolder"
    roles = ("maps",)
    required = ("root", "label_sets")
    example = "label_sets: {part: {dir: ann, classes: 209}}"
    schema = {
        "root": {"type": "string", "description": "the folder holding the images and the label folders"},
        "layout": {**LAYOUT, "default": "mmseg"},
        "images": {**FOLDERS, "description": "the image folder of each split; " + FOLDERS["description"]},
        "label_sets": {"type": "object", "minProperties": 1, "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["classes"],
            "properties": {
                "classes": {"type": "integer", "minimum": 1},
                "dir": {"type": "string", "description": "its label folder under the root (default: the "
                                                         "layout's, ann or annotations)"},
                "root": {"type": "string", "description": "where it is shipped, if not under the dataset's "
                                                          "root; its images must be the dataset's"},
                "layout": {**LAYOUT, "description": "its release's layout (default: the dataset's)"},
                "images": {**FOLDERS, "description": "its own copy of the images, checked against the "
                                                     "dataset's; " + FOLDERS["description"]},
                "labels": {**FOLDERS, "description": "its label folder of each split; " + FOLDERS["description"]},
            }}},
        "splits": {"type": "array", "items": {"type": "string"}, "default": ["train", "val"],
                   "description": "the probe's train split, then the evaluated one"},
        "blocks": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1,
                   "default": [4, 6, 8, 12], "description": "1-based blocks whose raw token maps feed the probe"},
        "pipeline": {
            "description": "the paper protocol's mmseg views: a preset (ade20k, pascal, lip) or "
                           "{crop, train_scale: [long, short], test_scale: [long, short], stride}",
            "oneOf": [{"enum": ["ade20k", "pascal", "lip"]},
                      {"type": "object", "additionalProperties": False,
                       "required": ["crop", "train_scale", "test_scale", "stride"],
                       "properties": {"crop": {"type": "integer", "minimum": 16},
                                      "train_scale": SCALE, "test_scale": SCALE,
                                      "stride": {"type": "integer", "minimum": 1},
                                      "ratio_range": {"type": "array", "items": {"type": "number",
                                                      "exclusiveMinimum": 0}, "minItems": 2, "maxItems": 2},
                                      "cat_max_ratio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                                      "flip_prob": {"type": "number", "minimum": 0, "maximum": 1}}}]},
    }

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        if "paper" in seg_protocols(cfg) and "pipeline" not in ds:
            raise ConfigError(f"config key {where}.pipeline: required by segmentation.protocol paper: a preset "
                              "(ade20k, pascal, lip) or {crop, train_scale, test_scale, stride}")
        if len(ds["splits"]) != 2:
            raise ConfigError(f"config key {where}.splits: give the training split, then the evaluated one, "
                              f"e.g. [train, val]; got {ds['splits']}")
        folders = [(f"{where}.images", ds.get("images"))]
        folders += [(f"{where}.label_sets.{name}.{key}", spec.get(key))
                    for name, spec in ds["label_sets"].items() for key in ("images", "labels")]
        for key, value in folders:
            for split in set(value or {}) - set(ds["splits"]):
                raise ConfigError(f"config key {key}.{split}: {split!r} is not one of this dataset's splits "
                                  f"{ds['splits']}; name the folder of each split, e.g. "
                                  f"{{{ds['splits'][0]}: img/{ds['splits'][0]}}}")

    def paths(self, ds: dict) -> list[str]:
        """The dataset's root and the root of each label set shipped elsewhere."""
        return [ds["root"]] + [spec["root"] for spec in ds["label_sets"].values() if "root" in spec]

    def stores(self, role: str, ds: dict) -> list[str]:
        """The probe's train split, then the evaluated one."""
        return list(ds["splits"])

    def pipeline(self, ds: dict):
        """The paper protocol's `data.seg_pipeline.SegPipeline` of this dataset."""
        spec = ds["pipeline"]
        if isinstance(spec, str):
            return PRESETS[spec]
        return SegPipeline(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})

    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        return [f"layers/{b}" for b in ds["blocks"]] + [f"labels/{k}" for k in ds["label_sets"]]

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        return [ds["root"]] if "demo" in ds else []

    def generate_demo(self, ds: dict, out: Path) -> None:
        generate_demo_seg(out, **ds["demo"])

    def samples(self, ds: dict, split: str) -> list[dict]:
        """Every image of a split with its label files, numbered by `row` (folders: `data.segfolder`)."""
        samples = segfolder.list_samples(ds["root"], split, ds["label_sets"], layout=ds.get("layout", "mmseg"),
                                         images=ds.get("images"))
        for i, s in enumerate(samples):
            s["row"] = i
        return samples

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()) -> ExtractionPlan:
        ds = cfg["datasets"][dataset]
        every = self.samples(ds, split)
        lo, hi = shard_range(len(every), shard, cfg["extract"]["shards"])
        samples = every[lo:hi]
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
            images_per_batch=max(1, cfg["extract"]["batch_size"] // 4),
            attrs={"image_paths": [str(s["img"]) for s in every]})  # by store row: `open_features` joins it
