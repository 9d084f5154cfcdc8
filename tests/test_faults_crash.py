"""Crash safety, for real: SIGKILLed extraction / evaluation / table jobs, a full disk.

Every job runs as the workflow runs it (`partaware <command> --spec ...` in a subprocess) on a
generated CUB-layout dataset big enough (225 part patches, 8-row chunks) for an extraction to
take a moment. The reference is an uninterrupted extraction of the same config; both store
backends (Zarr, HDF5) are checked.
"""
from __future__ import annotations

import copy
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from partaware import config as C
from partaware.data.demo import generate_demo_cub
from partaware.data.parts import select_split, write_index
from partaware.kinds import build_part_index
from partaware.store import IncompleteStoreError, StoreWriter, open_store

BIN = Path(sys.executable).parent
PARTAWARE = str(BIN / "partaware")
RUNTIME = {"device": "cpu", "extract": {"batch_size": 8, "num_workers": 0}}
CONFIG = {
    "seed": 0, "device": "cpu",
    "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 8},
    "extract": {"batch_size": 8, "num_workers": 0},
    "datasets": {"demo_parts": {"kind": "cub", "demo": {"n_images": 60, "seed": 0}, "parts": [11, 12, 9, 14],
                                "size": 64, "resize": 72, "tasks": ["retrieval"]}},
    "models": {"tiny": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1}},
    "retrieval": {"features": ["mean", "cls"], "memory_mb": 16},
}


