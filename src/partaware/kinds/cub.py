"""CUB-200-2011 parts: the folder holding images.txt, parts/ and images/ (PROTOCOL.md section 2)."""
from __future__ import annotations

from pathlib import Path

from ..data import parts as P
from ..data.cub import DEFAULT_PARTS, ROOT_FIX, cub_patches
from ..data.demo import generate_demo_cub
from ..data.errors import DataError
from ..data.pairs import cub_pairs, draw_messages
from . import register
from .box_crops import CROP_ROLE, BoxCrops
from .keypoint_pairs import KeypointPairs
from .part_patches import PartKind
from .root_check import check_root


@register
class Cub(BoxCrops, KeypointPairs, PartKind):
    name = "cub"
    roles = PartKind.roles + ("dense", CROP_ROLE)  # dense maps: correspondence; box crops: part discovery
    default_parts = DEFAULT_PARTS
    default_retrieval = ("train", "test")  # all 11,788 images, as the paper
    required = ("root",)
    example = "root: data/CUB_200_2011"
    schema = {**PartKind.schema,
              "root": {"type": "string", "description": "the CUB_200_2011 folder (holds images.txt)"}}

    def index_inputs(self, ds: dict) -> list[str]:
        if "demo" in ds:
            return [ds["root"]]
        return [f"{ds['root']}/{f}" for f in ("images.txt", "train_test_split.txt",
                                                "parts/parts.txt", "parts/part_locs.txt")]

    def pair_inputs(self, ds: dict) -> list[str]:
        if "demo" in ds:
            return [ds["root"]]
        return self.index_inputs(ds) + [f"{ds['root']}/{f}" for f in ("image_class_labels.txt", "bounding_boxes.txt")]

    def pair_settings(self, cfg: dict, ds: dict) -> dict:
        return {k: cfg["correspondence"][k] for k in ("pairs", "seed")}

    def read_pairs(self, ds: dict, cfg: dict):
        """`correspondence.pairs` same-class pairs of test images drawn by `correspondence.seed`;
        under `data.on_bad_image: skip` among the images on disk (a partial copy gives the pairs
        its images allow, not pairs of skipped images)."""
        cc = cfg["correspondence"]
        skip = cfg["data"]["on_bad_image"] == "skip"
        pairs = cub_pairs(ds["root"], cc["pairs"], cc["seed"], max_images=P.max_images(ds),
                          keep=Path.is_file if skip else None)
        return pairs, draw_messages(pairs.attrs, cc["pairs"])

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        """The files the index needs, before any job: a root one folder off is one line naming
        the key and the fix (not the workflow's missing-input error)."""
        super().check(where, ds, cfg)
        check_root(where, ds, self.index_inputs(ds), ROOT_FIX)

    def read_patches(self, ds: dict):
        if not ds.get("root"):
            raise DataError(f"dataset {ds.get('name', '?')!r}: kind cub needs `root`, the folder that holds images.txt")
        return cub_patches(ds["root"], P.part_ids(ds, DEFAULT_PARTS), P.max_images(ds))

    def generate_demo(self, ds: dict, out: Path) -> None:
        generate_demo_cub(out, **ds["demo"])

