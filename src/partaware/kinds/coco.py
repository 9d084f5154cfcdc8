"""COCO person keypoints: `train` / `test` = {annotations: person_keypoints_*.json, images: folder}
(train2017 is the retrieval set and the probes' train split, val2017 their test split)."""
from __future__ import annotations

import pandas as pd

from ..data import parts as P
from ..data.coco import DEFAULT_KEYPOINTS, coco_patches
from ..data.errors import DataError
from . import register
from .part_patches import PartKind

SPLIT_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["annotations", "images"],
                "properties": {"annotations": {"type": "string"}, "images": {"type": "string"}}}


@register
class Coco(PartKind):
    name = "coco"
    default_parts = DEFAULT_KEYPOINTS
    default_retrieval = ("train",)  # train2017, as the paper
    required = ("train", "test")
    example = "train: {annotations: person_keypoints_train2017.json, images: train2017}"
    schema = {**PartKind.schema, "train": SPLIT_SCHEMA, "test": SPLIT_SCHEMA}

    def paths(self, ds: dict) -> list[str]:
        return [ds[s][k] for s in ("train", "test") if s in ds for k in ("annotations", "images")]

    def index_inputs(self, ds: dict) -> list[str]:
        return [ds[s]["annotations"] for s in ("train", "test") if s in ds]

    def read_patches(self, ds: dict):
        specs = {s: ds.get(s) for s in ("train", "test")}
        for split, spec in specs.items():
            if spec is not None and (not isinstance(spec, dict) or "annotations" not in spec or "images" not in spec):
                raise DataError(f"dataset {ds.get('name', '?')!r}: `{split}` must be "
                                f"{{annotations: <json>, images: <dir>}}, got {spec!r}")
        if not any(specs.values()):
            raise DataError(f"dataset {ds.get('name', '?')!r}: kind coco needs `train` and/or `test`: "
                            "{annotations: <json>, images: <dir>}")
        ids = P.part_ids(ds, DEFAULT_KEYPOINTS)
        return pd.concat([coco_patches(s["annotations"], s["images"], split, ids, P.max_images(ds))
                          for split, s in specs.items() if s], ignore_index=True)
