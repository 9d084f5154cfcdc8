"""Glue between the feature stores and the pure evaluation functions in `evals/`, shared by the
task modules: which rows are valid, their image ids (what the bootstrap resamples), features and
labels of a split, the probe's class count, and what the store says of its rows.
"""
from __future__ import annotations

import logging

import numpy as np

from ..coverage import store_coverage
from ..evals import bootstrap as BS
from ..intervals import attach
from ..results import result_row
from ..store import FeatureStore

log = logging.getLogger(__name__)


def _valid(store: FeatureStore) -> np.ndarray:
    return store.read("valid").astype(bool)


def _image_ids(cfg: dict, ctx: dict, store: FeatureStore, valid: np.ndarray) -> np.ndarray | None:
    """The image id of each valid row, which the bootstrap resamples: the `image` array of a part
    kind's store (its rows are patches); kinds without a part index store one row per image, so
    there `row` is the image. None (no interval, said once) for a part store extracted before
    stores held `image`. Whether rows are images is the kind's to say (`Kind.has_index`); the
    evaluate command puts it in `ctx["rows_are_images"]`, so tasks never ask a kind."""
    names = store.array_names()
    if "image" in names:
        return store.read("image")[valid]
    if "row" in names and ctx.get("rows_are_images"):
        return store.read("row")[valid]
    log.info("%s holds no image ids (extracted before stores kept them): no confidence intervals from it; "
             "delete the store and rerun the workflow to get them", store.paths[0])
    return None


def _sums(kind: str, images, *values):
    """Per-image sums for the bootstrap (`evals.bootstrap`), None without image ids."""
    if images is None:
        return None
    if kind == "retrieval":
        return BS.retrieval_sums(values[0], images, values[1])
    if kind == "accuracy":
        return BS.accuracy_sums(values[0], images)
    return BS.segmentation_sums(**values[0], image_ids=images)


def _split_xy(store: FeatureStore, feature: str):
    valid = _valid(store)
    feats = store.read_checked(feature, valid=valid)[valid].astype(np.float32)
    return feats, store.read("label")[valid], store_coverage(store, valid)


def _num_classes(cfg: dict, dataset: str, stores, *label_arrays) -> int:
    """The probe's output size: the configured parts, else the class list the stores record (an
    image folder's class folders, some of which may hold no row), else the largest label + 1."""
    parts = cfg["datasets"][dataset].get("parts")
    if parts:
        return len(parts)
    recorded = [len(s.attrs["classes"]) for s in stores if s.attrs.get("classes")]
    return max(recorded) if recorded else int(max(int(a.max()) for a in label_arrays) + 1)


def _as_stored(rows: list[dict], store: FeatureStore) -> list[dict]:
    """Rows with what the store says of its rows (`kinds` put it there): their label set, and a
    note on the view they were cached at for the notes column (e.g. an image folder's crop)."""
    attrs = store.attrs
    note, label_set = attrs.get("protocol_note"), attrs.get("label_set")
    return [{**row, **({"label_set": label_set} if label_set else {}),
             **({"notes": f"{row['notes']}; {note}" if row["notes"] else note} if note else {})} for row in rows]


def _probe_rows(ctx, task, feature, res, n, seed, cover, images=None, stats=None, notes="") -> list[dict]:
    """Best- and last-epoch rows, each with the interval of its own test correctness; `cover`:
    what the rows rest on (`coverage`)."""
    extra = f"; {notes}" if notes else ""
    best = result_row(ctx, task, feature, "top1_best_epoch", 100 * res["best_acc"], n, seed=seed, **cover,
                      protocol="paper", notes="best test epoch" + extra)
    last = result_row(ctx, task, feature, "top1_last_epoch", 100 * res["last_acc"], n, seed=seed, **cover,
                      protocol="variant", notes="last epoch" + extra)
    if stats is None:
        return [best, last]
    return (attach([best], _sums("accuracy", images, res["best_correct"]), stats)
            + attach([last], _sums("accuracy", images, res["last_correct"]), stats))
