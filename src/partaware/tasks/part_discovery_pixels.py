"""Task `part_discovery_pixels`: part discovery on a part segmentation dataset (PartImageNet),
scored per pixel as PDiscoNet / PDiscoFormer score it there: NMI and ARI between the clusters
and the part labels over every labelled pixel of the evaluated images, background included.

Reads the segmentation stores the `maps` role makes (`kinds/segfolder.py`, `partimagenet`: one
row per image, raw token maps `layers/<b>` and label maps `labels/<set>` at the store's fixed
view), so it costs no extraction of its own. Per K of the `part_discovery` section: faiss k-means
on a seeded sample of L2-normalised train tokens of the deepest stored block, every evaluated
token assigned to its nearest centroid, the token map upsampled (nearest) to the label map, and
one cluster x label table per image (`evals.part_discovery.contingency`), pooled for the values
and resampled over images for the intervals. Labels are the stored ones: every class including
background (PartImageNet: class 41 after the +1 read), 255 left out.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..evals import clustering
from ..evals import part_discovery as D
from ..evals.bootstrap import ImageSums
from ..evals import neighbours as N
from ..intervals import attach, settings as stats_settings
from ..results import result_row
from . import register
from .base import Task
from .common import _valid

NOTE = ("per pixel (PDiscoFormer on PartImageNet): every labelled pixel of the evaluated split's stored view "
        "(shorter side `size`, centre crop), background a class, 255 left out; k-means (faiss) on L2-normalised "
        "train tokens of block {block}; token clusters upsampled nearest; K clusters vs {classes} label values")
_CHUNK = 64  # images read at a time


@register
class PartDiscoveryPixels(Task):
    name = "part_discovery_pixels"
    section = "part_discovery"  # k, max_tokens, niter, nredo, seed (the schema `part_discovery` declares)
    protocol = "cached"
    role = "maps"
    metrics = {}  # NMI@K / ARI@K map onto the contingency statistics through `part_discovery`'s metrics
    headline = {"NMI@8": ("part discovery NMI@8", "{feature}")}

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        pc = cfg["part_discovery"]
        if "part" not in ds.get("label_sets", {}):
            raise ConfigError(f"config key {where}.label_sets: part_discovery_pixels scores clusters against the "
                              "`part` label set, which this dataset lacks; add one or drop the task")
        if len(set(pc["k"])) != len(pc["k"]):
            raise ConfigError(f"config key part_discovery.k: {pc['k']} lists a K twice; list each once")

        if not N.faiss_installed():
            raise ConfigError(f"config key {where}.tasks: part_discovery_pixels needs faiss (k-means), which is not "
                              "installed; install it: pip install faiss-cpu, or drop the task")

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        pc, ds = cfg["part_discovery"], cfg["datasets"][ctx["dataset"]]
        train, test = stores
        block = max(ds["blocks"])
        layer, labels = f"layers/{block}", "labels/part"
        centroids = {k: D.kmeans(_sample(train, layer, pc), k, niter=pc["niter"], nredo=pc["nredo"],
                                 seed=pc["seed"]) for k in pc["k"]}
        classes = ds["label_sets"]["part"]["classes"]
        side = max(max(pc["k"]), classes + 2)  # label values 0..classes (+ offset room), 255 dropped
        valid = _valid(test)
        ids = np.flatnonzero(valid)
        tables = {k: np.zeros((len(ids), side * side)) for k in pc["k"]}
        pos = 0
        for lo in range(0, test.n_rows, _CHUNK):
            keep = valid[lo:lo + _CHUNK]
            maps = test.read_checked(layer, lo, lo + _CHUNK, valid=keep)[keep].astype(np.float32)
            truth = test.read_checked(labels, lo, lo + _CHUNK, valid=keep)[keep]
            n, dim, h, w = maps.shape
            tokens = D.normalise(maps.transpose(0, 2, 3, 1).reshape(-1, dim))
            for k, c in centroids.items():
                grid = D.assign(tokens, c).reshape(n, h, w)
                for i in range(n):
                    label = truth[i].astype(np.int64)
                    rows_ = (np.arange(label.shape[0]) * h) // label.shape[0]
                    cols = (np.arange(label.shape[1]) * w) // label.shape[1]
                    cluster = grid[i][np.ix_(rows_, cols)]
                    m = label != 255
                    tables[k][pos + i] += np.bincount(cluster[m] * side + np.minimum(label[m], side - 1),
                                                      minlength=side * side)
            pos += n
        stats, feature = stats_settings(cfg), f"block {block} dense"
        note = NOTE.format(block=block, classes=classes)
        rows = []
        for k, table in tables.items():
            pooled = table.sum(0, keepdims=True)
            values = {"NMI": float(clustering.nmi(pooled)[0]), "ARI": float(clustering.ari(pooled)[0])}
            pixels = int(pooled.sum())
            measured = [result_row(ctx, self.name, feature, f"{m}@{k}", 100 * v, pixels, protocol=self.protocol,
                                   seed=pc["seed"], notes=note) for m, v in values.items()]
            rows += attach(measured, ImageSums("contingency", ids, table), stats)
        return rows, []


def _sample(store, layer: str, pc: dict) -> np.ndarray:
    """The seeded uniform sample of at most `max_tokens` L2-normalised train tokens (valid rows)."""
    valid = _valid(store)
    rows = np.flatnonzero(valid)
    _, dim, h, w = store.info(layer)["shape"]
    picks = D.sample_positions(len(rows), h * w, pc["max_tokens"], pc["seed"])
    out = np.empty((len(picks), dim), np.float32)
    image, token = picks // (h * w), picks % (h * w)
    for lo in range(0, len(rows), _CHUNK):
        sel = (image >= lo) & (image < lo + _CHUNK)
        if not sel.any():
            continue
        part = rows[lo:lo + _CHUNK]
        maps = store.read_checked(layer, int(part[0]), int(part[-1]) + 1, valid=valid[part[0]:part[-1] + 1])
        maps = maps[part - part[0]].astype(np.float32).reshape(len(part), dim, h * w)
        out[sel] = maps[image[sel] - lo, :, token[sel]]
    return D.normalise(out)
