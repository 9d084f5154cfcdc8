"""Task `knn`: k-NN classification (DINO's protocol) and the neighbour metrics of metric learning
from the feature cache, searched by FAISS (`evals.neighbours`, `evals.knn`).

Database = the training store, queries = the evaluated store (the `pair` stores: part kinds'
`train` / `test`, `imagefolder`'s `splits`, e.g. `train` / `val`); given one store (`partaware
evaluate --task knn` on a retrieval set such as `all`) it searches that store leave-one-out, each
query left out of its own neighbours. Features: `knn.features` (`mean`, `cls`; `proj` where the
stores hold it) L2-normalised, then each per-block summary both stores hold (`block k mean`,
`block k cls`). Rows: `knn_top1@<k>` for each `knn.k` (a k above the database's valid rows is
clamped to them, said in the notes and the log, so a small set still runs), `precision@1`,
`R-precision`, `MAP@R`,
with bootstrap intervals over the query images; protocol `exact` (flat index) or `variant` (IVF,
its measured recall in the notes).
"""
from __future__ import annotations

import logging

import numpy as np

from ..blocks import array_of, features as block_features
from ..coverage import combined, min_class_count, store_coverage
from ..errors import ConfigError
from ..evals.knn import METRICS as NEIGHBOUR_METRICS, evaluate_knn, top1_metric
# evals.knn and evals.neighbours import numpy only: faiss is imported when a search runs
from ..evals import neighbours as N
from ..evals.neighbours import Chunks, SearchSpec
from ..intervals import attach, settings as stats_settings
from ..results import result_row
from . import register
from .base import Task
from .common import _as_stored, _image_ids, _sums, _valid

log = logging.getLogger(__name__)


class _Metrics(dict):
    """The task's metric -> bootstrap statistic map: every `knn_top1@<k>` (k from the config) and
    the neighbour metrics are means of per-query values, the `top1` statistic."""

    def __contains__(self, metric) -> bool:
        return dict.__contains__(self, metric) or _is_top1(metric)

    def __missing__(self, metric):
        if _is_top1(metric):
            return "top1"
        raise KeyError(metric)


def _is_top1(metric) -> bool:
    return isinstance(metric, str) and metric.startswith("knn_top1@") and metric[len("knn_top1@"):].isdigit()


@register
class KnnTask(Task):
    name = "knn"
    section = "knn"
    role = "pair"
    block_summaries = True
    protocol = "exact"
    runtime_keys = ("memory_mb",)
    metrics = _Metrics({m: "top1" for m in NEIGHBOUR_METRICS})
    headline = {"knn_top1@20": ("top-1 accuracy (%)", "k-NN {feature}")}  # DINO's k
    schema = {
        "type": "object",
        "additionalProperties": False,
        "description": ("k-NN classification (DINO: cosine, similarity-weighted vote exp(s/T)) and precision@1, "
                        "R-precision, MAP@R (pytorch-metric-learning's definitions), searched by FAISS"),
        "properties": {
            "features": {"type": "array", "items": {"enum": ["mean", "cls", "proj"]}, "minItems": 1,
                         "default": ["mean", "cls"]},
            "k": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "default": [20],
                  "description": "neighbours of the weighted vote, one knn_top1@k row each (DINO: 10, 20, 100, 200)"},
            "temperature": {"type": "number", "exclusiveMinimum": 0, "default": 0.07},
            "max_r": {"type": ["integer", "null"], "minimum": 1, "default": None,
                      "description": "cap on R of R-precision and MAP@R (null: the query's class size)"},
            "index": {"enum": ["flat", "ivf"], "default": "flat",
                      "description": "flat: exact IndexFlatIP; ivf: IndexIVFFlat, its recall@k measured on a sample"},
            "nlist": {"type": ["integer", "null"], "minimum": 1, "default": None,
                      "description": "IVF lists (null: 4 sqrt(database rows))"},
            "nprobe": {"type": "integer", "minimum": 1, "default": 16},
            "recall_sample": {"type": "integer", "minimum": 1, "default": 1000,
                              "description": "IVF: queries whose exact neighbours measure its recall"},
            "float16": {"type": "boolean", "default": False,
                        "description": "half-precision database in the index (GPU: faiss's float16 storage)"},
            "memory_mb": {"type": "integer", "minimum": 16, "default": 1024,
                          "description": "per query block (results and copies); never changes results"},
        },
    }

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        if not N.faiss_installed():
            raise ConfigError(f"config key {where}.tasks: the knn task needs faiss, which is not installed; "
                              f"install it: {N.INSTALL}; or drop knn from the tasks")
        kc = cfg.get("knn") or {}
        if kc.get("index") == "ivf" and kc.get("nlist") and kc.get("nprobe", 16) > kc["nlist"]:
            raise ConfigError(f"config key knn.nprobe: {kc['nprobe']} is more than knn.nlist ({kc['nlist']}); "
                              "probe at most nlist lists")

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        return knn_rows(cfg, ctx, stores), []


