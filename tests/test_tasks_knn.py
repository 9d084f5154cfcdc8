"""Task `knn` on small stores written with the store writer: its rows equal the pure evaluation on
the same features, with intervals; leave-one-out on a retrieval set; splits per kind; config errors."""
import re

import numpy as np
import pytest

pytest.importorskip("faiss")

from partaware import config as C  # noqa: E402
from partaware import kinds, tasks  # noqa: E402
from partaware.evals import neighbours  # noqa: E402
from partaware.evals.knn import evaluate_knn  # noqa: E402
from partaware.store import StoreWriter, open_store  # noqa: E402

DIM, CLASSES = 12, 3
LAYOUT = {"mean": ((DIM,), "float16", 16), "cls": ((DIM,), "float16", 16), "blocks/2/mean": ((DIM,), "float16", 16),
          "label": ((), "int64", 64), "valid": ((), "uint8", 64), "image": ((), "int64", 64),
          "row": ((), "int64", 64)}


def make_store(path, n, seed, invalid=()):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    centre = np.eye(DIM, dtype=np.float32)[labels] * 2
    data = {name: (rng.standard_normal((n, DIM)) + centre).astype(np.float16)
            for name in ("mean", "cls", "blocks/2/mean")}
    valid = np.ones(n, np.uint8)
    valid[list(invalid)] = 0
    data.update(label=labels, valid=valid, image=np.arange(n) // 2, row=np.arange(n))
    w = StoreWriter(path, n, LAYOUT, {"model": "m"}, "h")
    w.write(data)
    w.publish()
    return open_store(path), data


def job_config(**knn):
    cfg = {"knn": C.fill_defaults(tasks.get("knn").schema, knn), "seed": 0,
           "stats": {"bootstrap": 100, "level": 0.95, "seed": 0},
           "datasets": {"d": {"kind": "cub"}}, "models": {"m": {"weights": "random"}}}
    return cfg


CTX = {"dataset": "d", "model": "m", "group": "", "weights": "random"}


def by_key(rows):
    return {(r["feature"], r["metric"]): r for r in rows}


def test_rows_equal_the_evaluation(tmp_path):
    train, dtr = make_store(tmp_path / "train.h5", 90, 0, invalid=[3])
    test, dte = make_store(tmp_path / "test.h5", 40, 1, invalid=[5, 6])
    cfg = job_config(k=[5, 10])
    rows, per_class = tasks.get("knn").rows(cfg, CTX, [train, test])
    assert per_class == []
    got = by_key(rows)
    assert {f for f, _ in got} == {"mean", "cls", "block 2 mean"}
    assert {m for _, m in got} == {"knn_top1@5", "knn_top1@10", "precision@1", "R-precision", "MAP@R"}
    tv, qv = dtr["valid"].astype(bool), dte["valid"].astype(bool)
    for feature, arr in [("mean", "mean"), ("block 2 mean", "blocks/2/mean")]:
        ref = evaluate_knn(dtr[arr][tv], dtr["label"][tv], dte[arr][qv], dte["label"][qv], ks=[5, 10]).summary()
        for metric, value in ref.items():
            row = got[(feature, metric)]
            assert row["value"] == pytest.approx(100 * value)
            assert row["ci_low"] <= row["value"] <= row["ci_high"]
            assert row["skipped"] == 3 and row["protocol"].startswith("exact")
    assert got[("mean", "knn_top1@5")]["n"] == 38 and "T=0.07" in got[("mean", "knn_top1@5")]["protocol"]


def test_leave_one_out_on_a_retrieval_set(tmp_path):
    store, data = make_store(tmp_path / "all.zarr", 60, 2)
    rows, _ = tasks.get("knn").rows(job_config(features=["cls", "proj"]), CTX, [store])
    got = by_key(rows)
    ref = evaluate_knn(data["cls"], data["label"], data["cls"], data["label"], ks=[20], leave_one_out=True).summary()
    assert got[("cls", "MAP@R")]["value"] == pytest.approx(100 * ref["MAP@R"])
    assert "leave-one-out" in got[("cls", "MAP@R")]["protocol"]
    assert np.isnan(got[("proj", "MAP@R")]["value"]) and got[("proj", "MAP@R")]["n"] == 0  # no proj array


def test_ivf_protocol_says_its_recall(tmp_path):
    train, _ = make_store(tmp_path / "train.h5", 90, 0)
    test, _ = make_store(tmp_path / "test.h5", 40, 1)
    rows, _ = tasks.get("knn").rows(job_config(features=["mean"], index="ivf", nlist=4, nprobe=4), CTX, [train, test])
    pattern = r"ivf \(nlist 4, nprobe 4; recall@\d+ 1.000 against exact search"
    assert all(re.search(pattern, r["protocol"]) for r in rows)


def test_k_larger_than_the_database_is_a_config_error(tmp_path):
    train, _ = make_store(tmp_path / "train.h5", 30, 0, invalid=[0])
    test, _ = make_store(tmp_path / "test.h5", 10, 1)
    with pytest.raises(C.ConfigError, match="config key knn.k: 30 neighbours, .* holds 29 valid rows; use k <= 29"):
        tasks.get("knn").rows(job_config(k=[30]), CTX, [train, test])


def test_splits_per_kind():
    task = tasks.get("knn")
    assert task.splits(kinds.get("cub"), {"tasks": ["retrieval"]}, {}) == ["train", "test"]
    assert task.splits(kinds.get("imagefolder"), {"splits": ["train", "val"]}, {}) == ["train", "val"]
    assert task.splits(kinds.get("segfolder"), {}, {}) == []


def test_check_without_faiss(monkeypatch):
    def missing():
        raise neighbours.FaissMissing("the neighbour search needs faiss, which is not importable (x); "
                                      + neighbours.INSTALL)

    monkeypatch.setattr(neighbours, "load_faiss", missing)
    with pytest.raises(C.ConfigError, match="datasets.cub.tasks: the knn task needs faiss.*pip install faiss-cpu"):
        tasks.get("knn").check("datasets.cub", {}, job_config())
    with pytest.raises(C.ConfigError, match="knn.nprobe: 8 is more than knn.nlist"):
        monkeypatch.undo()
        tasks.get("knn").check("datasets.cub", {}, job_config(index="ivf", nlist=4, nprobe=8))


def test_importing_partaware_needs_no_faiss():
    import subprocess
    import sys

    code = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
            "  if n.split('.')[0] == 'faiss': raise ModuleNotFoundError(n)\n"
            "sys.meta_path.insert(0, B())\n"
            "import partaware.tasks.knn, partaware.evals.knn, partaware.figures.retrieval_grid\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr
