"""Stores that prove their integrity, on Zarr and HDF5: a lost chunk, a truncated or flipped byte,
NaN and all-zero rows are each a clear one-line error (never a plausible number); one writer
per store (a second one is refused naming the owner, a dead owner's lock is taken over)."""
import errno
import json
import os
import socket
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pandas as pd
import pytest

from partaware.inspect_store import inspect
from partaware.store import (DamagedStoreError, NonFiniteError, StoreError, StoreLockedError,
                             StoreWriter, open_store)
from partaware.store import lock as store_lock

N = 12
LAYOUT = {"mean": ((8,), "float16", 4), "tokens": ((2, 4), "float16", 1), "row": ((), "int64", 4),
          "label": ((), "int64", 4), "valid": ((), "uint8", 4)}


def _arrays(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return {"mean": rng.normal(size=(n, 8)) + 3, "tokens": rng.normal(size=(n, 2, 4)) + 3,
            "row": np.arange(n), "label": np.arange(n) % 4, "valid": np.ones(n)}


def _write(path, arrays=None):
    w = StoreWriter(path, N, LAYOUT, {"model": "m", "dataset": "demo", "split": "all"}, "h")
    w.write(arrays or _arrays())
    return w.publish()


@pytest.fixture(params=["zarr", "h5"])
def store(request, tmp_path):
    return _write(tmp_path / "results/features/demo/m" / f"all.{request.param}")


# ------------------------------------------------------------------------- corrupting a chunk
def _h5_chunk(path, name, k):
    with h5py.File(path, "r") as f:
        ds = f[name]
        return ds.id.get_chunk_info_by_coord((k * ds.chunks[0],) + (0,) * (ds.ndim - 1))


def _zarr_chunk(path, name, k):
    first = path / name / "c" / str(k)  # c/k for rows, c/k/0/0 for rows of vectors
    return first if first.is_file() else next(p for p in first.rglob("*") if p.is_file())


def lose_chunk(path, name, k):
    """Delete chunk k's file (Zarr); rebuild the HDF5 file without that chunk (same filters)."""
    if path.suffix == ".zarr":
        _zarr_chunk(path, name, k).unlink()
        return
    tmp = path.with_name("rebuilt.h5")
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        dst.attrs.update(dict(src.attrs))

        def copy(key, obj):
            if isinstance(obj, h5py.Dataset):
                new = dst.create_dataset(key, shape=obj.shape, dtype=obj.dtype, chunks=obj.chunks,
                                         compression=obj.compression, fletcher32=obj.fletcher32,
                                         fillvalue=obj.fillvalue)
                for i in range(obj.id.get_num_chunks()):
                    offset = obj.id.get_chunk_info(i).chunk_offset
                    if key != name or offset[0] != k * obj.chunks[0]:
                        mask, data = obj.id.read_direct_chunk(offset)
                        new.id.write_direct_chunk(offset, data, mask)
        src.visititems(copy)
    os.replace(tmp, path)


def flip_byte(path, name, k):
    if path.suffix == ".zarr":
        target, at = _zarr_chunk(path, name, k), None
    else:
        info = _h5_chunk(path, name, k)
        target, at = path, info.byte_offset + info.size // 2
    data = bytearray(target.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at] ^= 0x40
    target.write_bytes(bytes(data))


def verify(path, capsys):
    code = inspect(path, check=True)
    out = capsys.readouterr().out
    assert "Traceback" not in out
    problems = [line.strip()[len("PROBLEM "):] for line in out.splitlines() if line.strip().startswith("PROBLEM")]
    return code, problems, out


# ------------------------------------------------------------------------- sound stores
def test_a_sound_store_verifies_ok(store, capsys):
    code, problems, out = verify(store, capsys)
    assert (code, problems) == (0, []) and "verify: OK" in out
    assert "store_format: 2" in out


def test_all_zero_int_chunks_are_written_even_across_a_resume(tmp_path, capsys):
    """Zarr leaves chunks equal to the fill value unwritten by default: labels of 0 would look lost."""
    path = tmp_path / "s.zarr"
    arrays = _arrays()
    arrays["label"][:8] = 0
    w = StoreWriter(path, N, LAYOUT, {}, "h")
    w.write({k: v[:4] for k, v in arrays.items()})
    w.close()  # a stopped job
    w = StoreWriter(path, N, LAYOUT, {}, "h")
    assert w.rows_done == 4
    w.write({k: v[4:] for k, v in arrays.items()})
    w.publish()
    assert verify(path, capsys)[:2] == (0, [])
    np.testing.assert_array_equal(open_store(path).read("label"), arrays["label"])


# ------------------------------------------------------------------------- missing chunk
def test_a_lost_float_chunk_reads_nan_and_is_refused(store, capsys):
    lose_chunk(store, "mean", 1)
    with pytest.raises(DamagedStoreError, match=r"1 chunk\(s\) missing.*mean rows 4-7.*not stale.*--verify"):
        open_store(store)
    with open_store(store, check_chunks=False) as s:
        assert np.isnan(s.read("mean", 4, 8)).all(), "a lost chunk must not read as plausible zeros"
        with pytest.raises(NonFiniteError) as err:
            s.read_checked("mean")
    message = str(err.value)
    assert str(store) in message and "'mean'" in message and "first: 4, 5, 6, 7" in message
    assert "delete the store and rerun" in message and "\n" not in message
    code, problems, _ = verify(store, capsys)
    assert code == 1 and len(problems) == 1, problems  # the NaN rows of a lost chunk count once
    assert problems[0].startswith("mean: chunk ") and "missing (rows 4-7)" in problems[0]


def test_a_lost_label_chunk_is_damage_not_staleness(store, tmp_path, capsys):
    index = pd.DataFrame({"row": np.arange(N), "image_path": [f"/d/{i}.jpg" for i in range(N)],
                          "part_name": "p", "label": np.arange(N) % 4, "x0": 1, "y0": 2, "x1": 3, "y1": 4})
    (tmp_path / "results/index/demo").mkdir(parents=True)
    index.to_parquet(tmp_path / "results/index/demo/all.parquet")
    lose_chunk(store, "label", 1)
    with pytest.raises(DamagedStoreError, match="label rows 4-7"):
        open_store(store)
    assert inspect(store, rows=N) == 0
    out = capsys.readouterr().out
    assert "damaged, not stale" in out and "label rows 4-7" in out and "is stale" not in out
    code, problems, _ = verify(store, capsys)
    assert code == 1 and len(problems) == 1 and problems[0].startswith("label: chunk ")


def test_many_lost_chunks_make_one_line_per_run(tmp_path, capsys):
    path = _write(tmp_path / "s.zarr")
    for k in (2, 3, 4, 7):
        lose_chunk(path, "tokens", k)
    code, problems, _ = verify(path, capsys)
    assert code == 1 and len(problems) == 2, problems
    assert "3 chunks missing" in problems[0] and "(rows 2-4)" in problems[0]
    assert "(row 7)" in problems[1]


# ------------------------------------------------------------------------- truncated / flipped
def test_a_flipped_byte_is_a_checksum_error(store, capsys):
    flip_byte(store, "mean", 1)
    with open_store(store) as s:  # every chunk is there; reading the bad one fails, naming it
        np.testing.assert_array_equal(s.read("mean", 0, 4), _arrays()["mean"][:4].astype(np.float16))
        with pytest.raises(DamagedStoreError) as err:
            s.read("mean")
    message = str(err.value)
    assert str(store) in message and "'mean' rows 0-11" in message and "checksum" in message
    assert "--verify" in message and "\n" not in message
    code, problems, _ = verify(store, capsys)
    assert code == 1 and len(problems) == 1, problems
    assert problems[0].startswith("mean: chunk ") and "(rows 4-7)" in problems[0] and "checksum" in problems[0]


def test_a_flipped_label_byte_is_caught_too(store, capsys):
    flip_byte(store, "label", 2)
    code, problems, _ = verify(store, capsys)
    assert code == 1 and len(problems) == 1 and problems[0].startswith("label: chunk ")
    assert "(rows 8-11)" in problems[0]


def test_a_truncated_zarr_chunk_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "s.zarr")
    chunk = _zarr_chunk(path, "tokens", 5)
    chunk.write_bytes(chunk.read_bytes()[:7])
    code, problems, _ = verify(path, capsys)
    assert code == 1 and len(problems) == 1, problems
    assert problems[0].startswith("tokens: chunk ") and "(row 5)" in problems[0] and "cut short" in problems[0]


