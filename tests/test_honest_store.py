"""Skipped rows cost no chunk: a float array's chunks whose rows are all skipped are left
unwritten (listed in `elided_chunks`), read as NaN, and never taken for lost ones; `inspect`
reports the bytes the file system really holds."""
from __future__ import annotations

import numpy as np
import pytest

from partaware.inspect_store import describe, disk_usage, inspect
from partaware.store import StoreWriter, open_store
from partaware.store.errors import DamagedStoreError

N = 12
LAYOUT = {"tokens": ((4, 3), "float16", 1), "label": ((), "int64", 4), "valid": ((), "uint8", 4)}


def _valid():
    valid = np.ones(N, np.uint8)
    valid[[2, 3, 4, 5, 9]] = 0  # skipped images' rows
    return valid


def _write(path, batches=(N,)):
    valid = _valid()
    tokens = np.arange(N * 12, dtype=np.float16).reshape(N, 4, 3)
    w = StoreWriter(path, N, LAYOUT, {"model": "m", "dataset": "d", "split": "all"}, "h")
    lo = 0
    for size in batches:
        w.write({"tokens": tokens[lo:lo + size], "label": np.arange(lo, lo + size), "valid": valid[lo:lo + size]})
        lo += size
    return w.publish(), tokens, valid


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
@pytest.mark.parametrize("batches", [(N,), (5, 7), (3, 3, 3, 3)])
def test_skipped_rows_write_no_chunk_and_read_as_nan(tmp_path, fmt, batches):
    path, tokens, valid = _write(tmp_path / f"all.{fmt}", batches)
    with open_store(path) as store:  # not refused as damaged
        assert sorted(store.attrs["elided_chunks"]["tokens"]) == [2, 3, 4, 5, 9]
        got = store.read("tokens")
        assert np.array_equal(got[valid == 1], tokens[valid == 1])
        assert np.isnan(got[valid == 0]).all()
        assert np.array_equal(store.read("label"), np.arange(N))  # per-row ids stay written
        assert store.read_checked("tokens").shape == (N, 4, 3)
        assert store.missing_chunks("tokens") == []
    if fmt == "zarr":
        assert len(list((path / "tokens").rglob("c/*"))) == N - 5
    assert inspect(path, check=True) == 0


def test_a_lost_chunk_of_valid_rows_is_still_damage(tmp_path):
    path, _, _ = _write(tmp_path / "all.zarr")
    (path / "tokens" / "c" / "0" / "0" / "0").unlink()
    with pytest.raises(DamagedStoreError, match="1 chunk"):
        open_store(path)


def test_inspect_reports_the_bytes_on_disk(tmp_path):
    path, _, _ = _write(tmp_path / "all.zarr")
    used, files = disk_usage([path])
    assert files == sum(1 for p in path.rglob("*") if p.is_file())
    assert used >= sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    with open_store(path) as store:
        text = describe(store)
    assert f"in {files} file(s)" in text
