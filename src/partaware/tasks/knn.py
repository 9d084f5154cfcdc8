"""Task `knn`: k-NN classification (DINO's protocol) and the neighbour metrics of metric learning
from the feature cache, searched by FAISS (`evals.neighbours`, `evals.knn`).

Database = the training store, queries = the evaluated store (part kinds: `train` / `test`;
`imagefolder`: its `splits`, e.g. `train` / `val`); a kind with only a retrieval set (`all`)
searches it leave-one-out (each query left out of its own neighbours). Features: `knn.features`
(`mean`, `cls`; `proj` where the stores hold it) L2-normalised, then each per-block summary both
stores hold (`block k mean`, `block k cls`). Rows: `knn_top1@<k>` for each `knn.k`, `precision@1`,
`R-precision`, `MAP@R`, with bootstrap intervals over the query images.
"""
from __future__ import annotations

import logging

import numpy as np

from . import register
from .base import Task

log = logging.getLogger(__name__)


@register
class KnnTask(Task):
    name = "knn"
    section = "knn"
    protocol = "exact"
    runtime_keys = ("memory_mb",)
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

    def splits(self, kind, ds: dict, cfg: dict) -> list[str]:
        """Train + evaluated split where the kind has labelled ones, else its retrieval set."""
        if {"linear", "logistic"} & set(kind.tasks):
            return kind.task_splits(ds, "linear")
        if "retrieval" in kind.tasks:
            return kind.task_splits(ds, "retrieval")
        return []

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        from ..config import ConfigError
        from ..evals.neighbours import INSTALL, FaissMissing, load_faiss

        try:
            load_faiss()
        except FaissMissing as err:
            raise ConfigError(f"config key {where}.tasks: the knn task needs faiss, which is not importable; "
                              f"install it: {INSTALL}") from err
        kc = cfg.get("knn") or {}
        if kc.get("index") == "ivf" and kc.get("nlist") and kc.get("nprobe", 16) > kc["nlist"]:
            raise ConfigError(f"config key knn.nprobe: {kc['nprobe']} is more than knn.nlist ({kc['nlist']}); "
                              "probe at most nlist lists")

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        from ..blocks import array_of, features as block_features
        from ..config import ConfigError
        from ..evals.bootstrap import accuracy_sums
        from ..evals.knn import METRICS, evaluate_knn, top1_metric
        from ..evals.neighbours import Chunks, SearchSpec
        from ..evaluate import _as_stored, _image_ids
        from ..intervals import attach, settings as stats_settings
        from ..results import result_row

        kc = cfg["knn"]
        db, qs = stores[0], stores[-1]
        loo = len(stores) == 1
        dvalid, qvalid = (s.read("valid").astype(bool) for s in (db, qs))
        ydb, yq = db.read("label")[dvalid], qs.read("label")[qvalid]
        size = len(ydb) - int(loo)
        if max(kc["k"]) > size:
            raise ConfigError(f"config key knn.k: {max(kc['k'])} neighbours, but {db.paths[0]} holds {size} valid "
                              f"rows{' besides the query' if loo else ''}; use k <= {size}")
        images = _image_ids(cfg, ctx, qs, qvalid)
        skipped = int((~dvalid).sum() + (0 if loo else (~qvalid).sum()))
        spec = SearchSpec(index=kc["index"], nlist=kc["nlist"], nprobe=kc["nprobe"], float16=kc["float16"],
                          memory_mb=kc["memory_mb"], recall_sample=kc["recall_sample"], seed=cfg.get("seed", 0))
        names = [top1_metric(k) for k in sorted(set(kc["k"]))] + list(METRICS)
        both = set(db.array_names()) & set(qs.array_names())
        stats, rows = stats_settings(cfg), []
        for feature in list(kc["features"]) + block_features(both):
            if array_of(feature) not in both:  # e.g. `proj` of a model without a projection head
                log.warning("%s has no %r array (the model does not give that feature): its knn rows say n/a",
                            db.paths[0], feature)
                rows += [result_row(ctx, "knn", feature, m, float("nan"), 0, protocol="n/a", skipped=skipped)
                         for m in names]
                continue
            arr = array_of(feature)
            res = evaluate_knn(Chunks.of_store(db, arr, dvalid), ydb, Chunks.of_store(qs, arr, qvalid), yq,
                               ks=kc["k"], temperature=kc["temperature"], max_r=kc["max_r"], leave_one_out=loo,
                               spec=spec)
            log.info("knn %s %s: %s; %s", ctx["model"], feature, res.backend, res.protocol)
            protocol = res.protocol + ("; leave-one-out (the query excluded)" if loo else "")
            extra = {}
            if res.missing_queries:
                extra["notes"] = (f"{res.missing_queries} queries of {len(res.missing_classes)} classes absent from "
                                  "the database: wrong in knn_top1, left out of the neighbour metrics")
            summary = res.summary()
            for k in sorted(set(kc["k"])):
                row = result_row(ctx, "knn", feature, top1_metric(k), 100 * summary[top1_metric(k)], len(yq),
                                 protocol=f"{protocol}; T={kc['temperature']}", skipped=skipped, **extra)
                rows += attach([row], None if images is None else accuracy_sums(res.correct[k], images), stats)
            for m in METRICS:
                ok = np.isfinite(res.values[m])
                row = result_row(ctx, "knn", feature, m, 100 * summary[m], int(ok.sum()), protocol=protocol,
                                 skipped=skipped, **extra)
                sums = None if images is None else accuracy_sums(res.values[m][ok], images[ok])
                rows += attach([row], sums, stats)
        return _as_stored(rows, db), []
