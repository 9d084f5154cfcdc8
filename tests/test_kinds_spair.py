"""Kind `spair` (kinds/spair.py) and the correspondence wiring of the kinds with keypoint pairs:
config checks, a workflow run on real SPair-71k annotation samples (pair table and details, dense
store, evaluation, table with the rows by difficulty bucket and on the geometry-aware subset), and
the workflow's plan for a CUB-kind and an SPair-kind dataset."""
import pandas as pd
import pytest
from workflow_runner import planned_jobs, snakemake

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


def test_workflow_table_has_rows_by_bucket_and_on_the_geometry_aware_subset(spair, tmp_path):
    """The workflow on the real annotations (one tiny encoder): the pair table and its details, the
    dense store, the task's rows, and table.csv / table.md with the reporting splits."""
    raw = raw_cfg(spair)
    work = tmp_path / "run"
    work.mkdir()
    snakemake(work, raw, "results/table.csv")
    index = work / "results" / "index" / "sp"
    pairs = pd.read_parquet(index / "pairs.parquet")
    assert pairs["pair"].nunique() == 3 and set(pairs["category"]) == {"aeroplane"}
    assert len(pd.read_parquet(index / "pair_details.parquet")) == len(pairs)
    rows = pd.read_csv(work / "results" / "evals" / "sp" / "tiny" / "correspondence.csv")
    main = rows[~rows["metric"].str.contains(r"\[| per ", regex=True)]
    assert set(main["metric"]) == {"PCK@0.05", "PCK@0.1", "PCK@0.15", "left_right_confusion"}
    pck = main[main["metric"] == "PCK@0.1"].iloc[0]
    assert pck["n"] == int(pairs["visible"].sum()) and 0 <= pck["value"] <= 100
    per_part = pd.read_csv(work / "results" / "evals" / "sp" / "tiny" / "correspondence_per_part.csv")
    assert set(per_part["part"]) == set(pairs["part"])
    # the reporting splits (pair_details.parquet): the buckets present in the real files, the geo subset
    table = pd.read_csv(work / "results" / "table.csv")
    splits = table[(table["dataset"] == "sp") & table["metric"].str.contains(r"\[| per ", regex=True)]
    assert {"PCK@0.1 per pair", "PCK@0.1 [viewpoint_variation=0]", "PCK@0.1 [viewpoint_variation=1]",
            "PCK@0.1 [truncation=2] per point", "PCK@0.1 [occlusion=1]", "PCK@0.1 [geo-aware]",
            "left_right_confusion [geo-aware]"} <= set(splits["metric"])
    assert set(splits["model"]) == {"tiny"} and splits["value"].dropna().between(0, 100).all()
    geo = splits[splits["metric"] == "PCK@0.1 [geo-aware] per point"].iloc[0]
    assert geo["n"] == 6 and "geometry-aware: 2 of 3 pairs, 6 of 16 keypoints" in geo["notes"]
    md = (work / "results" / "table.md").read_text()
    section = md.split("## Part correspondence by difficulty and subset")[1].split("\n## ")[0]
    assert "| model | per pair | [viewpoint_variation=0] |" in section and "| [geo-aware] |" in section
    assert [ln.split(" |")[0] for ln in section.splitlines() if ln.startswith("| tiny")] == ["| tiny"]
    plain = md.split("## Part correspondence (keypoint transfer")[1].split("\n## ")[0]
    assert "[geo-aware]" not in plain  # the plain section keeps the task's own metrics


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
