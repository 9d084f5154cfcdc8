"""Part (and object) segmentation: a probe per label set on the raw token maps of some blocks.

Two protocols (`segmentation.protocol`): `cached`, the rows computed here from the stored fixed
views (a fast screen), and `paper`, the `partaware segment` job (`seg_online/`: online training,
slide inference), whose result file `segmentation_paper` this task also names.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import seg_protocols
from ..devices import resolve_device
from ..coverage import combined, store_coverage
from ..evals.segmentation import evaluate_seg_probe, pass_order, shuffled_batches, train_seg_probe
from ..intervals import attach, settings as stats_settings
from ..results import segmentation_protocol
from ..results import segmentation_rows as seg_result_rows
from ..store import FeatureStore
from . import register
from .base import Task
from .common import _sums, _valid


def _seg_batches(store: FeatureStore, blocks: list[int], label_set: str, batch_size: int,
                 memory_mb: int = 2048, seed: int | None = None):
    """(features, labels) batches of valid rows.

    Training (`seed` given): a callable taking the pass number, every pass in its own seeded
    order (`evals.segmentation.shuffled_batches`): single rows when the store fits in
    `memory_mb` (read once, revisited many times), else stored runs of `batch_size` rows shuffled
    as blocks, so disk reads stay sequential. Testing (`seed` None): store order.
    """
    valid = _valid(store)
    names = [f"layers/{b}" for b in blocks] + [f"labels/{label_set}"]
    row_bytes = sum(np.prod(store.info(n)["shape"][1:]) * np.dtype(store.info(n)["dtype"]).itemsize
                    for n in names)
    cached = None
    if row_bytes * store.n_rows <= memory_mb * 2**20:
        cached = {n: store.read_checked(n, valid=valid)[valid] for n in names}
    n_rows = int(valid.sum()) if cached is not None else store.n_rows

    def pack(part):
        feats = np.concatenate([part[n] for n in names[:-1]], axis=1)
        return torch.from_numpy(feats), torch.from_numpy(part[names[-1]])

    def read(lo, hi):
        if cached is not None:
            return {n: a[lo:hi] for n, a in cached.items()}
        keep = valid[lo:hi]
        return {n: store.read_checked(n, lo, hi, valid=keep)[keep] for n in names}

    def in_order(starts):
        for lo in starts:
            part = read(lo, min(lo + batch_size, n_rows))
            if len(part[names[-1]]):
                yield pack(part)

    starts = list(range(0, n_rows, batch_size))
    if seed is None:
        return lambda: in_order(starts)
    if cached is not None:
        return shuffled_batches(lambda rows: pack({n: a[rows] for n, a in cached.items()}),
                                n_rows, batch_size, seed)
    return lambda epoch: in_order([starts[i] for i in pass_order(len(starts), epoch, seed)])


def segmentation_rows(cfg: dict, ctx: dict, train: FeatureStore, val: FeatureStore) -> tuple[list[dict], list[dict]]:
    """The cached protocol: a probe per label set on the stored fixed views, shuffled per pass."""
    ds, sc = cfg["datasets"][ctx["dataset"]], cfg["segmentation"]
    device = resolve_device(cfg["device"])
    protocol, notes = segmentation_protocol(sc, "cached")
    notes = "; ".join(filter(None, [notes, val.attrs.get("label_note", "")]))  # a kind's labelling choices
    n = int(_valid(val).sum())
    cover = combined(store_coverage(train, _valid(train)), store_coverage(val, _valid(val)))
    # one row per image; the test batches serve the valid rows in stored order
    images = val.read("row")[_valid(val)] if "row" in val.array_names() else np.flatnonzero(_valid(val))
    rows, per_class = [], []
    for label_set, spec in ds["label_sets"].items():
        torch.manual_seed(cfg["seed"])
        model = train_seg_probe(_seg_batches(train, ds["blocks"], label_set, sc["batch_size"], seed=cfg["seed"]),
                                num_classes=spec["classes"], iters=sc["iters"], lr=sc["lr"],
                                weight_decay=sc["weight_decay"], warmup_iters=sc["warmup_iters"],
                                power=sc["power"], avg_non_ignore=sc["avg_non_ignore"], seed=cfg["seed"],
                                device=device, reduce_zero_label=True, head=sc["head"],
                                log_every_s=sc["log_every_s"])
        metrics = evaluate_seg_probe(model, _seg_batches(val, ds["blocks"], label_set, sc["batch_size"]),
                                     num_classes=spec["classes"], reduce_zero_label=True, device=device)
        r, pc = seg_result_rows(ctx, label_set, metrics, blocks=ds["blocks"], n=n, protocol=protocol,
                                notes=notes, seed=cfg["seed"], **cover)
        rows += attach(r, _sums("segmentation", images, metrics["per_image"]), stats_settings(cfg))
        per_class += pc
    return rows, per_class


@register
class Segmentation(Task):
    name = "segmentation"
    section = "segmentation"
    role = "maps"
    protocol = "cached"  # `partaware evaluate`'s rows; the `segment` job's are `paper`
    metrics = {"mIoU": "mIoU", "mAcc": "mAcc", "aAcc": "aAcc"}
    headline = {"mIoU": ("segmentation mIoU (%)", "{label_set} ({protocol})")}
    runtime_keys = ("num_workers", "log_every_s", "window_batch", "checkpoint_every", "protocol", "forward_batch",
                    "compile")
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "iters": {"type": "integer", "minimum": 1, "default": 160000},
        "batch_size": {"type": "integer", "minimum": 1, "default": 16},
        "lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.0004},
        "weight_decay": {"type": "number", "minimum": 0, "default": 0.05},
        "warmup_iters": {"type": "integer", "minimum": 0, "default": 1500},
        "power": {"type": "number", "minimum": 0, "default": 1.0},
        "protocol": {
            "description": "paper = augmented online training on the frozen encoder + slide inference (PROTOCOL "
                           "section 5); cached = a probe on one stored fixed view per image (a fast screen); a "
                           "list runs both",
            "default": "paper",
            "oneOf": [{"enum": ["paper", "cached"]},
                      {"type": "array", "items": {"enum": ["paper", "cached"]}, "minItems": 1, "uniqueItems": True}]},
        "head": {"enum": ["conv", "bn_conv"], "default": "conv",
                 "description": "conv = the released head (one 1x1 conv on the raw block maps); bn_conv = "
                                "BatchNorm + 1x1 conv, a variant"},
        "checkpoint_every": {"type": "integer", "minimum": 1, "default": 2000,
                             "description": "paper protocol: save the head state (heads, optimiser, iteration) every "
                                            "N iterations (a killed run resumes); run-time knob"},
        "num_workers": {"description": "paper protocol: DataLoader workers that decode and augment; auto = the "
                                       "job's threads - 1 (see gpu_threads); run-time knob",
                        "default": "auto", "oneOf": [{"const": "auto"}, {"type": "integer", "minimum": 0}]},
        "log_every_s": {"type": "number", "minimum": 0, "default": 60,
                        "description": "seconds between progress lines; run-time knob"},
        "window_batch": {"type": "integer", "minimum": 1, "default": 8,
                         "description": "paper protocol: slide windows per encoder forward at test (1 = exactly "
                                        "mmseg's order of operations); run-time knob"},
        "forward_batch": {
            "description": "paper protocol: images per frozen forward; auto = the whole batch, halved on a CUDA "
                           "out-of-memory error until it fits (a 24 GB GPU); the heads still see the whole batch; "
                           "run-time knob",
            "default": "auto",
            "oneOf": [{"enum": ["auto"]}, {"type": "integer", "minimum": 1}]},
        "compile": {"type": "boolean", "default": False,
                    "description": "paper protocol: torch.compile the frozen forward at the fixed crop shape (the "
                                   "first iterations compile); run-time knob"},
        "avg_non_ignore": {"type": "boolean", "default": False,
                           "description": "loss divided by the non-ignored pixels (mmseg >= 0.23) instead of all "
                                          "pixels (mmseg 0.x, the paper)"},
    }}

    def splits(self, kind, ds, cfg):
        """Stores only for the cached protocol: the paper protocol reads the images themselves."""
        if cfg is not None and "cached" not in seg_protocols(cfg):
            return []
        return kind.stores(self.role, ds)

    def outputs(self, ds, cfg):
        protocols = seg_protocols(cfg)
        return (["segmentation"] if "cached" in protocols else []) + \
               (["segmentation_paper"] if "paper" in protocols else [])

    def rows(self, cfg, ctx, stores):
        return segmentation_rows(cfg, ctx, *stores)

    def figures(self, cfg, dataset):
        """The cached feature maps, where the cached protocol stores them."""
        return ["feature_maps"] if "cached" in seg_protocols(cfg) else []
