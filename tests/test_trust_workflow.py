"""Issue 35, end to end: the real CUB annotations (all 11,788 images) with only a few JPEGs on
disk, `data.on_bad_image: skip`, tasks knn (default k) and correspondence. The run completes;
correspondence rests on the pairs the test images on disk allow, its rows say so and are marked;
the figure draws scored pairs; the logs say what each job did."""
import re

import pandas as pd
import pytest
from workflow_runner import snakemake

import partaware

MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "timm_kwargs": {"depth": 2}}


@pytest.fixture(scope="module")
def run(real_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("trust")
    cfg = {"seed": 0, "device": "cpu", "data": {"on_bad_image": "skip"},
           "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 16},
           "extract": {"batch_size": 16, "num_workers": 0, "shards": 1},
           "datasets": {"cub": {"kind": "cub", "root": str(real_data / "cub" / "CUB_200_2011"), "max_images": 12,
                                "parts": [11, 12, 9, 14], "size": 64, "resize": 72,
                                "tasks": ["knn", "correspondence"]}},
           "models": {"tiny": MODEL}, "correspondence": {"size": 64}, "stats": {"bootstrap": 50}}
    result = snakemake(work, cfg)
    return work, result


def log(work, *parts) -> str:
    return (work / "results" / "logs").joinpath(*parts).read_text()


def test_correspondence_rests_on_the_pairs_the_images_on_disk_allow(run):
    work, _ = run
    table = pd.read_csv(work / "results" / "table.csv")
    rows = table[table["task"] == "correspondence"]
    assert len(rows) and set(rows["protocol"]) == {"exact"}
    # ids 1-12: test images 1, 3, 6, 10, 12; on disk 1, 3, 6 (one class): 6 ordered pairs
    assert rows["notes"].str.contains("6 pairs scored; all 6 pairs its 3 usable test images allow").all()
    assert (rows["images"] == 3).all() and (rows["skipped"] == 2).all()
    md = (work / "results" / "table.md").read_text()
    marked = [line for line in md.splitlines() if line.startswith("| cub | correspondence")]
    assert marked and all("(n=" in line and "60.0 % of images" in line for line in marked)
    assert all(line.split(" | ")[7] == "60.0 %" for line in marked)  # `images used` filled
    warning = next(line for line in log(work, "table.log").splitlines() if "rest on too little" in line)
    thin = int(re.search(r"cub: (\d+) result rows", warning).group(1))
    assert thin >= len(rows)


def test_knn_default_k_runs_on_a_small_database_and_says_it_clamped(run):
    work, _ = run
    table = pd.read_csv(work / "results" / "table.csv")
    knn = table[(table["task"] == "knn") & (table["metric"] == "knn_top1@20")]
    assert len(knn) and knn["notes"].str.contains(r"k clamped to \d+: the database holds").all()
    text = log(work, "evaluate", "cub", "tiny", "knn.log")
    assert "AVX" not in text and "ModuleNotFoundError" not in text
    assert re.search(r"evaluate: done, \d+ result rows, knn: \d+ queries scored, resting on \d+ images", text)


def test_the_figure_draws_scored_pairs_and_the_logs_say_what_was_done(run):
    work, result = run
    text = log(work, "figures", "cub", "correspondence.log")
    assert "3 scored pairs drawn" in text and "not scored" not in text
    assert "figure-correspondence: done, 1 figure drawn" in text
    assert (work / "results" / "figures" / "cub" / "correspondence.png").stat().st_size > 1000
    extract = log(work, "extract", "cub", "tiny", "train.log")
    assert re.search(r"extract: done, (\d+) rows computed, \d+ rows of skipped images left empty, \d+ images skipped",
                     extract)
    computed = re.search(r"extract: done, (\d+) rows computed", extract).group(1)
    assert f"extract cub/tiny/train: done, {computed} rows in " in extract  # its rate: computed rows only
    assert "GPU job(s)" not in result.stderr and "run on the CPU" in result.stderr


def test_open_features_joins_the_image_of_a_dense_store(run):
    work, _ = run
    with partaware.open_features(work / "results" / "features" / "cub" / "tiny" / "test_dense64.zarr") as f:
        index = f.index
    assert {"image", "image_key"} <= set(index.columns)
    on_disk = index[index["valid"]]
    assert len(on_disk) == 3 and on_disk["image"].str.endswith(".jpg").all()
