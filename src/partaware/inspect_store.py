"""`partaware inspect`: what a cached store holds, and a check that it is sound."""
from __future__ import annotations

from pathlib import Path

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


def _batch_rows(shape: tuple) -> int:
    """Rows per read so one float64 copy of a batch stays near 32 MB (token and map arrays
    hold thousands of values per row)."""
    return max(1, 2**22 // max(1, int(np.prod(shape[1:], dtype=np.int64))))


def verify(store) -> list[str]:
    """Problems found: non-finite features, row counts that disagree, labels out of range."""
    problems = []
    for name in store.array_names():
        info = store.info(name)
        if info["shape"][0] != store.n_rows:
            problems.append(f"{name}: {info['shape'][0]} rows, the store declares {store.n_rows}")
        if info["dtype"].startswith("float"):
            batches = store.iter_batches([name], _batch_rows(info["shape"]))
            bad = sum(int((~np.isfinite(b[name])).sum()) for b in batches)
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


def find_index(path, attrs: dict | None = None) -> Path | None:
    """The part index a store joins, by the layout results/features/{dataset}/{model}/{split}.<ext>
    -> results/index/{dataset}/{split}.parquet (shards and manifests share their split's index)."""
    path = Path(path).absolute()
    attrs = attrs or {}
    split = path.name.split(".")[0]
    for dataset in dict.fromkeys([path.parent.parent.name, attrs.get("dataset")]):
        if dataset and len(path.parents) > 3:
            candidate = path.parents[3] / "index" / str(dataset) / f"{split}.parquet"
            if candidate.is_file():
                return candidate
    return None


def _short(image_path: str) -> str:
    return "/".join(Path(image_path).parts[-2:])


def sample_rows(store, n: int, index_path: Path | None = None) -> str:
    """The first `n` rows: row, label, valid, and, joined on `row` through the part index, the
    part, the box and the image it was cut from."""
    import pandas as pd

    names = [k for k in ("row", "label", "valid") if k in store.array_names()]
    n = min(n, store.n_rows)
    table = pd.DataFrame({k: store.read(k, 0, n) for k in names})
    for feat in ("mean", "cls"):
        if feat in store.array_names():
            table[f"|{feat}|"] = np.linalg.norm(store.read(feat, 0, n).astype(np.float32), axis=1).round(2)
            break
    lines = []
    if index_path is not None and "row" in table:
        index = pd.read_parquet(index_path)
        lines.append(f"  part index: {index_path} ({len(index)} rows)")
        if len(index) != store.n_rows:
            lines.append(f"  WARNING: the index has {len(index)} rows, the store {store.n_rows}; "
                         "one of them is stale")
        joined = index.set_index("row").reindex(table["row"])
        table["part"] = joined["part_name"].to_numpy()
        table["box"] = [f"({x0},{y0},{x1},{y1})" if pd.notna(x0) else "?" for x0, y0, x1, y1 in
                        joined[["x0", "y0", "x1", "y1"]].itertuples(index=False)]
        table["image"] = [_short(p) if isinstance(p, str) else "?" for p in joined["image_path"]]
        if "label" in table and (joined["label"].to_numpy() != table["label"].to_numpy()).any():
            lines.append("  WARNING: store labels differ from the index's; the store is stale")
    elif "row" in table and "label" in table:
        lines.append("  (no part index found beside the store; rows shown without their parts)")
    lines += ["  " + line for line in table.to_string(index=False).splitlines()]
    return "\n".join(lines)


def _vector_axis(shape: tuple) -> int:
    """The axis that holds one feature vector: channels of (N, D, h, w) maps, else the last."""
    return 1 if len(shape) == 4 else -1


def stats(store) -> str:
    """Per float array: mean value, mean L2 norm of its feature vectors, NaN and Inf counts."""
    lines = [f"  {'array':<16}{'mean':>12}{'mean L2 norm':>14}{'NaN':>10}{'Inf':>10}"]
    for name in store.array_names():
        info = store.info(name)
        if not info["dtype"].startswith("float"):
            continue
        batch = _batch_rows(info["shape"])
        total, count, norm_sum, vectors, nans, infs = 0.0, 0, 0.0, 0, 0, 0
        for b in store.iter_batches([name], batch):
            x = b[name].astype(np.float64)
            nans += int(np.isnan(x).sum())
            infs += int(np.isinf(x).sum())
            finite = np.isfinite(x)
            total += float(x[finite].sum())
            count += int(finite.sum())
            norms = np.sqrt(np.where(finite, x * x, 0).sum(axis=_vector_axis(x.shape)))
            norm_sum += float(norms.sum())
            vectors += norms.size
        mean = total / count if count else float("nan")
        norm = norm_sum / vectors if vectors else float("nan")
        lines.append(f"  {name:<16}{mean:>12.4f}{norm:>14.4f}{nans:>10}{infs:>10}")
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
            print(sample_rows(store, rows, find_index(path, store.attrs)))
        if show_stats:
            print(stats(store))
        if check:
            problems = verify(store)
            for p in problems:
                print(f"  PROBLEM {p}")
            print("verify: OK" if not problems else f"verify: {len(problems)} problem(s)")
            return 1 if problems else 0
    return 0
