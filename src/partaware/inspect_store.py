"""`partaware inspect`: what a cached store holds, and a check that it is sound.

`--verify` reads every chunk of every array and reports each problem as one line (missing
chunk, checksum mismatch or undecodable chunk, non-finite values or all-zero feature rows among
valid rows, row counts, labels, row ids), never a traceback; any problem makes it exit 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .store import StoreError, describe_read_error, open_store

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


def _batch_rows(shape: tuple) -> int:
    """Rows per read so one float64 copy of a batch stays near 32 MB (token and map arrays
    hold thousands of values per row)."""
    return max(1, 2**22 // max(1, int(np.prod(shape[1:], dtype=np.int64))))


_MAX_LINES = 10  # per array and kind of problem; the rest is counted on one more line


def _rows(lo: int, hi: int) -> str:
    return f"row {lo}" if hi - lo == 1 else f"rows {lo}-{hi - 1}"


def _first(rows) -> str:
    rows = list(rows)
    return ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")


def _missing(store, name: str) -> list[tuple[int, int, str]]:
    """Missing chunks; only a format-2 store wrote all of them (format 1 skipped all-zero ones)."""
    return store.missing_chunks(name) if store.format >= 2 else []


def _read_chunks(store, name: str, skip: set[int]):
    """(first row, end row, data or None, error or None, chunk) over every chunk of an array whose
    first row is not in `skip`, read in batches of whole chunks; a failing batch is re-read chunk
    by chunk so each bad chunk is named."""
    limit = _batch_rows(store.info(name)["shape"])
    batch = []
    for part, lo, hi, key in store.chunks(name):
        if batch and (lo in skip or batch[-1][0] != part or batch[-1][2] != lo or hi - batch[0][1] > limit):
            yield from _read_batch(store, name, batch)
            batch = []
        if lo not in skip:
            batch.append((part, lo, hi, key))
    yield from _read_batch(store, name, batch)


def _read_batch(store, name, batch):
    if not batch:
        return
    part, off = batch[0][0], int(store.offsets[batch[0][0]])
    backend = store.parts[part]
    try:
        yield batch[0][1], batch[-1][2], backend.read(name, batch[0][1] - off, batch[-1][2] - off), None, None
        return
    except Exception:
        pass
    for _, lo, hi, key in batch:
        try:
            yield lo, hi, backend.read(name, lo - off, hi - off), None, key
        except Exception as err:
            yield lo, hi, None, err, key


def _valid_mask(store) -> np.ndarray:
    """Rows to check; a row whose `valid` chunk is lost or unreadable is checked too."""
    mask = np.ones(store.n_rows, bool)
    if "valid" in store.array_names():
        skip = {lo for lo, _, _ in _missing(store, "valid")}
        for lo, hi, data, _, _ in _read_chunks(store, "valid", skip):
            if data is not None:
                mask[lo:hi] = data.astype(bool)
    return mask


def _capped(lines: list[str], name: str, what: str) -> list[str]:
    if len(lines) <= _MAX_LINES:
        return lines
    return lines[:_MAX_LINES] + [f"{name}: {len(lines) - _MAX_LINES} more {what}"]


def _missing_lines(name: str, missing: list[tuple[int, int, str]]) -> list[str]:
    runs = []  # contiguous missing chunks make one line
    for lo, hi, key in missing:
        if runs and runs[-1][1] == lo:
            runs[-1] = (runs[-1][0], hi, runs[-1][2], key, runs[-1][4] + 1)
        else:
            runs.append((lo, hi, key, key, 1))
    lines = [f"{name}: chunk {a} missing ({_rows(lo, hi)}): a deleted or lost chunk file" if k == 1 else
             f"{name}: {k} chunks missing, {a} to {b} ({_rows(lo, hi)}): deleted or lost chunk files"
             for lo, hi, a, b, k in runs]
    return _capped(lines, name, "runs of missing chunks")


def _check_array(store, name: str, valid: np.ndarray, problems: list[str]) -> np.ndarray | None:
    """Read every chunk of one array, add its problems; return it whole for `label`/`row`."""
    info = store.info(name)
    if info["shape"][0] != store.n_rows:
        problems.append(f"{name}: {info['shape'][0]} rows, the store declares {store.n_rows}")
    missing = _missing(store, name)
    problems += _missing_lines(name, missing)
    floating = info["dtype"].startswith("float")
    keep = np.zeros(store.n_rows, np.int64) if name in ("label", "row") else None
    readable = np.ones(store.n_rows, bool)
    for lo, hi, _ in missing:
        readable[lo:hi] = False
    corrupt, bad_values, bad_rows, zero_rows = [], 0, [], []
    for lo, hi, data, err, key in _read_chunks(store, name, {lo for lo, _, _ in missing}):
        if err is not None:
            readable[lo:hi] = False
            corrupt.append(f"{name}: chunk {key} ({_rows(lo, hi)}): {describe_read_error(err)}")
            continue
        if keep is not None:
            keep[lo:hi] = data
        if floating and len(data):
            x = data.reshape(len(data), -1)
            v = valid[lo:hi]
            finite = np.isfinite(x)
            bad_values += int((~finite[v]).sum())
            bad_rows += (np.flatnonzero(v & ~finite.all(axis=1)) + lo).tolist()
            zero_rows += (np.flatnonzero(v & (x == 0).all(axis=1)) + lo).tolist()
    problems += _capped(corrupt, name, "damaged chunks")
    if bad_values:
        problems.append(f"{name}: {bad_values} non-finite values in {len(bad_rows)} valid row(s) "
                        f"(first: {_first(bad_rows)})")
    if zero_rows:
        problems.append(f"{name}: {len(zero_rows)} valid row(s) entirely zero (first: {_first(zero_rows)}): "
                        "features are never exactly zero; a lost chunk or a bug")
    return None if keep is None else keep[readable]


def verify(store) -> list[str]:
    """Every problem found, one line each; nothing means the store is sound."""
    problems = []
    if store.format < 2:
        problems.append(f"store format {store.format}: written without chunk checksums by an older "
                        "partaware, so lost chunks read as zeros and cannot be found; delete it and "
                        "rerun the workflow to rebuild it")
    valid = _valid_mask(store)
    kept = {name: _check_array(store, name, valid, problems) for name in store.array_names()}
    labels = kept.get("label")
    if labels is not None and labels.min(initial=0) < 0:
        problems.append(f"label: negative values ({labels.min()})")
    rows = kept.get("row")
    if rows is not None and len(np.unique(rows)) != len(rows):
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
