"""Task `knn` on small stores written with the store writer: its rows equal the pure evaluation on
the same features, with intervals; leave-one-out on a retrieval set; what the registry derives from
it (kinds, config section, bootstrap statistics, the CLI's --task, workflow jobs); config errors."""
import json
import re

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("faiss")

from partaware import roles
from partaware import specs
from partaware import config as C  # noqa: E402
from partaware import kinds, tasks  # noqa: E402
from partaware.evals import neighbours  # noqa: E402
from partaware.evals.knn import evaluate_knn  # noqa: E402
from partaware.evals import bootstrap  # noqa: E402
from partaware.store import StoreWriter, open_store  # noqa: E402
from cli_runner import run_cli  # noqa: E402
from workflow_runner import planned_jobs  # noqa: E402

DIM, CLASSES = 12, 3
LAYOUT = {"mean": ((DIM,), "float16", 16), "cls": ((DIM,), "float16", 16), "blocks/2/mean": ((DIM,), "float16", 16),
          "label": ((), "int64", 64), "valid": ((), "uint8", 64), "image": ((), "int64", 64),
          "row": ((), "int64", 64)}


def make_store(path, n, seed, invalid=(), made_for="h"):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    centre = np.eye(DIM, dtype=np.float32)[labels] * 2
    data = {name: (rng.standard_normal((n, DIM)) + centre).astype(np.float16)
            for name in ("mean", "cls", "blocks/2/mean")}
    valid = np.ones(n, np.uint8)
    valid[list(invalid)] = 0
    data.update(label=labels, valid=valid, image=np.arange(n) // 2, row=np.arange(n))
    w = StoreWriter(path, n, LAYOUT, {"model": "m"}, made_for)
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
            assert row["skipped_rows"] == 3 and row["protocol"] == "exact"
            assert row["notes"].startswith(("DINO weighted vote, T=0.07; exact search", "R = the class's other"))
    assert got[("mean", "knn_top1@5")]["n"] == 38 and got[("mean", "knn_top1@5")]["images"] == 65


def test_leave_one_out_on_a_retrieval_set(tmp_path):
    store, data = make_store(tmp_path / "all.zarr", 60, 2)
    rows, _ = tasks.get("knn").rows(job_config(features=["cls", "proj"]), CTX, [store])
    got = by_key(rows)
    ref = evaluate_knn(data["cls"], data["label"], data["cls"], data["label"], ks=[20], leave_one_out=True).summary()
    assert got[("cls", "MAP@R")]["value"] == pytest.approx(100 * ref["MAP@R"])
    assert "leave-one-out" in got[("cls", "MAP@R")]["notes"]
    assert np.isnan(got[("proj", "MAP@R")]["value"]) and got[("proj", "MAP@R")]["n"] == 0  # no proj array


def test_ivf_protocol_says_its_recall(tmp_path):
    train, _ = make_store(tmp_path / "train.h5", 90, 0)
    test, _ = make_store(tmp_path / "test.h5", 40, 1)
    rows, _ = tasks.get("knn").rows(job_config(features=["mean"], index="ivf", nlist=4, nprobe=4), CTX, [train, test])
    pattern = r"ivf \(nlist 4, nprobe 4; recall@\d+ 1.000 against exact search"
    assert all(re.search(pattern, r["notes"]) and r["protocol"] == "variant" for r in rows)


def test_k_larger_than_the_database_is_clamped_and_said(tmp_path, caplog):
    """k above the database's valid rows: every valid row votes, the row keeps the configured
    name, and the clamp is in its notes and one log line (a small set still runs)."""
    train, dtr = make_store(tmp_path / "train.h5", 30, 0, invalid=[0])
    test, dte = make_store(tmp_path / "test.h5", 10, 1)
    with caplog.at_level("WARNING"):
        rows, _ = tasks.get("knn").rows(job_config(k=[5, 30], features=["mean"]), CTX, [train, test])
    got = by_key(rows)
    tv = dtr["valid"].astype(bool)
    ref = evaluate_knn(dtr["mean"][tv], dtr["label"][tv], dte["mean"], dte["label"], ks=[5, 29]).summary()
    assert got[("mean", "knn_top1@30")]["value"] == pytest.approx(100 * ref["knn_top1@29"])
    assert got[("mean", "knn_top1@5")]["value"] == pytest.approx(100 * ref["knn_top1@5"])
    assert "k clamped to 29: the database holds 29 valid rows" in got[("mean", "knn_top1@30")]["notes"]
    assert sum("k clamped to 29" in r.getMessage() for r in caplog.records) == 1


def test_the_registry_wires_it():
    """Kinds with train/test stores feed it, its section and statistics come from the task."""
    task = tasks.get("knn")
    assert "knn" in roles.tasks_of(kinds.get("cub")) and "knn" in roles.tasks_of(kinds.get("coco")) and "knn" in roles.tasks_of(kinds.get("imagefolder"))
    assert "knn" not in roles.tasks_of(kinds.get("segfolder")) and "knn" not in roles.tasks_of(kinds.get("patchgrid"))
    assert task.splits(kinds.get("cub"), {}, None) == ["train", "test"]
    assert task.splits(kinds.get("imagefolder"), {"splits": ["train", "val"]}, None) == ["train", "val"]
    assert C.runtime_keys()["knn"] == ("memory_mb",)
    # every k's top-1 and the neighbour metrics are bootstrapped as means of per-query values
    assert [tasks.statistic_of(m) for m in ("knn_top1@7", "MAP@R", "R-precision", "precision@1")] == ["top1"] * 4
    assert tasks.statistic_of("knn_top1@x") is None
    sums = bootstrap.accuracy_sums(np.array([1.0, 0.5, 0.0, 1.0]), np.array([0, 0, 1, 2]))
    assert bootstrap.value(sums, "knn_top1@200") == bootstrap.value(sums, "MAP@R") == pytest.approx(0.625)


def config(**ds):
    return {"datasets": {"birds": {"kind": "cub", "demo": {"n_images": 4, "seed": 0}, "parts": [11, 12],
                                   "size": 32, "resize": 40, "tasks": ["knn"], **ds}},
            "models": {"rnd": {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 0}},
            "knn": {"k": [2, 3], "temperature": 0.1}}


def test_config_section_and_faiss_check(monkeypatch):
    cfg = C.validate(config())
    assert cfg["knn"]["k"] == [2, 3] and cfg["knn"]["index"] == "flat" and cfg["knn"]["features"] == ["mean", "cls"]
    with pytest.raises(C.ConfigError, match=r"config key knn.temperature: 0 .*"):
        C.validate({**config(), "knn": {"temperature": 0}})
    with pytest.raises(C.ConfigError, match="config key knn.nprobe: 8 is more than knn.nlist"):
        C.validate({**config(), "knn": {"index": "ivf", "nlist": 4, "nprobe": 8}})
    with pytest.raises(C.ConfigError, match=r"datasets\.seg\.tasks\.0: 'knn' is not allowed"):
        C.validate({**config(), "datasets": {"seg": {"kind": "segfolder", "root": ".", "tasks": ["knn"],
                                                     "label_sets": {"part": {"classes": 2}}}}})

    monkeypatch.setattr(neighbours, "faiss_installed", lambda: False)
    with pytest.raises(C.ConfigError, match=r"^config key datasets\.birds\.tasks: the knn task needs faiss.*"
                                            r"pip install 'partaware\[cpu\]' \(in a clone: pip install '\.\[cpu\]'"):
        C.validate(config())
    C.validate(config(tasks=["retrieval"]))  # only a knn task needs faiss


def test_evaluate_through_the_cli(tmp_path, capsys):
    spec = {**config(), "stats": {"bootstrap": 50}}
    filled = C.fill_spec(spec)
    made_for = {s: C.digest(specs.store_signature(filled, "birds", "rnd", s)) for s in ("train", "test")}
    train, _ = make_store(tmp_path / "train.zarr", 50, 0, made_for=made_for["train"])
    test, _ = make_store(tmp_path / "test.zarr", 20, 1, made_for=made_for["test"])
    out = tmp_path / "knn.csv"
    argv = ["evaluate", "--spec", json.dumps(spec), "--task", "knn", "--dataset", "birds", "--model", "rnd",
            "--out", out]
    code, err, _ = run_cli(capsys, *argv, tmp_path / "train.zarr", tmp_path / "test.zarr")
    assert code == 0, err
    rows = pd.read_csv(out)
    assert set(rows["metric"]) == {"knn_top1@2", "knn_top1@3", "precision@1", "R-precision", "MAP@R"}
    assert set(rows["feature"]) == {"mean", "cls", "block 2 mean"} and set(rows["protocol"]) == {"exact"}
    assert (rows["ci_low"] <= rows["value"]).all() and (rows["value"] <= rows["ci_high"]).all()
    assert (tmp_path / "knn_stats.npz").is_file()  # the per-image sums `partaware table` compares encoders on
    # a store built under another config is refused, not scored
    code, err, _ = run_cli(capsys, *argv, tmp_path / "test.zarr", tmp_path / "train.zarr")
    assert code == 1 and "hash" in err


def test_workflow_plans_knn_jobs(tmp_path):
    """A dataset listing knn gets its train and test stores and one evaluate job per model."""
    raw = config()
    raw["models"]["rnd2"] = {**raw["models"]["rnd"], "seed": 1}
    assert planned_jobs(tmp_path, raw, "results/table.csv") == {"demo_data": 1, "part_index": 1, "extract": 4,
                                                                "evaluate": 2, "table": 1}
    both = config(tasks=["retrieval", "knn"])  # retrieval reads `all`, knn `train` and `test`
    assert planned_jobs(tmp_path, both, "results/table.csv") == {"demo_data": 1, "part_index": 1, "extract": 3,
                                                                 "evaluate": 2, "table": 1}


def test_importing_partaware_needs_no_faiss():
    import subprocess
    import sys

    code = ("import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
            "  if n.split('.')[0] == 'faiss': raise ModuleNotFoundError(n)\n"
            "sys.meta_path.insert(0, B())\n"
            "import partaware.tasks.knn, partaware.evals.knn, partaware.figures.retrieval_grid\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_summary_figure_shows_k20_beside_the_probes():
    """The task's headline: knn_top1@20 rows are bars `k-NN <feature>` of the top-1 panel."""
    from partaware.figures.summary import summary_data

    base = {"dataset": "d", "model": "m", "label_set": "part", "weights": "random", "seed": ""}
    table = pd.DataFrame([{**base, "task": "knn", "feature": f, "metric": m, "value": v, "protocol": "exact"}
                          for f, m, v in [("mean", "knn_top1@20", 40.0), ("cls", "knn_top1@20", 50.0),
                                          ("cls", "knn_top1@10", 60.0), ("cls", "MAP@R", 10.0)]]
                         + [{**base, "task": "linear", "feature": "cls", "metric": "top1_best_epoch", "value": 70.0,
                             "protocol": "paper"}])
    data = summary_data(table)
    assert set(data["family"]) == {"top-1 accuracy (%)"}
    assert dict(zip(data["group"], data["value"])) == {"k-NN mean": 40.0, "k-NN cls": 50.0, "linear": 70.0}
