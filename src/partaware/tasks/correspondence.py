"""Task `correspondence`: zero-shot keypoint transfer between images of one class by nearest
neighbour in cached dense features; PCK@alpha and left/right confusion (issue 25).

Reads the pair table `results/index/<dataset>/pairs.parquet` (`data.pairs`, `data.spair`) and
one dense-map store per (dataset, model) at `correspondence.size` (`extraction.dense_images`:
`dense_final`, `dense/<k>`, `size`), so other alphas, pairs or refinement cost no forward pass.
Metrics and geometry: `evals.correspondence`. Intervals: a bootstrap over pairs.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..evals import correspondence as C
from ..evals.bootstrap import ImageSums
from ..extraction.dense_images import FINAL, block_array
from ..intervals import attach, settings as stats_settings
from ..results import result_row
from . import register
from .base import Task

log = logging.getLogger(__name__)

KINDS = ("cub", "spair")  # dataset kinds with keypoint pairs
PAIRS_FILE = "pairs.parquet"
_CACHE_MAPS = 256  # dense maps held at once while scoring (pairs share images)


def store_name(cfg: dict) -> str:
    """The store (split wildcard) of the dense maps: test images at the configured size."""
    return f"test_dense{cfg['correspondence']['size']}"


def feature_name(block: int | None) -> str:
    return "dense final" if block is None else f"block {block} dense"


class StoreMaps(Mapping):
    """image key -> (D, h, w) float32 map of one store array, read row by row with a small cache;
    keys of rows that were skipped at extraction (`valid` 0) are absent."""

    def __init__(self, store, array: str):
        self.store, self.array = store, array
        keys = list(store.attrs["image_keys"])
        valid = store.read("valid").astype(bool) if "valid" in store.array_names() else np.ones(len(keys), bool)
        self.row = {k: i for i, k in enumerate(keys) if valid[i]}
        self.cache: OrderedDict = OrderedDict()

    def __getitem__(self, key):
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        i = self.row[key]
        value = self.store.read_checked(self.array, i, i + 1, valid=np.ones(1, bool))[0].astype(np.float32)
        self.cache[key] = value
        if len(self.cache) > _CACHE_MAPS:
            self.cache.popitem(last=False)
        return value

    def __contains__(self, key):
        return key in self.row

    def __iter__(self):
        return iter(self.row)

    def __len__(self):
        return len(self.row)


def prepare_pairs(kind_name: str, ds: dict, cfg: dict, outdir: Path | str) -> list[str]:
    """Write `<outdir>/pairs.parquet` (outdir: results/index/<dataset>) for a dataset of kind
    `cub` (pairs drawn by `correspondence.pairs` / `seed`) or `spair` (its listed `test` pairs,
    left/right pairs from the dataset's `mirror`); returns the messages of SPair pairs left out
    under `data.on_bad_image: skip` (CUB images are checked when extracted)."""
    from ..data.pairs import cub_pairs, write_pairs
    from ..data.spair import spair_pairs

    cc = cfg["correspondence"]
    if kind_name == "cub":
        pairs, skipped = cub_pairs(ds["root"], cc["pairs"], cc["seed"], max_images=ds.get("max_images")), []
    elif kind_name == "spair":
        pairs, skipped = spair_pairs(ds["root"], "test", ds.get("mirror"), cfg["data"]["on_bad_image"])
    else:
        raise ValueError(f"correspondence pairs: kind {kind_name!r} has none; use it on {' or '.join(KINDS)}")
    write_pairs(pairs, Path(outdir) / PAIRS_FILE)
    return skipped


def dense_store_plan(cfg: dict, index_dir: Path | str, encoder, device, shard: int = 0):
    """The ExtractionPlan of the dense-map store (`store_name(cfg)`) of a dataset whose pair
    table is in `index_dir`: every image the pairs name, at `correspondence.size`, with the raw
    maps of `correspondence.blocks` (a kind's `plan` returns this for that store)."""
    from ..data.pairs import image_table, read_pairs
    from ..extraction.dense_images import dense_plan

    cc = cfg["correspondence"]
    images = image_table(read_pairs(Path(index_dir) / PAIRS_FILE))
    return dense_plan(cfg, images, encoder, device, cc["size"], cc["blocks"], shard)


@register
class Correspondence(Task):
    name = "correspondence"
    section = "correspondence"
    protocol = "cached"
    schema = {
        "type": "object", "additionalProperties": False, "default": {},
        "description": "keypoint transfer between images of one class by nearest neighbour in dense features",
        "properties": {
            "pairs": {"type": "integer", "minimum": 1, "default": 10000,
                      "description": "CUB-layout datasets: ordered pairs of test images of one class, drawn by seed "
                                     "(SPair-71k: its listed test pairs)"},
            "alphas": {"type": "array", "minItems": 1, "default": [0.05, 0.1, 0.15],
                       "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                       "description": "PCK thresholds as a fraction of max(height, width) of the target's object box"},
            "confusion_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.1,
                                "description": "the threshold of left/right confusion (landing on the mirrored part)"},
            "refine": {"enum": ["none", "softargmax"], "default": "none",
                       "description": "none: the best-matching token; softargmax: soft-argmax of the 3 x 3 tokens "
                                      "around it"},
            "blocks": {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": [],
                       "description": "also score the raw maps of these 1-based blocks (the final tokens always)"},
            "size": {"type": "integer", "minimum": 16, "default": 224,
                     "description": "model input side: images are resized to size x size (448: a finer grid)"},
            "seed": {"type": "integer", "default": 0, "description": "the draw of CUB pairs"},
        },
    }

    def splits(self, kind, ds: dict, cfg: dict) -> list[str]:
        name = getattr(kind, "name", kind)
        return [store_name(cfg)] if name in KINDS and "correspondence" in ds.get("tasks", ()) else []

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        from ..config import ConfigError

        cc = cfg["correspondence"]
        alphas = cc["alphas"]
        if len(set(alphas)) != len(alphas):
            raise ConfigError(f"config key correspondence.alphas: {alphas} lists a threshold twice; list each once")
        kind = ds.get("kind", "")
        if "correspondence" in ds.get("tasks", ()) and kind not in KINDS:
            raise ConfigError(f"config key {where}.tasks: correspondence needs keypoint pairs, which kind {kind!r} "
                              f"has not; use it on a dataset of kind {' or '.join(KINDS)}")

    def pairs_path(self, cfg: dict, ctx: dict) -> Path:
        """`ctx["index_dir"]` (results/index/<dataset>) / pairs.parquet."""
        base = Path(ctx.get("index_dir") or Path(cfg.get("results_dir", "results")) / "index" / ctx["dataset"])
        return base / PAIRS_FILE

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        from ..data.pairs import read_pairs

        cc = cfg["correspondence"]
        store = stores[0]
        pairs = read_pairs(self.pairs_path(cfg, ctx))
        size, patch = int(store.attrs.get("input_size", cc["size"])), int(store.attrs["patch_size"])
        keys = list(store.attrs["image_keys"])
        sizes = dict(zip(keys, map(tuple, store.read("size").tolist())))
        stats = stats_settings(cfg)
        features = [(None, FINAL)] + [(b, block_array(b)) for b in cc["blocks"]]
        rows, per_part = [], []
        for block, array in features:
            if array not in store.array_names():
                raise KeyError(f"{store.paths[0]}: no array {array!r}; the store predates correspondence.blocks "
                               f"{cc['blocks']}: delete it and rerun the workflow")
            maps = StoreMaps(store, array)
            res = C.evaluate_pairs(pairs, maps, sizes, (size, size), patch, cc["alphas"], cc["confusion_alpha"],
                                   cc["refine"])
            wanted = pairs[["pair", "src_image", "trg_image"]].drop_duplicates("pair")
            skipped = int((~(wanted["src_image"].isin(maps.row) & wanted["trg_image"].isin(maps.row))).sum())
            if skipped:
                log.warning("%s: %d pair(s) name images skipped at extraction; they are left out", ctx["dataset"],
                            skipped)
            rows += self._rows(ctx, feature_name(block), res, cc, skipped, stats)
            per_part += [{**ctx, "task": self.name, "feature": feature_name(block), "refine": cc["refine"], **r}
                         for r in res.per_part()]
        return rows, per_part

    def _rows(self, ctx, feature, res: C.Transfers, cc, skipped, stats) -> list[dict]:
        summary = res.summary()
        note = f"size {cc['size']}, refine {cc['refine']}, threshold alpha x max(target box h, w)"
        out = []
        for metric in [C.pck_name(a) for a in res.alphas] + [C.CONFUSION]:
            n = int(res.mirror_ok.sum()) if metric == C.CONFUSION else len(res.pair)
            row = result_row(ctx, self.name, feature, metric, 100 * summary[metric], n, protocol=self.protocol,
                             seed=cc["seed"], skipped=skipped, notes=note)
            ids, sums = res.pair_sums(metric)
            out += attach([row], ImageSums("accuracy", ids, sums) if n else None, stats)
        return out
