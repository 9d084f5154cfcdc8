"""Per-sample shuffled batches of a feature store: fresh order each epoch, repeatable per seed,
the same from memory and from disk, stored order for testing, and the attentive probe's wiring."""
import threading

import numpy as np
import pytest
import torch

from partaware.store import StoreWriter, open_store
from partaware.store.errors import StoreError
from partaware.store_batches import StoreBatches, batch_bounds, epoch_permutation
from partaware.tasks.attentive import attentive_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

INVALID = {3, 17, 18, 40}


def write_store(path, n, invalid=INVALID, t=3, d=4, classes=5):
    """Rows sorted by class (as CUB stores are by species); each token holds its row number."""
    layout = {"tokens": ((t, d), "float16", 1), "label": ((), "int64", 16), "valid": ((), "uint8", 16)}
    writer = StoreWriter(path, n, layout, {}, "h")
    rows = np.arange(n)
    writer.write({"tokens": np.broadcast_to(rows[:, None, None], (n, t, d)),
                  "label": rows * classes // n, "valid": [r not in invalid for r in rows]})
    writer.publish()
    return open_store(path)


@pytest.fixture(params=["zarr", "h5"])
def store(request, tmp_path):
    with write_store(tmp_path / f"train.{request.param}", 50) as s:
        yield s


def served(batches):
    """One epoch as lists of row numbers (read back from the tokens), checking the labels."""
    out = []
    for x, y in batches():
        rows = x[:, 0, 0].long()
        assert torch.equal(y, rows * 5 // 50)
        assert torch.equal(x, rows[:, None, None].to(x.dtype).expand_as(x))
        out.append(rows.tolist())
    return out


def test_batch_bounds():
    assert batch_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert batch_bounds(9, 4) == [(0, 4), (4, 9)]  # a last batch of one joins the previous one
    assert batch_bounds(1, 4) == [(0, 1)] and batch_bounds(0, 4) == []
    with pytest.raises(ValueError, match="batch size"):
        batch_bounds(5, 0)


def test_per_sample_shuffle_changes_each_epoch_and_repeats_per_seed(store):
    sb = StoreBatches(store, "tokens", 8)
    assert sb.in_memory and len(sb) == 46
    run = sb.epochs(seed=7)
    e0, e1 = served(run), served(run)
    valid = sorted(set(range(50)) - INVALID)
    for epoch in (e0, e1):
        assert sorted(sum(epoch, [])) == valid  # every valid row once, no invalid row
        assert [len(b) for b in epoch] == [8] * 5 + [6]
    assert [set(b) for b in e0] != [set(b) for b in e1]  # new batch composition
    assert any(max(b) - min(b) >= len(b) + 2 for b in e0)  # samples, not stored blocks
    rerun = sb.epochs(seed=7)
    assert served(rerun) == e0 and served(rerun) == e1
    assert served(StoreBatches(store, "tokens", 8).epochs(seed=8)) != e0
    assert sum(served(sb.epochs(seed=7)), []) == [valid[i] for i in epoch_permutation(46, 7, 0)]


def test_streamed_batches_equal_in_memory_batches(store):
    memory = StoreBatches(store, "tokens", 8, memory_mb=1)
    streamed = StoreBatches(store, "tokens", 8, memory_mb=1e-6, workers=3)
    assert memory.in_memory and not streamed.in_memory and streamed.cache is None
    for seed in (0, 5):
        a, b = memory.epochs(seed), streamed.epochs(seed)
        for _ in range(2):
            assert served(a) == served(b)
    single = StoreBatches(store, "tokens", 8, memory_mb=0, workers=1).epochs(5, prefetch=False)
    assert served(single) == served(memory.epochs(5))


def test_stored_order_without_a_seed(store):
    valid = sorted(set(range(50)) - INVALID)
    for memory_mb in (64, 0):
        run = StoreBatches(store, "tokens", 20, memory_mb=memory_mb).epochs(None)
        assert served(run) == [valid[:20], valid[20:40], valid[40:]] == served(run)


@pytest.mark.parametrize("fmt", ["zarr", "h5"])
def test_last_test_sample_joins_the_batch_before_it(tmp_path, fmt):
    with write_store(tmp_path / f"test.{fmt}", 257, invalid=set()) as s:
        for memory_mb in (64, 0):
            (x, y), = list(StoreBatches(s, "tokens", 256, memory_mb=memory_mb).epochs(None)())
            assert len(y) == 257 and x[:, 0, 0].tolist() == list(range(257))


def test_stopping_early_ends_the_prefetch_thread_and_errors_reach_the_caller(store):
    run = StoreBatches(store, "tokens", 4, memory_mb=0).epochs(1)
    broken = StoreBatches(store, "tokens", 4, memory_mb=0)
    before = threading.active_count()
    for _ in run():
        break
    assert threading.active_count() == before
    assert len(served(run)) == 12  # the next epoch still runs in full

    broken.name = "missing"
    with pytest.raises(Exception, match="missing"):
        list(broken.epochs(1)())
    assert threading.active_count() == before


def test_unknown_array_and_negative_seed_are_refused(store):
    with pytest.raises(StoreError, match="no array 'layers/4'"):
        StoreBatches(store, "layers/4", 8)
    with pytest.raises(ValueError, match="seed -1"):
        list(StoreBatches(store, "tokens", 8).epochs(-1)())


def test_attentive_rows_state_bn_grouping(tmp_path, monkeypatch):
    import partaware.evals.attentive as attentive

    seen, real = {}, attentive.train_attentive

    def spy(train_batches, test_batches, *args, **kwargs):
        seen["train"] = [len(y) for _, y in train_batches()]
        seen["test"] = sum((y.tolist() for _, y in test_batches()), [])
        seen["bn_group"] = kwargs["bn_group"]
        return real(train_batches, test_batches, *args, **kwargs)

    monkeypatch.setattr(attentive, "train_attentive", spy)
    cfg = {"device": "cpu", "datasets": {"toy": {}},
           "attentive": {"epochs": 1, "batch_size": 16, "lr": None, "momentum": 0.9, "weight_decay": 0.0,
                         "seeds": [0], "memory_mb": 0, "bn_group": 128}}
    ctx = {"dataset": "toy", "model": "m", "group": "g", "weights": "random"}
    with write_store(tmp_path / "train.zarr", 50, d=24) as train, \
            write_store(tmp_path / "test.h5", 21, invalid={2}, d=24) as test:
        rows = attentive_rows(cfg, ctx, train, test)
        assert seen["bn_group"] == 128
        cfg["attentive"]["bn_group"] = None
        whole = attentive_rows(cfg, ctx, train, test)
    assert seen["train"] == [16, 16, 14] and seen["bn_group"] is None
    assert seen["test"] == [r * 5 // 21 for r in range(21) if r != 2]  # stored order
    assert [(r["protocol"], r["notes"]) for r in rows] == [("paper", "best test epoch; BN over groups of 128"),
                                                           ("variant", "last epoch; BN over groups of 128")]
    assert whole[0]["notes"] == "best test epoch; BN over the whole batch"
    assert rows[0]["n"] == 20 and rows[0]["skipped"] == 5
