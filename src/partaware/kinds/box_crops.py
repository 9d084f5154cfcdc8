"""What a kind with object boxes and keypoints offers the part-discovery task: the `crop_dense`
role, stores `train_crop<size>` and `test_crop<size>` holding one box-cropped dense token map
per image of the split, with its keypoints in box units (`extraction.crop_images`).

A kind mixes `BoxCrops` in before its base (CUB: `data.box_crops` reads images.txt,
train_test_split.txt, bounding_boxes.txt and parts/); other splits go to the base kind.
"""
from __future__ import annotations

from ..data import parts as P
from ..data.box_crops import box_keypoints
from ..extraction.crop_images import crop_plan
from ..extraction.crop_names import is_crop_store, split_of
from .base import Readers

CROP_ROLE = "crop_dense"


class BoxCrops:
    """Mixin: the box-crop stores of a CUB-layout kind (see the module docstring)."""

    def crop_inputs(self, ds: dict) -> list[str]:
        """Files the crop stores' rows come from (a change re-extracts them)."""
        if "demo" in ds:
            return [ds["root"]]
        return [f"{ds['root']}/{f}" for f in ("images.txt", "train_test_split.txt", "bounding_boxes.txt",
                                                "parts/parts.txt", "parts/part_locs.txt")]

    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        """Final-token maps, keypoints and boxes (per-block maps enter the signature through the
        task's `store_settings`)."""
        if is_crop_store(split):
            return ["dense_final", "keypoints", "box"]
        return super().store_arrays(ds, split, readers)

    def view_of(self, split: str) -> str:
        return "box_crop" if is_crop_store(split) else super().view_of(split)

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        return self.crop_inputs(ds) if is_crop_store(split) else super().extract_inputs(ds, split)

    def input_size(self, cfg: dict, ds: dict, split: str) -> int:
        return cfg["part_discovery"]["size"] if is_crop_store(split) else super().input_size(cfg, ds, split)

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()):
        if not is_crop_store(split):
            return super().plan(cfg, dataset, split, encoder, device, index_path, shard, readers)

        ds = cfg["datasets"][dataset]
        images, keypoints, names = box_keypoints(ds["root"], split_of(split), P.max_images(ds))
        pd_cfg = cfg["part_discovery"]
        return crop_plan(cfg, images, keypoints, names, encoder, device, pd_cfg["size"], pd_cfg["blocks"], shard)
