"""SOCO v1 as shipped (`Images/<category>/`, `PairAnnotations/{intra,cross}/<group>/*.json`;
`data/soco.py`): its intra- and cross-category pairs feed the correspondence task, which scores
them as SOCO does (CC, SOC, cross-SOC: `tasks/correspondence_splits.py`) besides its plain PCK
of the exact matches. It makes only dense-map stores (`keypoint_pairs.KeypointPairs`).
"""
from __future__ import annotations

from pathlib import Path

from . import register
from ..data.soco import soco_details, soco_pairs
from ..errors import ConfigError
from .base import Kind
from .keypoint_pairs import KeypointPairs

PAIR_TYPES = ("intra", "cross")


@register
class SOCO(KeypointPairs, Kind):
    name = "soco"
    roles = ("dense",)
    required = ("root",)
    example = "root: data/SOCOv1"
    schema = {
        "root": {"type": "string", "description": "the SOCOv1 folder (holds Images/ and PairAnnotations/)"},
        "pair_types": {"type": "array", "items": {"enum": list(PAIR_TYPES)}, "minItems": 1, "uniqueItems": True,
                       "default": list(PAIR_TYPES),
                       "description": "intra: pairs within a category (CC, SOC); cross: across related categories "
                                      "(cross-SOC)"},
        "max_pairs_per_group": {"type": "integer", "minimum": 0, "default": 0,
                                "description": "at most this many pairs of each pair group, the first by file name "
                                               "(0: all; SOCO's max_pairs_per_category)"},
    }

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        root = Path(ds["root"]).expanduser()
        if not root.is_dir():
            return  # the config check reports a missing root (`paths`)
        for folder in ["Images"] + [f"PairAnnotations/{t}" for t in ds["pair_types"]]:
            if not (root / folder).is_dir():
                raise ConfigError(f"config key {where}.root: {root / folder} not found; set it to the SOCOv1 folder "
                                  "that holds Images/ and PairAnnotations/{intra,cross}/")

    def pair_inputs(self, ds: dict) -> list[str]:
        return [f"{ds['root']}/PairAnnotations/{t}" for t in ds["pair_types"]]

    def pair_settings(self, cfg: dict, ds: dict) -> dict:
        """The pair types and the per-group limit pick the pairs, so the dense store's images."""
        return {"pair_types": list(ds["pair_types"]), "max_pairs_per_group": ds["max_pairs_per_group"]}

    def read_pairs(self, ds: dict, cfg: dict):
        return soco_pairs(ds["root"], ds["pair_types"], ds["max_pairs_per_group"], cfg["data"]["on_bad_image"])

    def pair_details(self, ds: dict, cfg: dict, pairs):
        """Match kinds, concept targets and pair groups (`data.soco.soco_details`)."""
        return soco_details(ds["root"], pairs, ds["pair_types"], ds["max_pairs_per_group"])
