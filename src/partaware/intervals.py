"""Confidence intervals on result rows, and the per-image statistics each evaluation job keeps
beside its CSV (`<task>_stats.npz`) so `partaware table` can compare encoders pairwise.

An evaluation attaches a measurement's `bootstrap.ImageSums` to its rows (`attach`): the rows
get `ci_low` / `ci_high` (%) and carry the sums under `_sums` until `write_results` writes the
CSV (without them) and the sidecar (one entry per measurement: the rows' key columns, the
metrics it serves, the image ids and sums, and the bootstrap settings used).
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path, write_csv
from .evals.bootstrap import ImageSums, intervals, percentile_interval, replicates, resamplable, value

log = logging.getLogger(__name__)

SUMS = "_sums"  # the rows' private key: never written to a CSV
ENTRY_KEYS = ("dataset", "task", "model", "label_set", "feature", "protocol", "seed")


def settings(cfg: dict) -> dict:
    """The `stats` section of a job's config (a config without one: the schema's defaults)."""
    if "stats" in cfg:
        return cfg["stats"]
    from . import config as C

    return C.fill_defaults(C.load_schema(), {"datasets": {}, "models": {}})["stats"]


def attach(rows: list[dict], sums: ImageSums | None, stats: dict) -> list[dict]:
    """`rows` of one measurement (same images: e.g. AP and mAP of one feature) with `ci_low`,
    `ci_high` in % (NaN without sums, with `bootstrap: 0` or on fewer than two images),
    `ci_images` (the images resampled) and the sums kept for the sidecar."""
    if sums is None or stats["bootstrap"] < 1:
        return [{**r, "ci_low": float("nan"), "ci_high": float("nan")} for r in rows]
    found = intervals(sums, [r["metric"] for r in rows], stats["bootstrap"], stats["level"], stats["seed"])
    return [{**r, "ci_low": 100 * found[r["metric"]][0], "ci_high": 100 * found[r["metric"]][1],
             "ci_images": len(sums.ids), SUMS: sums} for r in rows]


def sidecar_path(csv_path: Path | str) -> Path:
    """results/evals/<dataset>/<model>/<task>.csv -> <task>_stats.npz beside it."""
    csv_path = Path(csv_path)
    return csv_path.with_name(f"{csv_path.stem}_stats.npz")


def write_results(rows: list[dict], csv_path: Path | str, stats: dict) -> None:
    """The CSV of the rows, and beside it the sidecar of their per-image statistics (removed
    when no row has any or `bootstrap` is 0, so a stale one never pairs with new numbers)."""
    csv_path = Path(csv_path)
    entries, seen = [], {}
    for row in rows:
        sums = row.get(SUMS)
        if sums is None or stats["bootstrap"] < 1:
            continue
        if id(sums) in seen:  # one measurement, several metrics
            seen[id(sums)]["metrics"].append(row["metric"])
            continue
        entry = {**{k: _plain(row.get(k, "")) for k in ENTRY_KEYS}, "metrics": [row["metric"]], "sums": sums}
        seen[id(sums)] = entry
        entries.append(entry)
    write_csv(pd.DataFrame([{k: v for k, v in r.items() if k != SUMS} for r in rows]), csv_path)
    side = sidecar_path(csv_path)
    if not entries:
        side.unlink(missing_ok=True)
        return
    arrays = {}
    meta = {"stats": {k: stats[k] for k in ("bootstrap", "level", "seed")}, "entries": []}
    for i, e in enumerate(entries):
        arrays[f"ids_{i}"], arrays[f"sums_{i}"] = e["sums"].ids, e["sums"].sums
        meta["entries"].append({**{k: e[k] for k in ENTRY_KEYS}, "metrics": e["metrics"], "kind": e["sums"].kind})
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), **arrays)
    with atomic_path(side) as tmp:
        tmp.write_bytes(buf.getvalue())


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def read_sidecar(path: Path | str) -> tuple[dict, list[dict]]:
    """(bootstrap settings, entries: key columns, `metrics`, `sums` (ImageSums)) of a sidecar."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        entries = [{**{k: v for k, v in e.items() if k != "kind"},
                    "sums": ImageSums(e["kind"], z[f"ids_{i}"], z[f"sums_{i}"])}
                   for i, e in enumerate(meta["entries"])]
    return meta["stats"], entries


