"""L2 logistic regression on CLS (and on each per-block summary both stores hold), its C chosen
on a held-out part of the train store: a probe without SGD's epochs and learning rate."""
from __future__ import annotations

from ..blocks import array_of, features as block_features
from ..coverage import combined, min_class_count
from ..evals.probes import train_logistic
from ..intervals import attach, settings as stats_settings
from ..results import result_row
from ..store import FeatureStore
from . import register
from .base import Task
from .common import _as_stored, _image_ids, _split_xy, _sums, _valid


def logistic_rows(cfg: dict, ctx: dict, train: FeatureStore, test: FeatureStore) -> list[dict]:
    lc = cfg["logistic"]
    images = _image_ids(cfg, ctx, test, _valid(test))
    rows = []
    # the final `cls` (the paper's), then each block summary both stores hold (`block k mean`, `block k cls`)
    for feature in ["cls"] + [f for f in block_features(train.array_names()) if array_of(f) in test.array_names()]:
        xtr, ytr, sk1 = _split_xy(train, array_of(feature))
        xte, yte, sk2 = _split_xy(test, array_of(feature))
        res = train_logistic(xtr, ytr, xte, yte, Cs=lc["Cs"], val_fraction=lc["val_fraction"], seed=cfg["seed"])
        rows += attach([result_row(ctx, "logistic", feature, "top1", 100 * res["acc"], len(yte), seed=cfg["seed"],
                                   **combined(sk1, sk2), min_class_n=min_class_count(yte), protocol="variant",
                                   notes=f"L2 logistic regression, C={res['C']} chosen on a train split")],
                       _sums("accuracy", images, res["correct"]), stats_settings(cfg))
    return _as_stored(rows, train)


@register
class Logistic(Task):
    name = "logistic"
    section = "logistic"
    role = "pair"
    block_summaries = True
    protocol = "variant"
    metrics = {"top1": "top1"}
    headline = {"top1": ("top-1 accuracy (%)", "logistic")}
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "Cs": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
               "default": [0.001, 0.01, 0.1, 1.0, 10.0]},
        "val_fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.2},
    }}

    def rows(self, cfg, ctx, stores):
        return logistic_rows(cfg, ctx, *stores), []
