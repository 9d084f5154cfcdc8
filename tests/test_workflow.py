"""End to end: the Snakemake workflow on a tiny config, and its incremental behaviour."""
import copy
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_runner import BIN, REPO, planned_jobs, snakemake

TINY = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())


@pytest.fixture
def finished_run(tiny_run):
    return tiny_run


@pytest.mark.slow
def test_figures_are_drawn(finished_run):
    for name in ("demo_parts/retrieval_grid.png", "demo_seg/feature_maps.png", "summary.png", "contrast.png"):
        assert (finished_run / "results" / "figures" / name).stat().st_size > 1000
    # the explorer page of the one dataset with a dense store (demo_parts has no correspondence task here)
    assert sorted(p.name for p in (finished_run / "results" / "explore").iterdir()) == ["demo_seg.html"]


@pytest.mark.slow
def test_explore_page_carries_the_stores_tokens(finished_run):
    """The segmentation dataset's page (the rule's job): its val images, every cached block, and
    tokens equal to the store's rows of those images, in float16."""
    from explore_pipeline import page_payload
    from partaware.explore.export import decode, to_f16_tokens
    from partaware.store import open_store

    page = page_payload(finished_run / "results" / "explore" / "demo_seg.html")
    keys = [im["key"] for im in page["images"]]
    assert len(keys) == 4 and page["left_out"] == [] and page["parts"] is None  # tiny: 4 val images
    (model,) = page["models"]
    assert model["name"] == "tiny_a" and [b["name"] for b in model["blocks"]] == ["layers/2", "layers/4"]
    ids = sorted(p.stem for p in (finished_run / "results/demo/demo_seg/img/val").iterdir())
    with open_store(finished_run / "results/features/demo_seg/tiny_a/val.zarr") as store:
        rows = [int(np.flatnonzero(store.read("row") == ids.index(k))[0]) for k in keys]
        for block in model["blocks"]:
            expected = to_f16_tokens(np.concatenate([store.read(block["name"], r, r + 1) for r in rows]))
            np.testing.assert_array_equal(decode(block["tokens"], expected.shape), expected)
            assert len(model["pca"][block["name"]]) == 4


@pytest.mark.slow
def test_table_has_every_measurement(finished_run):
    table = pd.read_csv(finished_run / "results" / "table.csv")
    expected_cols = {"dataset", "task", "model", "feature", "metric", "value", "n", "seed"}
    assert expected_cols <= set(table.columns)
    assert set(table["task"]) == {"retrieval", "linear", "attentive", "logistic", "knn", "segmentation"}
    assert set(table.loc[table.task == "segmentation", "label_set"]) == {"part", "object"}
    seg = table[table.task == "segmentation"]
    assert set(seg["protocol"]) == {"paper", "cached"}  # both, side by side
    assert set(table["protocol"]) <= {"paper", "cached", "variant", "exact"}  # the enum; details in notes
    assert table["notes"].notna().all()
    assert seg.groupby(["label_set", "model", "metric"]).size().eq(2).all()
    assert set(table.loc[table.task == "retrieval", "metric"]) == {"AP", "mAP"}
    assert set(table.loc[table.task == "linear", "seed"]) == {0, 1}
    knn = table[(table.task == "knn") & table.feature.isin(["mean", "cls"])]
    assert set(knn["metric"]) == {"knn_top1@1", "knn_top1@5", "precision@1", "R-precision", "MAP@R"}
    assert set(knn["protocol"]) == {"exact"} and (knn["ci_low"] <= knn["ci_high"]).all()
    assert table["value"].between(0, 100).all()
    assert (table["weights"] == "random").all()
    md = (finished_run / "results" / "table.md").read_text()
    assert "tiny_a" in md and "random-initialised" in md


@pytest.mark.slow
def test_nothing_to_do_after_a_finished_run(finished_run):
    assert planned_jobs(finished_run, TINY) == {}


@pytest.mark.slow
def test_probe_change_reruns_the_probe_not_extraction(finished_run):
    changed = copy.deepcopy(TINY)
    changed["linear"]["epochs"] = 6
    assert planned_jobs(finished_run, changed) == {"evaluate": 1, "table": 1, "summary_plot": 1,
                                                   "contrast_plot": 1}


