"""`partaware inspect`: what a cached store holds, and a check that it is sound.

`--verify` reads every chunk of every array and reports each problem as one line (missing
chunk, checksum mismatch or undecodable chunk, non-finite values or all-zero feature rows among
valid rows, row counts, labels, row ids), never a traceback; any problem makes it exit 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .inspect_verify import _batch_rows, _missing, _rows, verify
from .store import StoreError, open_store

_SHOWN_ATTRS = ["model", "arch", "weights", "group", "dataset", "split", "checkpoint_sha256",
                "timm_version", "transform", "precision", "device", "config_hash", "store_format", "n_rows",
                "complete"]


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
    lines.append(f"  {'array':<16}{'shape':<22}{'dtype':<10}{'chunks':<22}{'stored':>10}")
    total = 0
    for name in store.array_names():
        info = store.info(name)
        total += info["bytes_stored"]
        lines.append(f"  {name:<16}{str(info['shape']):<22}{info['dtype']:<10}"
                     f"{str(info['chunks']):<22}{_human(info['bytes_stored']):>10}")
    used, files = disk_usage(store.paths)
    lines.append(f"  total on disk: {_human(used)} in {files} file(s) ({_human(total)} of chunk data; "
                 "the rest is file-system blocks and metadata)")
    return "\n".join(lines)


def disk_usage(paths) -> tuple[int, int]:
    """(bytes the file system allocated, file count) under the store paths, as `du` counts them:
    a store of many small chunk files takes a block each, far more than their data."""
    used, files = 0, 0
    for path in paths:
        path = Path(path)
        for f in ([path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())):
            st = f.stat()
            used += getattr(st, "st_blocks", 0) * 512 or st.st_size
            files += 1
    return used, files


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
    lost = [f"{k} {_rows(lo, min(hi, n))}" for k in ("row", "label") if k in names
            for lo, hi, _ in _missing(store, k) if lo < n]
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
        if lost:
            lines.append(f"  WARNING: chunks of {', '.join(lost)} are missing (shown as 0): the store is "
                         "damaged, not stale; `partaware inspect --verify` lists the damage")
        elif "label" in table and (joined["label"].to_numpy() != table["label"].to_numpy()).any():
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
    """Print what `path` holds (and, with `check`, every problem); 0 sound, 1 problems, 2 unreadable."""
    try:
        store = open_store(path, check_chunks=False)  # damage is described here, not refused
    except StoreError as err:
        print(f"partaware inspect: {err}")
        return 2
    try:
        with store:
            return _inspect(store, path, check, rows, show_stats)
    except StoreError as err:  # a damaged chunk met while showing rows or stats
        print(f"partaware inspect: {err}")
        return 2
    except Exception as err:  # damaged metadata: still one line, never a traceback
        print(f"partaware inspect: {path}: cannot be read ({type(err).__name__}: {err}); "
              "delete the store and rerun the workflow")
        return 2


def _inspect(store, path, check: bool, rows: int, show_stats: bool) -> int:
    print(describe(store))
    if not check:
        lost = {name: len(_missing(store, name)) for name in store.array_names()}
        if any(lost.values()):
            print(f"  WARNING: {sum(lost.values())} chunk(s) missing in "
                  f"{', '.join(k for k, v in lost.items() if v)}: the store is damaged; "
                  f"`partaware inspect --verify {path}` lists them")
    if rows:
        print(sample_rows(store, rows, find_index(path, store.attrs)))
    if show_stats:
        print(stats(store))
    if check:
        problems = verify(store)
        for p in problems:
            print(f"  PROBLEM {p}")
        print("verify: OK" if not problems else
              f"verify: {len(problems)} problem(s); delete the store and rerun the workflow to rebuild it")
        return 1 if problems else 0
    return 0