def job_spec(cfg: dict, dataset: str, model: str, sections=()) -> str:
    """What rules/common.smk passes a job as --spec."""
    out = {k: cfg[k] for k in ("seed", "cache", "data", *sections)}
    out["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    out["datasets"] = {dataset: cfg["datasets"][dataset]}
    out["models"] = {model: cfg["models"][model]}
    return json.dumps(out, sort_keys=True)


def config(fmt: str = "zarr") -> dict:
    raw = copy.deepcopy(CONFIG)
    raw["cache"]["format"] = fmt
    return C.validate(raw)


def extract_cmd(setup, out: Path) -> list[str]:
    fmt = "zarr" if out.suffix == ".zarr" else "hdf5"
    return [PARTAWARE, "extract", "--spec", job_spec(config(fmt), "demo_parts", "tiny"),
            "--runtime", json.dumps(RUNTIME), "--threads", "1", "--dataset", "demo_parts",
            "--model", "tiny", "--split", "all", "--index", str(setup["index"]), "--out", str(out)]


def assert_same_store(path: Path, reference: Path) -> None:
    """Array for array and attribute for attribute, bit-identical."""
    with open_store(path) as a, open_store(reference) as b:
        assert sorted(a.array_names()) == sorted(b.array_names())
        for name in b.array_names():
            x, y = a.read(name), b.read(name)
            assert x.dtype == y.dtype and np.array_equal(x, y), f"array {name} differs"
        assert a.attrs == b.attrs


def rows_done(out: Path):
    try:
        return json.loads(out.with_name(out.name + ".progress.json").read_text())["rows_done"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The generated dataset and its `all` index."""
    root = tmp_path_factory.mktemp("crash")
    cfg = config()
    ds = cfg["datasets"]["demo_parts"]
    generate_demo_cub(root / ds["root"], **ds["demo"])
    index = select_split(build_part_index({**ds, "root": str(root / ds["root"])}), "all")
    write_index(index, root / "all.parquet")
    return {"root": root, "cfg": cfg, "index": root / "all.parquet", "n": len(index), "references": {}}


def reference(setup, fmt: str) -> Path:
    """The store of one uninterrupted extraction (in this process, made once per backend)."""
    if fmt not in setup["references"]:
        from partaware.extract import extract

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the subprocesses (--threads 1), so results are bit-identical
        try:
            setup["references"][fmt] = extract(config(fmt), "demo_parts", "tiny", "all", setup["index"],
                                               setup["root"] / f"reference{SUFFIX[fmt]}")
        finally:
            torch.set_num_threads(threads)
    return setup["references"][fmt]


SUFFIX = {"zarr": ".zarr", "hdf5": ".h5"}


# --------------------------------------------------------------------------- killed extraction
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_killed_extraction_resumes_to_an_identical_store(setup, tmp_path, fmt):
    expected = reference(setup, fmt)
    out = tmp_path / f"all{SUFFIX[fmt]}"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(extract_cmd(setup, out), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        try:
            while proc.poll() is None and time.time() < deadline:
                with pytest.raises(IncompleteStoreError):  # never readable while being written
                    open_store(out)
                if (rows_done(out) or 0) > 0:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.005)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    k = rows_done(out)
    assert 0 < k < setup["n"] and k % 8 == 0  # the resume point is a chunk boundary

    # what is on disk now is a partial store, never a complete one
    assert not out.exists()
    with pytest.raises(IncompleteStoreError, match="partial"):
        open_store(out)
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(out.with_name(out.name + ".partial"))

    rerun = subprocess.run(extract_cmd(setup, out), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = re.search(r"resuming \S+ at row (\d+) of (\d+)", rerun.stderr)
    assert resumed, rerun.stderr[-3000:]
    assert int(resumed.group(1)) == k and int(resumed.group(2)) == setup["n"]
    assert not out.with_name(out.name + ".partial").exists()
    assert not out.with_name(out.name + ".progress.json").exists()
    assert_same_store(out, expected)


# --------------------------------------------------------------------------- killed probe / table
# Kill the job at the worst moment: halfway through writing its output file.
DIE_MID_WRITE = r"""
import os, pathlib, signal, sys
import pandas as pd

def die(path, text):
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    os.kill(os.getpid(), signal.SIGKILL)

to_csv = pd.DataFrame.to_csv
def dying_to_csv(self, path_or_buf=None, *args, **kwargs):
    text = to_csv(self, None, *args, **kwargs)
    return text if path_or_buf is None else die(path_or_buf, text)
pd.DataFrame.to_csv = dying_to_csv
pathlib.Path.write_text = lambda self, text, *a, **k: die(self, text)

from partaware.cli import main
main(sys.argv[1:])
"""


def _run(args, die=False):
    cmd = [sys.executable, "-c", DIE_MID_WRITE, *args] if die else [PARTAWARE, *args]
    return subprocess.run(cmd, capture_output=True, text=True)


@pytest.mark.slow
def test_killed_evaluation_and_table_leave_no_half_written_output(setup, tmp_path):
    out = tmp_path / "evals" / "retrieval.csv"
    evaluate = ["evaluate", "--spec", job_spec(setup["cfg"], "demo_parts", "tiny", ("retrieval",)),
                "--runtime", json.dumps(RUNTIME), "--threads", "1", "--task", "retrieval",
                "--dataset", "demo_parts", "--model", "tiny", "--out", str(out), str(reference(setup, "zarr"))]

    killed = _run(evaluate, die=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists(), "a killed job must not leave a file at its output path"
    assert list(out.parent.glob(".*.tmp*")), "the kill did not hit the write (the test proves nothing)"

    done = _run(evaluate)
    assert done.returncode == 0, done.stderr[-2000:]
    good = out.read_bytes()
    result = pd.read_csv(out)
    assert len(result) == 4 and set(result["metric"]) == {"AP", "mAP"} and (result["n"] == setup["n"]).all()

    killed = _run(evaluate, die=True)  # a rerun killed mid-write keeps the previous result whole
    assert killed.returncode == -signal.SIGKILL
    assert out.read_bytes() == good

    table = ["table", "--csv", str(tmp_path / "table.csv"), "--md", str(tmp_path / "table.md"), str(out)]
    killed = _run(table, die=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "table.csv").exists() and not (tmp_path / "table.md").exists()
    done = _run(table)
    assert done.returncode == 0, done.stderr[-2000:]
    before = {p: (tmp_path / p).read_bytes() for p in ("table.csv", "table.md")}
    assert len(pd.read_csv(tmp_path / "table.csv")) == 4
    killed = _run(table, die=True)
    assert killed.returncode == -signal.SIGKILL
    assert {p: (tmp_path / p).read_bytes() for p in before} == before


# --------------------------------------------------------------------------- disk full
def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_disk_full_fails_cleanly_and_a_rerun_with_space_completes(setup, tmp_path, monkeypatch, capsys, fmt):
    expected = reference(setup, fmt)
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / f"all{SUFFIX[fmt]}"
    mounted = _mount_tmpfs(disk, "128k")  # a real full disk where this runs as root
    try:
        if mounted:
            failed = subprocess.run(extract_cmd(setup, out), capture_output=True, text=True)
            code, stderr = failed.returncode, failed.stderr
        else:  # no mount permission: the backend's write raises ENOSPC from its 4th chunk on
            from partaware import cli
            from partaware.store import backends

            backend = backends._ZarrBackend if fmt == "zarr" else backends._H5Backend
            write, calls = backend.write, []

            def full(self, name, start, data):
                calls.append(name)
                if len(calls) > 15:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return write(self, name, start, data)

            monkeypatch.setattr(backend, "write", full)
            threads = torch.get_num_threads()
            try:
                with pytest.raises(SystemExit) as exit_info:
                    cli.main(extract_cmd(setup, out)[1:])
            finally:
                torch.set_num_threads(threads)
            code, stderr = exit_info.value.code, capsys.readouterr().err
            monkeypatch.undo()
        assert code == 1
        message = [line for line in stderr.splitlines() if line.startswith("partaware extract: error:")]
        assert len(message) == 1, stderr[-3000:]
        assert "no space left on device" in message[0] and str(out) in message[0] and "rerun" in message[0]
        assert "Traceback" not in stderr
        assert not out.exists()
        with pytest.raises(IncompleteStoreError):
            open_store(out)

        if mounted:
            assert subprocess.run(["mount", "-o", "remount,size=16m", str(disk)]).returncode == 0
        rerun = subprocess.run(extract_cmd(setup, out), capture_output=True, text=True)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert_same_store(out, expected)
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(disk)])


# --------------------------------------------------------------------------- resume keys
class Crash(Exception):
    pass


def _crash_after(monkeypatch, chunks: int):
    """Make the store writer die after `chunks` flushed chunks, as a killed job would."""
    write, calls = StoreWriter.write, []

    def crashing(self, batch):
        if len(calls) == chunks:
            raise Crash("simulated crash")
        calls.append(1)
        return write(self, batch)

    monkeypatch.setattr(StoreWriter, "write", crashing)


def _tiny_depth2(setup, tmp_path, **model):
    raw = copy.deepcopy(CONFIG)
    raw["models"] = {"tiny": {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}, **model}}
    return C.validate(raw)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_partial_store_resumes_only_under_the_same_resume_key(tmp_path, suffix):
    layout = {"cls": ((4,), "float16", 2), "row": ((), "int64", 2)}
    path = tmp_path / f"s{suffix}"

    def writer(key):
        return StoreWriter(path, 6, layout, {}, "h", resume_key=key)

    w = writer("sha-a")
    w.write({"cls": np.ones((2, 4)), "row": np.arange(2)})
    w.backend.close()  # a killed job
    w = writer("sha-a")
    assert w.rows_done == 2
    w.backend.close()
    w = writer("sha-b")  # other weights under the same config: start over
    assert w.rows_done == 0
    w.backend.close()
    assert writer("sha-a").rows_done == 0  # and the old partial is gone


def test_a_changed_checkpoint_is_not_resumed_into_the_old_partial_store(setup, tmp_path, monkeypatch):
    import timm

    from partaware.extract import extract

    ckpt = tmp_path / "weights.pth"

    def save(seed):
        torch.manual_seed(seed)
        model = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2, img_size=64)
        torch.save(model.state_dict(), ckpt)

    save(0)
    cfg = _tiny_depth2(setup, tmp_path, weights="checkpoint", format="timm", path=str(ckpt))
    out = tmp_path / "all.zarr"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(Crash):
            extract(cfg, "demo_parts", "tiny", "all", setup["index"], out, ckpt)
    save(1)  # the file is replaced (re-downloaded, retrained) at the same path
    extract(cfg, "demo_parts", "tiny", "all", setup["index"], out, ckpt)
    clean = extract(cfg, "demo_parts", "tiny", "all", setup["index"], tmp_path / "clean.zarr", ckpt)
    with open_store(out) as a, open_store(clean) as b:
        np.testing.assert_array_equal(a.read("cls"), b.read("cls"))


def test_skipped_images_survive_a_resume(setup, tmp_path, monkeypatch):
    from partaware.extract import extract

    index = pd.read_parquet(setup["index"])
    first = index["image_path"].iloc[0]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(Path(first).read_bytes()[:500])  # a truncated JPEG
    index.loc[index["image_path"] == first, "image_path"] = str(bad)
    index.to_parquet(tmp_path / "all.parquet", index=False)
    cfg = _tiny_depth2(setup, tmp_path, weights="random", seed=1)
    cfg["data"]["on_bad_image"] = "skip"
    out = tmp_path / "all.zarr"
    with monkeypatch.context() as m:
        _crash_after(m, 2)
        with pytest.raises(Crash):
            extract(cfg, "demo_parts", "tiny", "all", tmp_path / "all.parquet", out)
    extract(cfg, "demo_parts", "tiny", "all", tmp_path / "all.parquet", out)
    with open_store(out) as store:
        assert not store.read("valid")[: int((index["image_path"] == str(bad)).sum())].any()
        assert any(str(bad) in s for s in store.attrs["skipped_images"]), store.attrs["skipped_images"]
