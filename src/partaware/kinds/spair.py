"""SPair-71k as shipped (`JPEGImages/<category>/`, `PairAnnotation/{trn,val,test}/*.json`,
`ImageAnnotation/<category>/*.json`; `data/spair.py`): its listed test pairs feed the
correspondence task. It makes only dense-map stores (`keypoint_pairs.KeypointPairs`).

SPair names keypoints by number only, so which are left/right counterparts comes from the
config: `mirror: {category: [[id, id], ...]}` (a category without an entry gets no left/right
confusion).
"""
from __future__ import annotations

from . import register
from ..data.spair import ROOT_FIX, spair_pairs
from ..data.spair_geometry import spair_details
from ..errors import ConfigError
from .base import Kind
from .keypoint_pairs import KeypointPairs
from .root_check import check_root


@register
class SPair(KeypointPairs, Kind):
    name = "spair"
    roles = ("dense",)
    required = ("root",)
    example = "root: data/SPair-71k"
    schema = {
        "root": {"type": "string", "description": "the SPair-71k folder (holds JPEGImages/, PairAnnotation/, "
                                                  "ImageAnnotation/)"},
        "mirror": {"type": "object", "default": {},
                   "additionalProperties": {"type": "array", "items": {
                       "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": ["integer", "string"]}}},
                   "description": "category -> [[keypoint id, its left/right counterpart's id], ...] (SPair's files "
                                  "do not say which keypoints mirror each other)"},
    }

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        check_root(where, ds, self.pair_inputs(ds), ROOT_FIX)  # a root one folder off: one line, key and fix
        for category, pairs in ds["mirror"].items():
            seen: set[str] = set()
            for a, b in pairs:
                if str(a) == str(b):
                    raise ConfigError(f"config key {where}.mirror.{category}: [{a}, {b}] pairs a keypoint with "
                                      "itself; list two different keypoint ids")
                for k in (str(a), str(b)):
                    if k in seen:
                        raise ConfigError(f"config key {where}.mirror.{category}: keypoint {k} is in two pairs; "
                                          "give each keypoint at most one counterpart")
                    seen.add(k)

    def pair_inputs(self, ds: dict) -> list[str]:
        return [f"{ds['root']}/PairAnnotation/test", f"{ds['root']}/ImageAnnotation"]

    def read_pairs(self, ds: dict, cfg: dict):
        """Its listed test pairs; a pair naming a missing image follows `data.on_bad_image`."""
        return spair_pairs(ds["root"], "test", ds["mirror"], cfg["data"]["on_bad_image"])

    def pair_details(self, ds: dict, cfg: dict, pairs):
        """Each pair's difficulty fields and each keypoint's geometry-aware flag (`data.spair_geometry`)."""
        return spair_details(ds["root"], "test", pairs)
