"""The linear probe on CLS (PROTOCOL.md section 4): SGD on the train store, top-1 on the test
store at the best and the last epoch, per seed."""
from __future__ import annotations

from ..devices import resolve_device
from ..coverage import combined, min_class_count
from ..evals.probes import train_linear
from ..intervals import settings as stats_settings
from ..store import FeatureStore
from . import register
from .base import Task
from .common import _as_stored, _image_ids, _num_classes, _probe_rows, _split_xy, _valid

# the SGD probes' section (linear; the attentive probe adds its own keys)
SGD_PROBE = {
    "epochs": {"type": "integer", "minimum": 1, "default": 90},
    "batch_size": {"type": "integer", "minimum": 1, "default": 1024},
    "lr": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
           "description": "null = the paper's rule (linear 0.1 x batch / 256, attentive 0.01 x batch / 256)"},
    "momentum": {"type": "number", "minimum": 0, "default": 0.9},
    "weight_decay": {"type": "number", "minimum": 0, "default": 0.0},
    "seeds": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "default": [0]},
}
# both probes report top-1 accuracy of the best and of the last epoch
TOP1 = {"top1_best_epoch": "top1", "top1_last_epoch": "top1"}


def linear_rows(cfg: dict, ctx: dict, train: FeatureStore, test: FeatureStore) -> list[dict]:
    pc = cfg["linear"]
    xtr, ytr, sk1 = _split_xy(train, "cls")
    xte, yte, sk2 = _split_xy(test, "cls")
    classes = _num_classes(cfg, ctx["dataset"], (train, test), ytr, yte)
    images = _image_ids(cfg, ctx, test, _valid(test))
    rows = []
    for seed in pc["seeds"]:
        res = train_linear(xtr, ytr, xte, yte, classes, epochs=pc["epochs"], batch_size=pc["batch_size"],
                           lr=pc["lr"], momentum=pc["momentum"], weight_decay=pc["weight_decay"],
                           seed=seed, device=resolve_device(cfg["device"]))
        rows += _probe_rows(ctx, "linear", "cls", res, len(yte), seed,
                            {**combined(sk1, sk2), "min_class_n": min_class_count(yte)}, images, stats_settings(cfg))
    return _as_stored(rows, train)


@register
class Linear(Task):
    name = "linear"
    section = "linear"
    role = "pair"
    protocol = "paper"
    metrics = TOP1
    headline = {"top1_best_epoch": ("top-1 accuracy (%)", "linear")}
    schema = {"type": "object", "additionalProperties": False, "properties": SGD_PROBE}

    def rows(self, cfg, ctx, stores):
        return linear_rows(cfg, ctx, *stores), []
