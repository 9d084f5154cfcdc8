"""Task `correspondence` (tasks/correspondence.py): rows with intervals over pairs, per-part
rows, block features and skipped images, from a dense-map store and a pair table."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from partaware import tasks
from partaware.config import ConfigError
from partaware.data.pairs import write_pairs
from test_evals_correspondence import PATCH, SIZE, dense_map, pair_table

STATS = {"bootstrap": 200, "level": 0.95, "seed": 0}


class Store:
    """The FeatureStore API the task reads (attrs, array_names, read, read_checked, paths)."""

    def __init__(self, arrays, attrs):
        self.arrays, self.attrs, self.paths = arrays, attrs, [Path("mem.zarr")]

    def array_names(self):
        return list(self.arrays)

    def read(self, name, start=0, stop=None):
        return self.arrays[name][start:stop]

    def read_checked(self, name, start=0, stop=None, valid=None):
        return self.read(name, start, stop)


def cfg(**cc):
    task = tasks.get("correspondence")
    defaults = {k: v["default"] for k, v in task.schema["properties"].items()}
    return {"correspondence": {**defaults, **cc}, "stats": STATS}


@pytest.fixture
def setup(tmp_path):
    """Three images: b is a shifted copy of a; c is broken (skipped at extraction)."""
    wh = (300, 200)
    shift = np.array([25.0, 10.0])
    maps = {"a": dense_map(wh, lambda p: p), "b": dense_map(wh, lambda q: q - shift), "c": dense_map(wh, lambda p: p)}
    pts = np.array([[60.0, 50.0], [200.0, 150.0], [120.0, 90.0]])
    names = ["left eye", "right eye", "beak"]
    mirror = {"left eye": "right eye", "right eye": "left eye"}
    pairs = pd.concat([pair_table("a", "b", names, pts, pts + shift, 250.0, mirror=mirror, pair=0),
                       pair_table("b", "a", names, pts + shift, pts, 250.0, mirror=mirror, pair=1),
                       pair_table("a", "c", names, pts, pts, 250.0, pair=2)])
    write_pairs(pairs, tmp_path / "index" / "cub" / "pairs.parquet")
    keys = ["a", "b", "c"]
    arrays = {"dense_final": np.stack([maps[k] for k in keys]).astype(np.float16),
              "dense/2": np.stack([maps[k] for k in keys]).astype(np.float16),
              "size": np.array([wh] * 3, np.int64), "valid": np.array([1, 1, 0], np.uint8)}
    store = Store(arrays, {"image_keys": keys, "patch_size": PATCH, "input_size": SIZE})
    ctx = {"dataset": "cub", "model": "m", "group": "g", "weights": "random", "index_dir": tmp_path / "index" / "cub"}
    return store, ctx


def test_rows_with_intervals_per_part_and_blocks(setup):
    store, ctx = setup
    rows, per_part = tasks.get("correspondence").rows(cfg(blocks=[2]), ctx, [store])
    by = {(r["feature"], r["metric"]): r for r in rows}
    assert set(by) == {(f, m) for f in ("dense final", "block 2 dense")
                       for m in ("PCK@0.05", "PCK@0.1", "PCK@0.15", "left_right_confusion")}
    r = by[("dense final", "PCK@0.1")]
    assert r["task"] == "correspondence" and r["value"] == 100.0 and r["n"] == 6 and r["skipped"] == 1
    assert r["ci_low"] == 100.0 and r["ci_high"] == 100.0 and r["_sums"].ids.tolist() == [0, 1]
    assert by[("dense final", "left_right_confusion")]["value"] == 0.0
    assert by[("dense final", "left_right_confusion")]["n"] == 4
    parts = {(p["feature"], p["part"]) for p in per_part}
    assert ("dense final", "beak") in parts and ("block 2 dense", "left eye") in parts


def test_store_without_a_requested_block_is_refused(setup):
    store, ctx = setup
    del store.arrays["dense/2"]
    with pytest.raises(KeyError, match="no array 'dense/2'"):
        tasks.get("correspondence").rows(cfg(blocks=[2]), ctx, [store])


def test_registry_splits_and_checks():
    task = tasks.get("correspondence")
    assert "correspondence" in tasks.names()
    c = cfg(size=448)
    assert task.splits("cub", {"tasks": ["correspondence"]}, c) == ["test_dense448"]
    assert task.splits("segfolder", {"tasks": ["correspondence"]}, c) == []
    with pytest.raises(ConfigError, match="correspondence.alphas"):
        task.check("datasets.cub", {"kind": "cub", "tasks": []}, cfg(alphas=[0.1, 0.1]))
    with pytest.raises(ConfigError, match="datasets.ade.tasks"):
        task.check("datasets.ade", {"kind": "segfolder", "tasks": ["correspondence"]}, cfg())
    with pytest.raises(ConfigError, match="task 'nope' is unknown"):
        tasks.get("nope")
