"""bench/precision.py runs at a tiny size without zarr, faiss, snakemake or jsonschema (as on the
GPU machine) and prints both precisions' results and their differences for the three metrics."""
from test_bench import run_bench


def test_precision_bench_compares_both_arms_on_every_metric(tmp_path):
    out = run_bench("precision.py", "--against", "bf16", "--images", "8", "--seg-images", "2", "2",
                    "--size", "32", "--iters", "4", "--epochs", "1", "--workdir", str(tmp_path))
    assert out["bench"] == "precision" and out["against_compute"] == "bfloat16"
    assert set(out["fp32"]) == set(out["bf16"]) == set(out["diff"])
    for metric in ("retrieval AP", "linear top1_best_epoch", "segmentation mIoU"):
        assert metric in out["max_abs_diff_by_metric"]
    for key, d in out["diff"].items():
        assert abs(out["bf16"][key] - out["fp32"][key] - d) < 1e-5