def read_sidecars(csv_paths) -> tuple[dict | None, pd.DataFrame]:
    """Every sidecar beside the given result CSVs, as one frame (one row per measurement and
    metric: the key columns, `metric`, `sums`); the bootstrap settings of the first one
    (None when there is none)."""
    settings_, rows = None, []
    for csv in csv_paths:
        side = sidecar_path(csv)
        if not side.is_file():
            continue
        try:
            found, entries = read_sidecar(side)
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable per-image statistics (%s); its pairwise differences are left out", side, err)
            continue
        if settings_ is None:
            settings_ = found
        elif found != settings_:
            log.warning("%s: bootstrap settings %s differ from %s; pairwise differences use the latter",
                        side, found, settings_)
        rows += [{**{k: e[k] for k in ENTRY_KEYS}, "metric": m, "sums": e["sums"]}
                 for e in entries for m in e["metrics"]]
    return settings_, pd.DataFrame(rows, columns=[*ENTRY_KEYS, "metric", "sums"])


def pairwise(stats_rows: pd.DataFrame, stats: dict, skip_feature=lambda f: False) -> pd.DataFrame:
    """Paired differences between every two encoders of each measurement: one row per
    (dataset, task, label_set, feature, protocol, metric, model_a, model_b) with `diff`, `low`,
    `high` (percentage points, a minus b), `n_images` and `excludes_zero`.

    All encoders of a measurement are resampled with the same image multiplicities, on the
    images they all have; with several probe seeds, each encoder's lowest seed that all share
    (seeds are a separate spread, never resampled). Fewer than two shared images: the
    difference without an interval (`low`, `high` NaN, `excludes_zero` False).
    """
    cols = ["dataset", "task", "label_set", "feature", "protocol", "metric", "model_a", "model_b", "diff",
            "low", "high", "n_images", "excludes_zero", "seed"]
    out = []
    if stats_rows.empty or stats["bootstrap"] < 1:
        return pd.DataFrame(out, columns=cols)
    keys = ["dataset", "task", "label_set", "feature", "protocol", "metric"]
    for key, group in stats_rows.groupby(keys, sort=False, dropna=False):
        if skip_feature(key[3]):
            continue
        group = group.assign(seed=group["seed"].astype(str))
        shared = set.intersection(*(set(g["seed"]) for _, g in group.groupby("model", sort=False)))
        if not shared:
            continue
        seed = sorted(shared, key=lambda s: (len(s), s))[0]
        group = group[group["seed"] == seed].drop_duplicates("model")
        if len(group) < 2:
            continue
        tables = list(group["sums"])
        common = tables[0].ids
        for t in tables[1:]:
            common = np.intersect1d(common, t.ids)
        tables = [t.subset(common) for t in tables]
        metric = key[5]
        points = [value(t, metric) for t in tables]
        models = list(group["model"])
        if resamplable(len(common)):
            reps = replicates(tables, [metric], stats["bootstrap"], stats["seed"])[:, 0]
        else:  # one shared image: no interval, so never a significance mark
            reps = np.full((len(models), 1), np.nan)
        for i in range(len(models)):
            for j in range(i + 1, len(models)):
                lo, hi = percentile_interval(reps[i] - reps[j], stats["level"])
                out.append([*key, models[i], models[j], 100 * (points[i] - points[j]), 100 * lo, 100 * hi,
                            len(common), bool(np.isfinite(lo) and (lo > 0 or hi < 0)), seed])
    return pd.DataFrame(out, columns=cols)