def knn_rows(cfg: dict, ctx: dict, stores: list) -> list[dict]:
    """The rows of `stores` = [database, queries], or [one store] searched leave-one-out."""
    kc = cfg["knn"]
    db, qs = stores[0], stores[-1]
    loo = len(stores) == 1
    dvalid, qvalid = _valid(db), _valid(qs)
    ydb, yq = db.read("label")[dvalid], qs.read("label")[qvalid]
    size = len(ydb) - int(loo)
    if size < 1:
        raise ConfigError(f"config key knn.k: {db.paths[0]} holds no valid row{' besides the query' if loo else ''} "
                          "to search; extract a database with usable images")
    used = {k: min(k, size) for k in sorted(set(kc["k"]))}  # k above the database: all of it votes
    clamp = ""
    if any(k != u for k, u in used.items()):
        clamp = (f"k clamped to {size}: the database holds {size} valid rows"
                 f"{' besides the query' if loo else ''} (knn.k {sorted(used)})")
        log.warning("knn %s: %s", ctx["model"], clamp)
    images = _image_ids(cfg, ctx, qs, qvalid)
    cover = {**(store_coverage(db, dvalid) if loo else combined(store_coverage(db, dvalid),
                                                                 store_coverage(qs, qvalid))),
             "min_class_n": min_class_count(yq)}
    spec = SearchSpec(index=kc["index"], nlist=kc["nlist"], nprobe=kc["nprobe"], float16=kc["float16"],
                      memory_mb=kc["memory_mb"], recall_sample=kc["recall_sample"], seed=cfg.get("seed", 0))
    ks = sorted(set(used.values()))
    names = [top1_metric(k) for k in used] + list(NEIGHBOUR_METRICS)
    both = set(db.array_names()) & set(qs.array_names())
    stats, rows = stats_settings(cfg), []
    for feature in list(kc["features"]) + block_features(both):
        if array_of(feature) not in both:  # e.g. `proj` of a model without a projection head
            log.warning("%s has no %r array (the model does not give that feature): its knn rows say n/a",
                        db.paths[0], feature)
            rows += [result_row(ctx, "knn", feature, m, float("nan"), 0, protocol="exact",
                                notes=f"no {feature!r} array in the stores", **cover) for m in names]
            continue
        arr = array_of(feature)
        res = evaluate_knn(Chunks.of_store(db, arr, dvalid), ydb, Chunks.of_store(qs, arr, qvalid), yq,
                           ks=ks, temperature=kc["temperature"], max_r=kc["max_r"], leave_one_out=loo, spec=spec)
        log.info("knn %s %s: %s; %s", ctx["model"], feature, res.backend, res.protocol)
        protocol = "variant" if kc["index"] == "ivf" else "exact"  # IVF: approximate, its recall in the notes
        notes = [f"{res.protocol} search", "leave-one-out (the query excluded)" if loo else "train store searched"]
        notes += [clamp] if clamp else []
        if res.missing_queries:
            notes.append(f"{res.missing_queries} queries of {len(res.missing_classes)} classes absent from the "
                         "database: wrong in knn_top1, left out of the neighbour metrics")
        summary = res.summary()
        for k, u in used.items():  # named by the configured k, computed with the clamped one
            row = result_row(ctx, "knn", feature, top1_metric(k), 100 * summary[top1_metric(u)], len(yq),
                             protocol=protocol, notes="; ".join([f"DINO weighted vote, T={kc['temperature']}"]
                                                                + notes), **cover)
            rows += attach([row], _sums("accuracy", images, res.correct[u]), stats)
        for m in NEIGHBOUR_METRICS:
            ok = np.isfinite(res.values[m])
            r_note = f"R capped at {kc['max_r']}" if kc["max_r"] else "R = the class's other samples"
            row = result_row(ctx, "knn", feature, m, 100 * summary[m], int(ok.sum()), protocol=protocol,
                             notes="; ".join([r_note] + notes), **cover)
            rows += attach([row], _sums("accuracy", None if images is None else images[ok], res.values[m][ok]),
                           stats)
    return _as_stored(rows, db)
