"""Part retrieval (PROTOCOL.md section 3): every part patch of the `all` store queries all
others; AP per query, mAP per class, for each feature (then per-block features)."""
from __future__ import annotations

import logging

import numpy as np

from ..devices import resolve_device
from ..blocks import array_of, features as block_features
from ..coverage import min_class_count, store_coverage
from ..evals.retrieval import average_precision_per_query, degenerate_note, summarise_checked
from ..intervals import attach, settings as stats_settings
from ..results import result_row
from ..store import FeatureStore
from . import register
from .base import Task
from .common import _image_ids, _sums, _valid

log = logging.getLogger(__name__)


def retrieval_rows(cfg: dict, ctx: dict, store: FeatureStore) -> list[dict]:
    rc = cfg["retrieval"]
    valid = _valid(store)
    labels = store.read("label")[valid]
    protocol, notes = ("variant", "query excluded") if rc["exclude_self"] else ("paper", "query included")
    images, stats = _image_ids(cfg, ctx, store, valid), stats_settings(cfg)
    degenerate, note = degenerate_note(labels, rc["exclude_self"])
    cover = {**store_coverage(store, valid), "min_class_n": min_class_count(labels)}
    if note:  # the rows count them in `degenerate` and say it in their notes
        log.warning("%s: %s", store.paths[0], note)
        notes = f"{notes}; {note}"
    rows = []
    for feature in rc["features"] + block_features(store.array_names()):  # then `block k mean`, ...
        if array_of(feature) not in store.array_names():  # e.g. `proj` of a model without a projection head
            log.warning("%s has no %r array (the model does not give that feature): its rows say n/a",
                        store.paths[0], feature)
            absent = f"{notes}; no {feature!r} array in the store (the model does not give that feature)"
            rows += [result_row(ctx, "retrieval", feature, metric, float("nan"), 0, protocol=protocol, notes=absent,
                                **cover) for metric in ("AP", "mAP")]
            continue
        feats = store.read_checked(array_of(feature), valid=valid)[valid].astype(np.float32)
        ap = average_precision_per_query(feats, labels, exclude_self=rc["exclude_self"],
                                         memory_mb=rc["memory_mb"], device=resolve_device(cfg["device"]))
        summary = summarise_checked(ap, labels)
        rows += attach([result_row(ctx, "retrieval", feature, metric, 100 * summary[metric], len(labels),
                                   protocol=protocol, notes=notes, degenerate=degenerate, **cover)
                        for metric in ("AP", "mAP")],
                       _sums("retrieval", images if degenerate < len(labels) else None, ap, labels), stats)
    return rows


@register
class Retrieval(Task):
    name = "retrieval"
    section = "retrieval"
    role = "gallery"
    block_summaries = True
    protocol = "paper"
    metrics = {"AP": "AP", "mAP": "mAP"}
    headline = {"AP": ("retrieval AP (%)", "{feature}")}
    schema = {
        "type": "object", "additionalProperties": False,
        "properties": {
            "features": {"type": "array", "items": {"enum": ["mean", "cls", "proj"]}, "default": ["mean", "cls", "proj"]},
            "exclude_self": {"type": "boolean", "default": False},
            "memory_mb": {"type": "integer", "minimum": 16, "default": 2048},
        }}

    def rows(self, cfg, ctx, stores):
        return retrieval_rows(cfg, ctx, *stores), []

    def figures(self, cfg, dataset):
        """Each encoder's nearest parts to a few queries."""
        return ["retrieval_grid"]
