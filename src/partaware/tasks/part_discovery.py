"""Task `part_discovery`: do an encoder's own features split objects into consistent parts?
Training-free co-part segmentation scored with NMI, ARI and keypoint regression (issue 36).

Reads the box-crop stores `train_crop<size>` and `test_crop<size>` (`kinds/box_crops.py`,
`extraction/crop_images.py`). Per feature (final tokens, any of `part_discovery.blocks`) and K:
faiss k-means on a seeded sample of L2-normalised train tokens, every token of both splits
assigned to its nearest centroid; NMI / ARI of the test keypoints' clusters against their
keypoint index (Choudhury et al., "FG" variant); Huang & Li's keypoint regression error from
the clusters' centroids. Intervals: a bootstrap over test images. Math: `evals.part_discovery`.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError
from ..evals import part_discovery as D
from ..evals.bootstrap import ImageSums
from ..evals import neighbours as N
from ..extraction.crop_names import store_name
from ..extraction.dense_names import FINAL, block_array
from ..intervals import attach, settings as stats_settings
from ..progress import note_work
from ..results import result_row
from . import register
from .base import Task
from .discovery_stream import Split, assign_split

log = logging.getLogger(__name__)

METRICS = {"NMI": "NMI", "ARI": "ARI", "keypoint_error": "top1"}  # keypoint_error: error sum / count
CONVENTION = ("FG variant: box crop, K labels, no background; k-means (faiss) on L2-normalised train tokens; "
              "hard assignment of the token cell holding the keypoint, all visible test keypoints pooled, "
              "left/right distinct; keypoint_error: Huang & Li regression (StandardScaler in and out, no "
              "intercept) from per-cluster mean token centres + presence flags, L2 x 100 in box units, lower is better")


def feature_name(block: int | None) -> str:
    return "dense final" if block is None else f"block {block} dense"


class _Metrics(Mapping):
    """`NMI@<k>`, `ARI@<k>` (contingency statistics) and `keypoint_error@<k>` (a mean: `top1`)."""

    def __contains__(self, metric):
        if not isinstance(metric, str) or "@" not in metric:
            return False
        name, k = metric.split("@", 1)
        return name in METRICS and k.isdigit()

    def __getitem__(self, metric):
        if metric not in self:
            raise KeyError(metric)
        return METRICS[metric.split("@")[0]]

    def __iter__(self):
        return iter([f"{m}@8" for m in METRICS])

    def __len__(self):
        return len(METRICS)


@register
class PartDiscovery(Task):
    name = "part_discovery"
    section = "part_discovery"
    protocol = "exact"
    schema = {
        "type": "object", "additionalProperties": False, "default": {},
        "description": "training-free part discovery: k-means of dense tokens scored against keypoints",
        "properties": {
            "k": {"type": "array", "minItems": 1, "default": [4, 8, 16], "items": {"type": "integer", "minimum": 2},
                  "description": "numbers of clusters (parts) K"},
            "max_tokens": {"type": "integer", "minimum": 2, "default": 200000,
                           "description": "train tokens sampled (seeded, uniform) for k-means"},
            "niter": {"type": "integer", "minimum": 1, "default": 20, "description": "k-means iterations"},
            "nredo": {"type": "integer", "minimum": 1, "default": 3,
                      "description": "k-means restarts (the lowest objective is kept)"},
            "seed": {"type": "integer", "default": 0, "description": "token sample and k-means seed"},
            "size": {"type": "integer", "minimum": 16, "default": 224,
                     "description": "model input side: each object box is resized to size x size"},
            "blocks": {"type": "array", "items": {"type": "integer", "minimum": 1}, "default": [],
                       "description": "also cluster the raw maps of these 1-based blocks (the final tokens always)"},
            "figure_k": {"type": "integer", "minimum": 2, "default": 8,
                         "description": "the K drawn in results/figures/<dataset>/part_discovery.png (one of k)"},
        },
    }

    role = "crop_dense"  # offered by kinds with object boxes and keypoints (`kinds/box_crops.py`: cub)
    metrics = _Metrics()
    headline = {"NMI@8": ("part discovery NMI@8", "{feature}")}
    detail = "keypoints"

    def splits(self, kind, ds: dict, cfg: dict | None) -> list[str]:
        """The train and test box-crop stores at `part_discovery.size` (names need the config)."""
        if cfg is None or self.role not in kind.roles:
            return []
        size = cfg["part_discovery"]["size"]
        return [store_name("train", size), store_name("test", size)]

    def store_settings(self, cfg: dict, kind, ds: dict) -> dict:
        """What shapes the crop stores: the input size and the blocks they hold (the crop itself
        is the store's view, `box_crop`, and its name)."""
        pc = cfg["part_discovery"]
        return {"size": pc["size"], "blocks": sorted(set(pc["blocks"]))}

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        pc = cfg["part_discovery"]
        if len(set(pc["k"])) != len(pc["k"]):
            raise ConfigError(f"config key part_discovery.k: {pc['k']} lists a K twice; list each once")
        if max(pc["k"]) > pc["max_tokens"]:
            raise ConfigError(f"config key part_discovery.k: K {max(pc['k'])} is more than part_discovery.max_tokens "
                              f"({pc['max_tokens']}), the most tokens k-means sees; lower K or raise max_tokens")
        if pc["figure_k"] not in pc["k"]:
            raise ConfigError(f"config key part_discovery.figure_k: {pc['figure_k']} is not one of part_discovery.k "
                              f"{pc['k']}; pick one of them")
        _check_demo_tokens(where, ds, cfg)
        if not N.faiss_installed():
            raise ConfigError(f"config key {where}.tasks: part_discovery needs faiss (k-means), which is not "
                              "installed; install it: pip install faiss-cpu (or pip install '.[cpu]'; a CUDA "
                              "machine: pip install '.[gpu]'), or drop part_discovery from the tasks")

    def figures(self, cfg: dict, dataset: str) -> list[str]:
        """The same test images for every encoder, tokens coloured by cluster."""
        return ["part_discovery"]

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], dict]:
        pc = cfg["part_discovery"]
        ctx = {k: v for k, v in ctx.items() if k != "index_dir"}
        stats = stats_settings(cfg)
        names = list(stores[1].attrs["part_names"])
        keys = np.asarray(stores[1].attrs["image_keys"], dtype=object)
        rows, detail = [], {c: [] for c in ("feature", "k", "image", "keypoint", "cluster")}
        for block in [None, *pc["blocks"]]:
            array = FINAL if block is None else block_array(block)
            train, test = Split.of(stores[0], array), Split.of(stores[1], array)
            found = discover(train, test, pc, gpu=use_gpu(cfg))
            feature = feature_name(block)
            for k in pc["k"]:
                pos, mark, cluster = found.test.keypoints[k]
                detail["feature"] += [feature] * len(pos)
                detail["k"] += [k] * len(pos)
                detail["image"] += keys[test.rows[pos]].tolist()
                detail["keypoint"] += [names[m] for m in mark]
                detail["cluster"] += cluster.tolist()
                rows += self._rows(ctx, feature, k, found, train, test, pc, stats)
                log.info("%s K %d: %s", feature, k, ", ".join(f"{r['metric']} {r['value']:.1f}" for r in rows[-3:]))
        note_work(len(test.rows), "test images", rows[-1]["skipped"] if rows else 0)
        return rows, detail

    def _rows(self, ctx, feature, k, found, train, test, pc, stats) -> list[dict]:
        pos, mark, cluster = found.test.keypoints[k]
        with_kp = test.keypoints[:, :, 2].max(1, initial=0) > 0 if len(test.rows) else np.zeros(0, bool)
        skipped = int(len(test.store.attrs["image_keys"]) - with_kp.sum())
        nmi, ari = D.nmi_ari(mark, cluster)
        ids = test.rows.astype(np.int64)
        side = max(k, test.keypoints.shape[1])
        table = D.contingency(mark, cluster, pos, len(test.rows), side)
        notes = [CONVENTION, f"{found.sample_size} train tokens sampled "
                 f"(seed {pc['seed']}, niter {pc['niter']}, nredo {pc['nredo']})",
                 f"{skipped} test images without a visible keypoint or skipped at extraction left out"]
        empty = int((found.test.sizes[k] == 0).sum())
        if empty:
            notes.append(f"{empty} of {k} clusters empty on the test split")
        if len(cluster) and len(np.unique(cluster)) == 1:
            notes.append("every test keypoint falls in one cluster (the tokens do not separate): NMI and ARI are 0")
        cells = k * test.keypoints.shape[1]
        if len(cluster) < 10 * cells:  # plug-in mutual information is biased up by about cells / (2 n)
            notes.append(f"NMI/ARI from {len(cluster)} keypoints over {cells} cluster x keypoint cells (under 10 per "
                         "cell): biased upward, and the bootstrap interval, which resamples images with repeats, "
                         "can lie above the value")
        note = "; ".join(notes)
        if len(train.rows) < 10 * 3 * k:
            note += (f"; keypoint regression fitted on {len(train.rows)} train images for {3 * k} inputs (under 10 "
                     "per input): keypoint_error is unreliable")
        note += f"; clusters fitted on {len(train.rows)} train images"
        # images: the test images scored (the share `images used` is of all test images)
        base = dict(protocol=self.protocol, seed=pc["seed"], skipped=skipped, images=int(with_kp.sum()), notes=note)
        out = attach([result_row(ctx, self.name, feature, f"NMI@{k}", nmi, len(cluster), **base),
                      result_row(ctx, self.name, feature, f"ARI@{k}", ari, len(cluster), **base)],
                     ImageSums("contingency", ids[with_kp], table[with_kp]) if len(cluster) else None, stats)
        img, lmk, err = D.keypoint_error(found.train.inputs[k], train.keypoints, found.test.inputs[k], test.keypoints)
        sums = np.zeros((len(test.rows), 2))
        np.add.at(sums, img, np.stack([err / 100, np.ones(len(err))], 1))
        value = float(err.mean()) if len(err) else float("nan")
        row = result_row(ctx, self.name, feature, f"keypoint_error@{k}", value, len(err), **base)
        has = sums[:, 1] > 0
        return out + attach([row], ImageSums("accuracy", ids[has], sums[has]) if len(err) else None, stats)


