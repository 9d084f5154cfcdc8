"""The feature store: both backends, publish-by-rename, refusal of incomplete/stale stores, resume."""
import json

import numpy as np
import pytest

from partaware.store import (IncompleteStoreError, StaleStoreError, StoreError, StoreWriter,
                             open_store)

LAYOUT = {"cls": ((8,), "float16", 4), "tokens": ((3, 8), "float16", 1), "label": ((), "int64", 4),
          "layers/4": ((8, 2, 2), "float16", 1)}


def _batch(lo, hi, seed=0):
    rng = np.random.default_rng(seed + lo)
    n = hi - lo
    return {"cls": rng.normal(size=(n, 8)), "tokens": rng.normal(size=(n, 3, 8)),
            "label": np.arange(lo, hi) % 3, "layers/4": rng.normal(size=(n, 8, 2, 2))}


@pytest.fixture(params=["zarr", "h5"])
def path(request, tmp_path):
    return tmp_path / f"store.{request.param}"


def test_round_trip_and_attributes(path):
    writer = StoreWriter(path, 10, LAYOUT, {"model": "m", "transform": "resize 224"}, "hash1")
    for lo in range(0, 10, 4):
        writer.write(_batch(lo, min(lo + 4, 10)))
    assert not path.exists(), "nothing is visible before publish"
    writer.publish({"extra": 1})
    store = open_store(path, expect_hash="hash1")
    assert store.n_rows == 10
    assert store.attrs["model"] == "m" and store.attrs["complete"] is True and store.attrs["extra"] == 1
    assert sorted(store.array_names()) == sorted(LAYOUT)
    expected = np.concatenate([_batch(0, 4)["cls"], _batch(4, 8)["cls"], _batch(8, 10)["cls"]])
    np.testing.assert_allclose(store.read("cls"), expected.astype(np.float16))
    assert store.read("cls").dtype == np.float16
    assert store.read("layers/4", 2, 5).shape == (3, 8, 2, 2)
    assert store.info("cls")["chunks"] == (4, 8)
    assert store.info("tokens")["chunks"] == (1, 3, 8)
    batches = list(store.iter_batches(["label"], 3))
    assert [len(b["label"]) for b in batches] == [3, 3, 3, 1]


def test_incomplete_store_is_refused(path):
    writer = StoreWriter(path, 10, LAYOUT, {}, "h")
    writer.write(_batch(0, 4))
    with pytest.raises(IncompleteStoreError, match="partial"):
        open_store(path)
    with pytest.raises(StoreError, match="only 4 of 10 rows"):
        writer.publish()


def test_store_without_complete_flag_is_refused(path):
    writer = StoreWriter(path, 4, LAYOUT, {}, "h")
    writer.write(_batch(0, 4))
    writer.backend.close()
    writer.partial.rename(path)  # as if someone renamed a half-written store by hand
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(path)


def test_stale_hash_is_refused_naming_both(path):
    writer = StoreWriter(path, 4, LAYOUT, {}, "old")
    writer.write(_batch(0, 4))
    writer.publish()
    with pytest.raises(StaleStoreError, match="old.*new"):
        open_store(path, expect_hash="new")


def test_resume_continues_after_last_flushed_chunk(path):
    writer = StoreWriter(path, 10, LAYOUT, {}, "h")
    writer.write(_batch(0, 4))
    writer.write(_batch(4, 8))
    del writer  # a killed job: no publish
    again = StoreWriter(path, 10, LAYOUT, {}, "h")
    assert again.rows_done == 8
    again.write(_batch(8, 10))
    again.publish()
    full = np.concatenate([_batch(0, 4)["cls"], _batch(4, 8)["cls"], _batch(8, 10)["cls"]])
    np.testing.assert_allclose(open_store(path).read("cls"), full.astype(np.float16))


def test_resume_with_other_config_starts_over(path):
    writer = StoreWriter(path, 10, LAYOUT, {}, "h")
    writer.write(_batch(0, 4))
    assert StoreWriter(path, 10, LAYOUT, {}, "other").rows_done == 0


def test_republish_replaces_old_store(path):
    for seed in (0, 1):
        w = StoreWriter(path, 4, LAYOUT, {"seed": seed}, f"h{seed}")
        w.write(_batch(0, 4, seed))
        w.publish()
    assert open_store(path).attrs["seed"] == 1


def test_shard_manifest_reads_as_one_store(tmp_path):
    paths = []
    for k, (lo, hi) in enumerate([(0, 6), (6, 10)]):
        p = tmp_path / f"s.shard{k}of2.zarr"
        w = StoreWriter(p, hi - lo, LAYOUT, {}, "h")
        w.write(_batch(lo, hi))
        w.publish()
        paths.append(p.name)
    manifest = tmp_path / "s.shards.json"
    manifest.write_text(json.dumps({"shards": paths}))
    store = open_store(manifest)
    assert store.n_rows == 10
    np.testing.assert_array_equal(store.read("label", 4, 8), np.arange(4, 8) % 3)
    assert store.info("cls")["shape"] == (10, 8)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a feature store"):
        open_store(tmp_path / "x.txt")
    with pytest.raises(IncompleteStoreError, match="no published store"):
        open_store(tmp_path / "missing.zarr")
