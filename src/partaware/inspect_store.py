"""`partaware inspect`: what a cached store holds, and a check that it is sound."""
from __future__ import annotations

import json

import numpy as np

from .store import StoreError, open_store

_SHOWN_ATTRS = ["model", "arch", "weights", "group", "dataset", "split", "checkpoint_sha256",
                "timm_version", "transform", "precision", "device", "config_hash", "n_rows", "complete"]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe(store) -> str:
    lines = [f"store: {', '.join(str(p) for p in store.paths)}"]
    for key in _SHOWN_ATTRS:
        if key in store.attrs:
            lines.append(f"  {key}: {store.attrs[key]}")
    skipped = store.attrs.get("skipped_images") or []
    lines.append(f"  skipped_images: {len(skipped)}")
    lines.append(f"  {'array':<16}{'shape':<22}{'dtype':<10}{'chunks':<22}{'on disk':>10}")
    total = 0
    for name in store.array_names():
        info = store.info(name)
        total += info["bytes_stored"]
        lines.append(f"  {name:<16}{str(info['shape']):<22}{info['dtype']:<10}"
                     f"{str(info['chunks']):<22}{_human(info['bytes_stored']):>10}")
    lines.append(f"  total on disk: {_human(total)}")
    return "\n".join(lines)


def verify(store) -> list[str]:
    """Problems found: non-finite features, row counts that disagree, labels out of range."""
    problems = []
    for name in store.array_names():
        info = store.info(name)
        if info["shape"][0] != store.n_rows:
            problems.append(f"{name}: {info['shape'][0]} rows, the store declares {store.n_rows}")
        if info["dtype"].startswith("float"):
            bad = sum(int((~np.isfinite(b[name])).sum()) for b in store.iter_batches([name], 1024))
            if bad:
                problems.append(f"{name}: {bad} non-finite values")
    if "label" in store.array_names():
        labels = store.read("label")
        if labels.min(initial=0) < 0:
            problems.append(f"label: negative values ({labels.min()})")
    if "row" in store.array_names():
        rows = store.read("row")
        if len(np.unique(rows)) != len(rows):
            problems.append("row: duplicate row ids")
    return problems


def sample_rows(store, n: int) -> str:
    names = [k for k in ("row", "label", "valid") if k in store.array_names()]
    data = {k: store.read(k, 0, n) for k in names}
    lines = ["  " + "  ".join(f"{k:>8}" for k in names)]
    for i in range(len(data[names[0]]) if names else 0):
        lines.append("  " + "  ".join(f"{data[k][i]:>8}" for k in names))
    return "\n".join(lines)


def stats(store) -> str:
    lines = [f"  {'array':<16}{'mean':>12}{'mean L2 norm':>14}{'NaN':>8}"]
    for name in store.array_names():
        if not store.info(name)["dtype"].startswith("float"):
            continue
        total, sq_norms, nans, count = 0.0, 0.0, 0, 0
        for batch in store.iter_batches([name], 512):
            x = batch[name].astype(np.float64).reshape(len(batch[name]), -1)
            nans += int(np.isnan(x).sum())
            total += float(np.nansum(x))
            sq_norms += float(np.sqrt(np.nansum(x * x, axis=1)).sum())
            count += x.size
        rows = max(store.n_rows, 1)
        lines.append(f"  {name:<16}{total / max(count, 1):>12.4f}{sq_norms / rows:>14.4f}{nans:>8}")
    return "\n".join(lines)


def inspect(path, check: bool = False, rows: int = 0, show_stats: bool = False) -> int:
    try:
        store = open_store(path)
    except StoreError as err:
        print(f"partaware inspect: {err}")
        return 2
    with store:
        print(describe(store))
        if rows:
            print(sample_rows(store, rows))
        if show_stats:
            print(stats(store))
        if check:
            problems = verify(store)
            for p in problems:
                print(f"  PROBLEM {p}")
            print("verify: OK" if not problems else f"verify: {len(problems)} problem(s)")
            return 1 if problems else 0
    return 0