@pytest.mark.slow
def test_added_model_runs_only_its_jobs(finished_run):
    added = copy.deepcopy(TINY)
    added["models"]["tiny_b"] = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 2}
    jobs = planned_jobs(finished_run, added)
    # 3 part splits + 2 segmentation splits; 5 part tasks + cached segmentation; the paper
    # protocol's segmentation; the table; the figures and the explorer page that show every model
    assert jobs == {"extract": 5, "evaluate": 6, "segment": 1, "table": 1, "summary_plot": 1,
                    "contrast_plot": 1, "retrieval_grid": 1, "feature_maps": 1, "explore": 1}


@pytest.mark.slow
def test_inspect_shows_and_verifies_the_cache(finished_run):
    store = finished_run / "results" / "features" / "demo_parts" / "tiny_a" / "all.zarr"
    out = subprocess.run([str(BIN / "partaware"), "inspect", str(store), "--verify"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for word in ("cls", "mean", "float16", "timm_version", "config_hash", "complete: True", "verify: OK"):
        assert word in out.stdout


def test_bad_config_stops_before_any_job(tmp_path):
    bad = copy.deepcopy(TINY)
    bad["linear"]["epochs"] = "ninety"
    result = snakemake(tmp_path, bad, "results/table.csv", check=False)
    assert result.returncode != 0
    assert "linear.epochs" in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_sharded_extraction_gives_the_same_table(finished_run, tmp_path):
    # Retrieval on the part dataset: two shard stores read through their manifest must give the
    # unsharded run's AP (a shard's rows, order and skips; every kind shares the manifest code,
    # tested per store in test_store.py, so one dataset keeps the run short)
    sharded = copy.deepcopy(TINY)
    sharded["extract"]["shards"] = 2
    sharded["datasets"] = {"demo_parts": {**sharded["datasets"]["demo_parts"], "tasks": ["retrieval"]}}
    snakemake(tmp_path, sharded, "results/table.csv")
    features = tmp_path / "results" / "features" / "demo_parts" / "tiny_a"
    assert (features / "all.shard0of2.zarr").is_dir() and (features / "all.shard1of2.zarr").is_dir()
    one = pd.read_csv(finished_run / "results" / "table.csv")
    one = one[(one["dataset"] == "demo_parts") & (one["task"] == "retrieval")]
    two = pd.read_csv(tmp_path / "results" / "table.csv")
    keys = ["dataset", "task", "label_set", "model", "feature", "protocol", "metric", "seed"]
    merged = one.merge(two, on=keys, suffixes=("_one", "_two"))
    assert len(merged) == len(one) == len(two) > 0
    assert (merged.value_one - merged.value_two).abs().max() < 1e-3

    # A killed shard job never publishes its store, so nothing downstream of it exists yet:
    # the rerun redoes that shard alone and keeps the other one.
    import shutil

    shutil.rmtree(features / "all.shard1of2.zarr")
    for path in (features / "all.shards.json", tmp_path / "results" / "table.csv",
                 tmp_path / "results" / "evals" / "demo_parts" / "tiny_a" / "retrieval.csv"):
        path.unlink()
    jobs = planned_jobs(tmp_path, sharded, "results/table.csv")
    assert jobs == {"extract": 1, "gather_shards": 1, "evaluate": 1, "table": 1}


def test_snakemake_lint_passes():
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, env=env)
    assert "Congratulations" in out.stdout + out.stderr, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.mark.slow
def test_probes_read_the_cache_and_never_run_an_encoder(finished_run, monkeypatch):
    import timm

    from partaware import config as C
    from partaware import tasks
    from partaware.results import context
    from partaware.models import encoder
    from partaware.store import open_store

    def no_encoder(*args, **kwargs):
        raise AssertionError("an evaluation tried to build an encoder")

    monkeypatch.setattr(timm, "create_model", no_encoder)
    monkeypatch.setattr(encoder, "build_encoder", no_encoder)
    monkeypatch.chdir(finished_run)
    cfg = C.validate(copy.deepcopy(TINY))
    ctx = context(cfg, "demo_parts", "tiny_a")
    features = Path("results/features/demo_parts/tiny_a")
    with open_store(features / "train.zarr") as train, open_store(features / "test.zarr") as test:
        rows = tasks.get("attentive").rows(cfg, ctx, [train, test])[0] + tasks.get("linear").rows(cfg, ctx, [train, test])[0]
    assert {r["task"] for r in rows} == {"attentive", "linear"}
    assert all(0 <= r["value"] <= 100 for r in rows)