def test_a_truncated_hdf5_file_is_one_line(tmp_path, capsys):
    path = _write(tmp_path / "s.h5")
    info = _h5_chunk(path, "tokens", N - 1)
    with open(path, "r+b") as f:  # a copy cut off inside a chunk
        f.truncate(info.byte_offset + info.size // 2)
    assert inspect(path, check=True) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and str(path) in out and "truncated" in out and "delete it" in out
    with pytest.raises(StoreError, match="truncated"):
        open_store(path)


# ------------------------------------------------------------------------- NaN / zero rows
def test_nan_and_zero_rows_count_only_when_valid(tmp_path, capsys):
    for suffix in (".zarr", ".h5"):
        arrays = _arrays()
        arrays["mean"][5, 2] = np.nan
        arrays["mean"][6] = 0
        arrays["tokens"][9, 1, 3] = np.inf
        arrays["mean"][10] = np.nan  # rows 10 and 11 are skipped images: not scored, not checked
        arrays["tokens"][11] = 0
        arrays["valid"][10:] = 0
        path = _write(tmp_path / f"s{suffix}", arrays)
        code, problems, _ = verify(path, capsys)
        assert code == 1 and sorted(problems) == sorted([
            "mean: 1 non-finite values in 1 valid row(s) (first: 5)",
            "mean: 1 valid row(s) entirely zero (first: 6): features are never exactly zero; a lost chunk or a bug",
            "tokens: 1 non-finite values in 1 valid row(s) (first: 9)"]), problems
        with open_store(path) as s:
            with pytest.raises(NonFiniteError, match=r"'mean' holds NaN or Inf in 1 valid row\(s\) \(first: 5\)"):
                s.read_checked("mean")
            s.read_checked("mean", 6, 12)  # rows 6-11: the NaN of row 10 is in an invalid row
            with pytest.raises(NonFiniteError, match=r"first: 9\)"):
                s.read_checked("tokens", 8, 10, valid=np.array([True, True]))
            s.read_checked("tokens", 8, 10, valid=np.array([True, False]))
            assert s.read_checked("label").dtype == np.int64


def test_shards_name_the_damaged_shard_and_global_rows(tmp_path, capsys):
    shards = []
    for k in range(2):
        p = tmp_path / f"all.shard{k}of2.zarr"
        arrays = _arrays(seed=k)
        arrays["row"] += k * N
        shards.append(_write(p, arrays).name)
    manifest = tmp_path / "all.shards.json"
    manifest.write_text(json.dumps({"shards": shards}))
    lose_chunk(tmp_path / shards[1], "mean", 0)
    with pytest.raises(DamagedStoreError, match=rf"{shards[1]}.*mean rows 12-15"):
        open_store(manifest)
    with open_store(manifest, check_chunks=False) as s, pytest.raises(NonFiniteError, match=shards[1]):
        s.read_checked("mean")
    code, problems, _ = verify(manifest, capsys)
    assert code == 1 and problems == [
        f"mean: chunk file mean/c/0/0 of {shards[1]} missing (rows 12-15): a deleted or lost chunk file"]


def test_an_older_store_cannot_pass_verify(tmp_path, capsys):
    import zarr

    path = _write(tmp_path / "old.zarr")
    del zarr.open_group(str(path), mode="a").attrs["store_format"]  # as written before checksums
    assert open_store(path).format == 1
    code, problems, _ = verify(path, capsys)
    assert code == 1 and problems[0].startswith("store format 1: written without chunk checksums")


# ------------------------------------------------------------------------- snakemake's stamp
def test_snakemake_timestamp_in_a_store_is_not_warned_about(tmp_path, capsys):
    import zarr

    path = _write(tmp_path / "all.zarr")
    (path / ".snakemake_timestamp").touch()
    with warnings.catch_warnings(record=True) as raw:
        warnings.simplefilter("always")
        sorted(zarr.open_group(str(path), mode="r").array_keys())
    assert any(".snakemake_timestamp" in str(w.message) for w in raw), "zarr no longer warns: drop the filter"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with open_store(path) as s:
            assert "mean" in s.array_names()
        assert inspect(path, check=True) == 0
    assert not [w for w in seen if "snakemake_timestamp" in str(w.message)]
    capsys.readouterr()


# ------------------------------------------------------------------------- one writer per store
@pytest.fixture(autouse=True)
def short_lock_wait(monkeypatch):
    """A live owner is waited for `LOCK_WAIT_S` before the refusal; keep the tests quick."""
    monkeypatch.setattr("partaware.store.writer.LOCK_WAIT_S", 0.2)


def test_a_writer_waits_for_an_owner_that_finishes(tmp_path, monkeypatch):
    """A rerun started while the orphan of a killed Snakemake is still exiting takes the lock
    once it is free, instead of failing."""
    monkeypatch.setattr("partaware.store.writer.LOCK_WAIT_S", 30)
    path = tmp_path / "all.zarr"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    holder.stdin.close()  # the owner exits now, while the second writer waits
    writer = StoreWriter(path, 8, SMALL, {}, "h")
    assert writer.rows_done == 4  # it resumes the owner's partial store
    writer.close()
    holder.wait()


HOLDER = """
import sys
import numpy as np
from partaware.store import StoreWriter
w = StoreWriter(sys.argv[1], 8, {"x": ((2,), "float16", 4)}, {}, "h")
w.write({"x": np.ones((4, 2))})
print("holding", flush=True)
sys.stdin.read()  # keep the lock until the test lets go
"""
SMALL = {"x": ((2,), "float16", 4)}


def _progress(path):
    return json.loads(path.with_name(path.name + ".progress.json").read_text())["rows_done"]


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path, suffix, caplog):
    path = tmp_path / f"all{suffix}"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        with pytest.raises(StoreLockedError) as err:
            StoreWriter(path, 8, SMALL, {}, "h")
        message = str(err.value)
        assert "\n" not in message and f"pid {holder.pid} on host {socket.gethostname()}" in message
        assert f"kill {holder.pid}" in message and str(path) in message and "rerun" in message
        assert _progress(path) == 4, "the refused writer must leave the owner's partial store alone"
    finally:
        holder.kill()  # an orphan that dies without cleaning up
        holder.wait()
    assert path.with_name(path.name + ".lock").exists()
    with caplog.at_level("WARNING", logger="partaware.store.lock"):
        writer = StoreWriter(path, 8, SMALL, {}, "h")
    assert f"left by pid {holder.pid}" in caplog.text and "taking over" in caplog.text
    assert writer.rows_done == 4  # and the dead writer's finished chunk is resumed
    writer.write({"x": np.full((4, 2), 2.0)})
    writer.publish()
    assert not path.with_name(path.name + ".lock").exists(), "publish releases the lock"
    assert open_store(path).read("x")[:, 0].tolist() == [1] * 4 + [2] * 4