class Found:
    """One feature's k-means: the sample size, centroids per K, and both splits assigned."""

    def __init__(self, sample_size, centroids, train, test):
        self.sample_size, self.centroids, self.train, self.test = sample_size, centroids, train, test


def discover(train: Split, test: Split, pc: dict, gpu: bool = False, keep: int = 0) -> Found:
    """Sample, cluster for every K, assign both splits (the rows' and the figure's computation)."""
    sample = train.sample(pc["max_tokens"], pc["seed"])
    too_many = [k for k in pc["k"] if k > len(sample)]
    if too_many:
        raise ConfigError(f"config key part_discovery.k: K {max(too_many)} is more than the {len(sample)} train "
                          f"tokens sampled ({len(train.rows)} images x {train.tokens_per_image} tokens, "
                          f"max_tokens {pc['max_tokens']}); lower K or use more train images")
    centroids = {k: D.kmeans(sample, k, niter=pc["niter"], nredo=pc["nredo"], seed=pc["seed"], gpu=gpu)
                 for k in pc["k"]}
    log.info("k-means on %d train tokens (D %d), K %s", len(sample), train.dim, pc["k"])
    return Found(len(sample), centroids, assign_split(train, centroids), assign_split(test, centroids, keep))


def _check_demo_tokens(where: str, ds: dict, cfg: dict) -> None:
    """Where the train tokens are known from the config (a generated demo: every other image is a
    train image; a timm `patch<p>` architecture), K above them refuses now, not in the evaluate job."""
    if "demo" not in ds:
        return
    pc = cfg["part_discovery"]
    n = ds["demo"].get("n_images", 60)
    n = min(n, ds.get("max_images") or n)
    for name, model in (cfg.get("models") or {}).items():
        patch = re.search(r"patch(\d+)", str(model.get("arch", "")))
        if not patch:
            continue
        tokens = min(pc["max_tokens"], (n + 1) // 2 * (pc["size"] // int(patch.group(1))) ** 2)
        if max(pc["k"]) > tokens:
            raise ConfigError(f"config key part_discovery.k: K {max(pc['k'])} is more than the {tokens} train tokens "
                              f"of {where} for model {name} ({(n + 1) // 2} train images at part_discovery.size "
                              f"{pc['size']}); lower K, raise the size or generate more images")


def use_gpu(cfg: dict) -> bool:
    """faiss k-means on the GPU where faiss has one and the config does not ask for the CPU."""
    return str(cfg.get("device", "auto")) != "cpu" and D.faiss_gpus() > 0
