"""`partaware inspect`: rows joined with the part index, stats, and clear refusals, on Zarr,
HDF5 and sharded stores."""
import json

import numpy as np
import pandas as pd
import pytest

from partaware.inspect_store import find_index, inspect
from partaware.store import StoreWriter

N = 12
PARTS = ["right eye", "right leg", "left wing", "tail"]


def _index(root):
    df = pd.DataFrame({
        "row": np.arange(N), "image_id": np.arange(N) // 4 + 1,
        "image_path": [f"/data/images/001.Bird/img_{i // 4}.jpg" for i in range(N)],
        "part_id": [11, 12, 9, 14] * 3, "part_name": PARTS * 3, "label": np.arange(N) % 4,
        "x": 50.0, "y": 60.0, "d": 40.0, "x0": np.arange(N) + 40, "y0": 50, "x1": np.arange(N) + 60, "y1": 70,
        "split": "train"})
    path = root / "results/index/demo/all.parquet"
    path.parent.mkdir(parents=True)
    df.to_parquet(path, index=False)
    return df


def _write(path, lo, hi, nan_row=None):
    rng = np.random.default_rng(lo)
    mean = rng.normal(size=(hi - lo, 8))
    if nan_row is not None and lo <= nan_row < hi:
        mean[nan_row - lo, 3] = np.nan
    layout = {"mean": ((8,), "float16", 4), "tokens": ((3, 8), "float16", 1), "row": ((), "int64", 4),
              "label": ((), "int64", 4), "valid": ((), "uint8", 4)}
    w = StoreWriter(path, hi - lo, layout, {"model": "m", "dataset": "demo", "split": "all"}, "h")
    w.write({"mean": mean, "tokens": np.ones((hi - lo, 3, 8)) * 2, "row": np.arange(lo, hi),
             "label": np.arange(lo, hi) % 4, "valid": np.ones(hi - lo)})
    return w.publish()


@pytest.fixture(params=["zarr", "h5", "shards"])
def store(request, tmp_path):
    _index(tmp_path)
    base = tmp_path / "results/features/demo/m"
    if request.param == "shards":
        shards = [_write(base / f"all.shard{k}of2.zarr", lo, hi, nan_row=7)
                  for k, (lo, hi) in enumerate([(0, 6), (6, N)])]
        manifest = base / "all.shards.json"
        manifest.write_text(json.dumps({"shards": [s.name for s in shards]}))
        return manifest
    return _write(base / f"all.{request.param}", 0, N, nan_row=7)


def test_rows_join_the_part_index(store, capsys):
    assert find_index(store).name == "all.parquet"
    assert inspect(store, rows=5) == 0
    out = capsys.readouterr().out
    assert "part index:" in out and "WARNING" not in out
    line = next(x for x in out.splitlines() if x.split()[:1] == ["2"])  # row 2
    assert "left wing" in line and "(42,50,62,70)" in line and "001.Bird/img_0.jpg" in line


def test_stats_counts_nans_and_norms(store, capsys):
    assert inspect(store, show_stats=True) == 0
    out = capsys.readouterr().out
    mean_line = next(x for x in reversed(out.splitlines()) if x.strip().startswith("mean "))
    assert mean_line.split()[-2:] == ["1", "0"]  # one NaN, no Inf
    tokens = next(x for x in reversed(out.splitlines()) if x.strip().startswith("tokens "))
    assert float(tokens.split()[1]) == pytest.approx(2.0)  # every value 2
    assert float(tokens.split()[2]) == pytest.approx(2.0 * np.sqrt(8), rel=1e-3)  # per-token norm


def test_verify_reports_the_nan(store, capsys):
    assert inspect(store, check=True) == 1
    assert "mean: 1 non-finite values" in capsys.readouterr().out


def test_rows_without_index(tmp_path, capsys):
    path = _write(tmp_path / "elsewhere.zarr", 0, 4)
    assert find_index(path) is None
    assert inspect(path, rows=2) == 0
    assert "no part index found" in capsys.readouterr().out


def test_stale_index_is_flagged(tmp_path, capsys):
    _index(tmp_path)
    path = _write(tmp_path / "results/features/demo/m/all.h5", 0, N - 2)
    inspect(path, rows=2)
    assert "WARNING: the index has 12 rows, the store 10" in capsys.readouterr().out


def test_not_a_store_and_incomplete(tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert inspect(other) == 2
    assert "not a feature store" in capsys.readouterr().out
    w = StoreWriter(tmp_path / "half.zarr", 4, {"row": ((), "int64", 4)}, {}, "h")
    w.write({"row": np.arange(2)})
    assert inspect(tmp_path / "half.zarr") == 2
    assert "partial" in capsys.readouterr().out
    assert inspect(tmp_path / "missing.shards.json") == 2
    assert "shard manifest" in capsys.readouterr().out


def test_plain_inspect_describes_a_damaged_store_and_points_to_verify(tmp_path, capsys):
    path = _write(tmp_path / "all.zarr", 0, N)
    (path / "label" / "c" / "1").unlink()  # a lost chunk file
    assert inspect(path) == 0
    out = capsys.readouterr().out
    assert "label" in out and "WARNING: 1 chunk(s) missing in label" in out and "--verify" in out
    assert inspect(path, check=True) == 1
    assert "PROBLEM label: chunk file label/c/1 missing (rows 4-7)" in capsys.readouterr().out