def test_a_failed_write_releases_the_lock_and_keeps_the_partial(tmp_path):
    path = tmp_path / "all.zarr"
    lock = path.with_name(path.name + ".lock")
    with pytest.raises(RuntimeError):
        with StoreWriter(path, 8, SMALL, {}, "h") as w:
            w.write({"x": np.ones((4, 2))})
            assert json.loads(lock.read_text())["pid"] == os.getpid()
            raise RuntimeError("the encoder failed")
    assert not lock.exists() and not store_lock.StoreLock._held
    assert subprocess.run([sys.executable, "-c", HOLDER.replace("sys.stdin.read()", ""), str(path)],
                          capture_output=True, text=True).returncode == 0, "another process can write it now"
    with pytest.raises(StoreError, match="closed, or replaced"):
        w.write({"x": np.ones((4, 2))})


def test_a_newer_writer_in_the_same_process_replaces_an_abandoned_one(tmp_path):
    path = tmp_path / "all.h5"
    first = StoreWriter(path, 8, SMALL, {}, "h")
    first.write({"x": np.ones((4, 2))})  # a call that crashed, its writer still referenced
    second = StoreWriter(path, 8, SMALL, {}, "h")
    assert second.rows_done == 4
    with pytest.raises(StoreError, match="replaced by a newer writer"):
        first.write({"x": np.ones((4, 2))})
    del first  # its finalizer must not free the lock the second writer holds
    assert json.loads(path.with_name(path.name + ".lock").read_text())["pid"] == os.getpid()
    second.write({"x": np.ones((4, 2))})
    second.publish()


def test_without_flock_a_dead_owner_is_taken_over_and_a_live_one_refused(tmp_path, monkeypatch, caplog):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(store_lock.fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    cases = {"dead": {"host": host, "pid": dead.pid}, "live": {"host": host, "pid": os.getppid()},
             "elsewhere": {"host": "node-7", "pid": 4242}}
    for case, owner in cases.items():
        path = tmp_path / f"{case}.zarr"
        path.with_name(path.name + ".lock").write_text(json.dumps({**owner, "since": "then"}))
        if case == "dead":
            with caplog.at_level("WARNING", logger="partaware.store.lock"):
                StoreWriter(path, 8, SMALL, {}, "h").close()
            assert f"left by pid {dead.pid}" in caplog.text
            assert not path.with_name(path.name + ".lock").exists()
            continue
        with pytest.raises(StoreLockedError, match=rf"pid {owner['pid']} on host {owner['host']}") as err:
            StoreWriter(path, 8, SMALL, {}, "h")
        if case == "elsewhere":
            assert f"or remove {path}.lock if that job is gone" in str(err.value)
