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

from ..data.pair_details import read_details
from ..data.pairs import read_pairs
from ..evals import correspondence as C
from ..errors import ConfigError
from ..evals.bootstrap import ImageSums
from ..extraction.dense_names import FINAL, block_array, store_name as dense_store
from ..intervals import attach, settings as stats_settings
from ..results import result_row
from . import register
from .base import Task
from .correspondence_splits import split_rows
from .pair_accounting import mark_thin_parts, pair_coverage

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.parquet"
_CACHE_MAPS = 256  # dense maps held at once while scoring (pairs share images)


def store_name(cfg: dict) -> str:
    """The store (split wildcard) of the dense maps: test images at the configured size."""
    return dense_store(cfg["correspondence"]["size"])


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


class _Metrics(Mapping):
    """`PCK@<alpha>` (any configured alpha) and `left_right_confusion`: hits / count per pair,
    resampled as the `top1` statistic (`evals.bootstrap`)."""

    def __contains__(self, metric):
        metric = metric.split(" ", 1)[0] if isinstance(metric, str) else metric  # a split's rows: `PCK@0.1 [..]`
        if metric == C.CONFUSION:
            return True
        if not isinstance(metric, str) or not metric.startswith("PCK@"):
            return False
        try:
            return float(metric[4:]) > 0
        except ValueError:
            return False

    def __getitem__(self, metric):
        if metric not in self:
            raise KeyError(metric)
        return "top1"

    def __iter__(self):
        return iter([C.pck_name(0.1), C.CONFUSION])

    def __len__(self):
        return 2


@register
class Correspondence(Task):
    name = "correspondence"
    section = "correspondence"
    protocol = "exact"  # no training, no paper counterpart (README's protocol values)
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
            "min_chances": {"type": "integer", "minimum": 1, "default": 10,
                            "description": "per-part values on fewer transfers (PCK) or visible counterparts "
                                           "(confusion) are marked, and never listed as most confused"},
        },
    }

    role = "dense"  # kinds with keypoint pairs (`kinds/keypoint_pairs.py`: cub, spair)
    metrics = _Metrics()
    headline = {"PCK@0.1": ("correspondence PCK@0.1 (%)", "{feature}")}
    detail = "per_part"

    def splits(self, kind, ds: dict, cfg: dict | None) -> list[str]:
        """The dense-map store at `correspondence.size` (its name needs the config: none without)."""
        return [store_name(cfg)] if cfg is not None and self.role in kind.roles else []

    def store_settings(self, cfg: dict, kind, ds: dict) -> dict:
        """What shapes the dense store: its input size, the blocks it holds, and (CUB) the pair
        draw, which picks its images."""
        cc = cfg["correspondence"]
        return {"size": cc["size"], "blocks": sorted(set(cc["blocks"])), **kind.pair_settings(cfg, ds)}

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        alphas = cfg["correspondence"]["alphas"]
        if len(set(alphas)) != len(alphas):
            raise ConfigError(f"config key correspondence.alphas: {alphas} lists a threshold twice; list each once")

    def figures(self, cfg: dict, dataset: str) -> list[str]:
        """Pairs with their predicted keypoints, per encoder."""
        return ["correspondence"]

    def pairs_path(self, cfg: dict, ctx: dict) -> Path:
        """`ctx["index_dir"]` (results/index/<dataset>) / pairs.parquet."""
        return Path(ctx.get("index_dir") or Path("results") / "index" / ctx["dataset"]) / PAIRS_FILE

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        cc = cfg["correspondence"]
        store = stores[0]
        path = self.pairs_path(cfg, ctx)
        pairs = read_pairs(path)
        _check_images(store, pairs, path)
        ctx = {k: v for k, v in ctx.items() if k != "index_dir"}  # a job's input, not a column
        size, patch = int(store.attrs.get("input_size", cc["size"])), int(store.attrs["patch_size"])
        keys = list(store.attrs["image_keys"])
        sizes = dict(zip(keys, map(tuple, store.read("size").tolist())))
        stats = stats_settings(cfg)
        features = [(None, FINAL)] + [(b, block_array(b)) for b in cc["blocks"]]
        rows, per_part = [], []
        details = read_details(path)
        for block, array in features:
            if array not in store.array_names():
                raise KeyError(f"{store.paths[0]}: no array {array!r}; the store predates correspondence.blocks "
                               f"{cc['blocks']}: delete it and rerun the workflow")
            maps = StoreMaps(store, array)
            res = C.evaluate_pairs(pairs, maps, sizes, (size, size), patch, cc["alphas"], cc["confusion_alpha"],
                                   cc["refine"])
            cover, notes = pair_coverage(pairs, maps.row, res.pair, cc["pairs"] if "pairs_possible" in pairs.attrs
                                         else None)
            if block is None:
                log.info("%s %s: %s", ctx["dataset"], ctx["model"], "; ".join(notes))
            rows += self._rows(ctx, feature_name(block), res, cc, cover, notes, stats)
            predict = lambda s, t, xy, m=maps: C.transfer(m[s], m[t], xy, sizes[s], sizes[t],  # noqa: E731
                                                          (size, size), patch, cc["refine"])
            rows += [{**r, **cover}  # a subset's rows rest on the same images (its pairs: its notes)
                     for r in split_rows(ctx, self, feature_name(block), res, details, cc, stats, predict, pairs)]
            per_part += [{**ctx, "task": self.name, "feature": feature_name(block), "refine": cc["refine"],
                          **{k: 100 * v if k in self.metrics else v for k, v in r.items()}}  # in %, as the table
                         for r in mark_thin_parts(res.per_part(), cc["min_chances"])]
        return rows, per_part

    def _rows(self, ctx, feature, res: C.Transfers, cc, cover, notes, stats) -> list[dict]:
        summary = res.summary()
        note = "; ".join([f"size {cc['size']}, refine {cc['refine']}, threshold alpha x max(target box h, w)"]
                         + notes)
        out = []
        for metric in [C.pck_name(a) for a in res.alphas] + [C.CONFUSION]:
            n = int(res.mirror_ok.sum()) if metric == C.CONFUSION else len(res.pair)
            row = result_row(ctx, self.name, feature, metric, 100 * summary[metric], n, protocol=self.protocol,
                             seed=cc["seed"], notes=note, **cover)
            ids, sums = res.pair_sums(metric)
            out += attach([row], ImageSums("accuracy", ids, sums) if n else None, stats)
        return out


def _check_images(store, pairs, pairs_path: Path) -> None:
    """A store extracted for another pair table (other images) is an error naming both files."""
    held = set(store.attrs["image_keys"])
    absent = sorted((set(pairs["src_image"]) | set(pairs["trg_image"])) - held)
    if absent:
        raise KeyError(f"{store.paths[0]}: holds no row for {len(absent)} image(s) of {pairs_path} (e.g. "
                       f"{absent[0]!r}): it was extracted for another pair table; delete it and rerun the workflow")
