"""`partaware inspect --verify`: read every array of a store chunk by chunk and list what is wrong
(missing chunks, non-finite values in valid rows, rows and labels that do not add up), each
problem one line, capped per array so a damaged store prints a readable report.
"""
from __future__ import annotations

import numpy as np

from .store import describe_read_error

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


