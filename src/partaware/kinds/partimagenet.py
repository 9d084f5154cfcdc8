"""PartImageNet_Seg as shipped (`images/<split>/`, `annotations/<split>/`,
`annotations/<split>_whole/`; `data/partimagenet.py`): the segmentation-folder kind's stores,
probes and paper protocol on it, with label sets `part` (40 parts + background = 41 classes)
and `object` (the `_whole` masks), so the part/object contrast works on it too.
"""
from __future__ import annotations

from pathlib import Path

from ..data import partimagenet as P
from . import register
from ..errors import ConfigError
from .base import Readers
from .segfolder import SegFolder

_PIPELINE = SegFolder.schema["pipeline"]


@register
class PartImageNet(SegFolder):
    name = "partimagenet"
    required = ("root",)
    example = "root: data/PartImageNet_Seg"
    schema = {
        **{k: v for k, v in SegFolder.schema.items() if k not in ("layout", "images", "label_sets", "pipeline")},
        "root": {"type": "string", "description": "the PartImageNet_Seg folder (holds images/ and annotations/)"},
        "label_sets": {
            "type": "object", "minProperties": 1, "default": {"part": {"classes": P.PART_CLASSES},
                                                              "object": {"classes": P.OBJECT_CLASSES}},
            "propertyNames": {"enum": ["part", "object"]},
            "additionalProperties": {"type": "object", "additionalProperties": False, "required": ["classes"],
                                     "properties": {"classes": {"type": "integer", "minimum": 2}}},
            "description": "part: annotations/<split> (40 parts + background = 41); object: annotations/"
                           "<split>_whole (object classes + background); background is the last class"},
        "pipeline": {**_PIPELINE, "default": "partimagenet",
                     "oneOf": [{"enum": ["ade20k", "pascal", "lip", "partimagenet"]}] + _PIPELINE["oneOf"][1:]},
    }

    # the choices the release leaves open, for the rows' notes (store attr `label_note` / the segment job)
    label_note = ("PartImageNet_Seg: part = 40 parts + background (pixel 40, scored as class 40), object = "
                  "<split>_whole masks with background last; values read +1 so reduce_zero_label keeps background")

    def plan(self, cfg, dataset, split, encoder, device, index_path, shard, readers=Readers()):
        plan = super().plan(cfg, dataset, split, encoder, device, index_path, shard, readers)
        plan.attrs = {**plan.attrs, "label_note": self.label_note}
        return plan

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        super().check(where, ds, cfg)
        for split in ds["splits"]:
            if split not in P.SPLITS:
                raise ConfigError(f"config key {where}.splits: {split!r} is not a PartImageNet_Seg split; use two of "
                                  f"{list(P.SPLITS)}, e.g. [train, val]")
        if not Path(ds["root"]).expanduser().is_dir():
            return  # the config check reports a missing root (`paths`)
        for split in ds["splits"]:
            absent = P.missing_folder(Path(ds["root"]).expanduser(), split, ds["label_sets"])
            if absent is not None:
                raise ConfigError(f"config key {where}.root: {absent} not found; {P.ROOT_FIX}")

    def generate_demo(self, ds: dict, out: Path) -> None:
        demo = ds["demo"]
        P.generate_partimagenet(out, ds["splits"], demo.get("n_train", 4), demo.get("size", 64), demo.get("seed", 0))

    def samples(self, ds: dict, split: str) -> list[dict]:
        """Every image of a split with its label files and their offset (`data.partimagenet`)."""
        samples = P.list_samples(ds["root"], split, ds["label_sets"])
        for i, s in enumerate(samples):
            s["row"] = i
        return samples
