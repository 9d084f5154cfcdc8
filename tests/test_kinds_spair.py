"""Kind `spair` (kinds/spair.py) and the correspondence wiring of the kinds with keypoint pairs:
config checks, the pair table, dense-store extraction and evaluation through the CLI on real
SPair-71k annotation samples, and the workflow's plan for a CUB-kind and an SPair-kind dataset."""
import json
import subprocess

import pandas as pd
import pytest
from workflow_runner import BIN, planned_jobs

from partaware import specs
from partaware import config as C

MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "timm_kwargs": {"depth": 2}}


def raw_cfg(root, **ds) -> dict:
    return {"datasets": {"sp": {"kind": "spair", "root": str(root), "tasks": ["correspondence"],
                                "mirror": {"aeroplane": [[4, 5], [6, 7]]}, **ds}},
            "models": {"tiny": MODEL}, "correspondence": {"size": 64}, "stats": {"bootstrap": 50},
            "extract": {"batch_size": 8, "num_workers": 0}}


def test_config_of_a_spair_dataset(spair):
    cfg = C.validate(raw_cfg(spair))
    assert C.splits_of(cfg, "sp") == ["test_dense64"] and C.eval_names(cfg, "sp") == ["correspondence"]
    with pytest.raises(C.ConfigError, match=r"datasets\.sp\.mirror\.aeroplane: \[4, 4\] pairs a keypoint with itself"):
        C.validate(raw_cfg(spair, mirror={"aeroplane": [[4, 4]]}))
    with pytest.raises(C.ConfigError, match=r"datasets\.sp\.mirror\.aeroplane: keypoint 5 is in two pairs"):
        C.validate(raw_cfg(spair, mirror={"aeroplane": [[4, 5], [5, 6]]}))
    with pytest.raises(C.ConfigError, match=r"datasets\.sp\.tasks"):
        C.validate(raw_cfg(spair, tasks=["retrieval"]))  # spair makes only dense maps


def test_dense_store_signature_follows_the_store_shaping_settings(spair):
    base = C.validate(raw_cfg(spair))
    sig = specs.store_signature(base, "sp", "tiny", "test_dense64")
    assert sig["task_settings"] == {"correspondence": {"size": 64, "blocks": []}}
    other_alphas = C.validate({**raw_cfg(spair), "correspondence": {"size": 64, "alphas": [0.2]}})
    assert specs.store_signature(other_alphas, "sp", "tiny", "test_dense64") == sig  # scoring only: same store
    blocks = C.validate({**raw_cfg(spair), "correspondence": {"size": 64, "blocks": [1]}})
    assert C.digest(specs.store_signature(blocks, "sp", "tiny", "test_dense64")) != C.digest(sig)


def _run(args, cwd):
    out = subprocess.run([str(BIN / "partaware"), *args], capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_pairs_extract_evaluate_through_the_cli(spair, tmp_path):
    from partaware import specs

    cfg = C.validate(raw_cfg(spair))
    work = tmp_path / "run"
    work.mkdir()
    index = work / "results" / "index" / "sp"
    _run(["pairs", "--spec", json.dumps(specs.pairs_spec(cfg, "sp")), "--dataset", "sp",
          "--out", str(index / "pairs.parquet")], work)
    pairs = pd.read_parquet(index / "pairs.parquet")
    assert pairs["pair"].nunique() == 3 and set(pairs["category"]) == {"aeroplane"}
    store = work / "results" / "features" / "sp" / "tiny" / "test_dense64.zarr"
    _run(["extract", "--spec", json.dumps(specs.extract_spec(cfg, "sp", "tiny", "test_dense64")), "--dataset", "sp",
          "--model", "tiny", "--split", "test_dense64", "--index", str(index / "pairs.parquet"), "--out", str(store)],
         work)
    out = work / "results" / "evals" / "sp" / "tiny" / "correspondence.csv"
    _run(["evaluate", "--spec", json.dumps(specs.task_spec(cfg, "sp", "tiny", "correspondence")),
          "--task", "correspondence", "--dataset", "sp", "--model", "tiny", "--out", str(out), str(store)], work)
    rows = pd.read_csv(out)
    assert set(rows["metric"]) == {"PCK@0.05", "PCK@0.1", "PCK@0.15", "left_right_confusion"}
    pck = rows[rows["metric"] == "PCK@0.1"].iloc[0]
    assert pck["n"] == int(pairs["visible"].sum()) and 0 <= pck["value"] <= 100
    per_part = pd.read_csv(out.with_name("correspondence_per_part.csv"))
    assert set(per_part["part"]) == set(pairs["part"])


def test_workflow_plans_correspondence_for_cub_and_spair(spair, tmp_path):
    raw = raw_cfg(spair)
    raw["datasets"]["birds"] = {"kind": "cub", "demo": {"n_images": 12, "seed": 0}, "parts": [11, 12, 9, 14],
                                "size": 64, "tasks": ["retrieval", "correspondence"]}
    raw["models"]["tiny2"] = {**MODEL, "seed": 2}
    work = tmp_path / "run"
    work.mkdir()
    jobs = planned_jobs(work, raw)
    assert jobs["pair_table"] == 2 and jobs["correspondence_figure"] == 2
    assert jobs["evaluate"] == 2 * (1 + 2)       # two models: spair correspondence; cub retrieval + correspondence
    assert jobs["extract"] == 2 * (1 + 2)        # test_dense64 of each; cub's `all`
