"""The attentive probe on the patch tokens (PROTOCOL.md section 4): tokens streamed from the
stores (`store_batches`), top-1 on the test store at the best and the last epoch, per seed."""
from __future__ import annotations

import torch

from ..devices import resolve_device
from ..coverage import combined, min_class_count, store_coverage
from ..evals import attentive as A
from ..intervals import settings as stats_settings
from ..store import FeatureStore
from ..store_batches import StoreBatches
from . import register
from .base import Task
from .common import _as_stored, _image_ids, _num_classes, _probe_rows, _valid
from .linear import SGD_PROBE, TOP1


def _token_batches(store: FeatureStore, batch_size: int, memory_mb: float, device: torch.device):
    """Token batches of the valid rows (see `store_batches.StoreBatches`): per-sample shuffled
    with `.epochs(seed)`, in stored order with `.epochs(None)`."""
    return StoreBatches(store, "tokens", batch_size, memory_mb=memory_mb, pin_memory=device.type == "cuda")


def attentive_rows(cfg: dict, ctx: dict, train: FeatureStore, test: FeatureStore) -> list[dict]:
    pc = cfg["attentive"]
    bn_group, memory_mb = pc["bn_group"], pc["memory_mb"]
    device = resolve_device(cfg["device"])
    ytr, yte = train.read("label"), test.read("label")
    classes = _num_classes(cfg, ctx["dataset"], (train, test), ytr, yte)
    dim = train.info("tokens")["shape"][-1]
    cover = {**combined(store_coverage(train, _valid(train)), store_coverage(test, _valid(test))),
             "min_class_n": min_class_count(yte[_valid(test)])}
    # memory_mb is shared: the training tokens first (read every epoch in a new order), then the test's.
    train_batches = _token_batches(train, pc["batch_size"], memory_mb, device)
    test_batches = _token_batches(test, 256, memory_mb - train_batches.in_memory * train_batches.nbytes / 2**20,
                                  device)
    bn = "BN over the whole batch" if bn_group is None else f"BN over groups of {bn_group}"
    images = _image_ids(cfg, ctx, test, _valid(test))  # the test batches serve the valid rows in stored order
    rows = []
    for seed in pc["seeds"]:
        res = A.train_attentive(train_batches.epochs(seed), test_batches.epochs(None), classes, dim,
                              epochs=pc["epochs"], lr=pc["lr"], batch_size=pc["batch_size"],
                              momentum=pc["momentum"], weight_decay=pc["weight_decay"], seed=seed,
                              device=device, bn_group=bn_group)
        rows += _probe_rows(ctx, "attentive", "tokens", res, len(test_batches), seed, cover, images,
                            stats_settings(cfg), notes=bn)
    return _as_stored(rows, train)


@register
class Attentive(Task):
    name = "attentive"
    section = "attentive"
    role = "tokens"
    arrays = ("tokens",)
    protocol = "paper"
    metrics = TOP1
    headline = {"top1_best_epoch": ("top-1 accuracy (%)", "attentive")}
    schema = {"type": "object", "additionalProperties": False, "properties": {
        **SGD_PROBE,
        "lr": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
               "description": "null = 0.01 x batch / 256 (the paper's rule)"},
        "bn_group": {"type": ["integer", "null"], "minimum": 1, "default": 128,
                     "description": "training BatchNorm statistics over groups of this many samples, as each GPU "
                                    "of the released 8-GPU launch sees its share of a 1024 batch; null = the "
                                    "whole batch"},
        "memory_mb": {"type": "integer", "minimum": 0, "default": 4096,
                      "description": "RAM for token caches (training store first, then test); a store that does "
                                     "not fit is read from disk per sample, prefetched in a background thread"},
    }}

    def rows(self, cfg, ctx, stores):
        return attentive_rows(cfg, ctx, *stores), []
