"""The benchmark scripts run at a tiny size and print one JSON line with the expected keys.

They run with zarr, faiss, snakemake and jsonschema made unimportable, as on the GPU machine
that bench/gpu_check.sh targets. No timing is asserted.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from partaware.evals import resized_ce

BENCH = Path(__file__).resolve().parents[1] / "bench"
WITHOUT = ("zarr", "faiss", "snakemake", "jsonschema")
# run a script with some top-level packages unimportable
BLOCKED = f"""
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {WITHOUT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

EXTRACT_KEYS = {"bench", "device", "model", "precision", "size", "batch_size", "workers", "store",
                "n_images", "n_patches", "c_n_patches", "a_patches_per_s", "b_patches_per_s",
                "b_end_to_end_patches_per_s", "c_patches_per_s", "ratio_b_a", "ratio_b_c",
                "peak_host_rss_mb", "peak_worker_rss_mb", "peak_device_mb", "torch"}
RETRIEVAL_KEYS = {"bench", "device", "n", "dim", "classes", "seconds", "sklearn_s_per_query",
                  "sklearn_extrapolated_s", "ratio_sklearn_over_ours", "sample", "max_abs_diff",
                  "agree", "AP", "mAP", "peak_host_rss_mb", "peak_device_mb"}


def run_bench(script: str, *args: str, blocked=True) -> dict:
    cmd = [sys.executable, "-c", BLOCKED] if blocked else [sys.executable]
    proc = subprocess.run([*cmd, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


def test_extract_bench(tmp_path):
    out = run_bench("extract.py", "--images", "6", "--size", "32", "--batch-size", "8", "--workers", "1",
                    "--model", "vit_tiny_patch16_224", "--workdir", str(tmp_path))
    assert EXTRACT_KEYS <= set(out)
    assert out["bench"] == "extract" and out["store"] == "hdf5" and out["n_images"] == 6
    assert out["n_patches"] == out["c_n_patches"] > 6
    assert all(out[k] > 0 for k in ("a_patches_per_s", "b_patches_per_s", "c_patches_per_s"))
    waited = out["b_waited_s"]  # where (b)'s loop time went
    assert set(waited) == {"loader", "step", "device", "store"} and 0 < sum(waited.values()) <= out["b_loop_s"]


def test_retrieval_bench():
    out = run_bench("retrieval.py", "--n", "600", "--dim", "32", "--sample", "20")
    assert RETRIEVAL_KEYS <= set(out)
    assert out["n"] == 600 and out["sample"] == 20 and out["agree"] is True and 0 < out["AP"] <= 1


def test_retrieval_bench_faiss_recall():
    pytest.importorskip("faiss")
    out = run_bench("retrieval.py", "--n", "2000", "--dim", "32", "--sample", "5", "--faiss-recall",
                    "--k", "5", "--nlist", "16", "--nprobe", "4", blocked=False)
    assert 0 < out["faiss_recall_at_k"] <= 1 and out["faiss_k"] == 5


def test_segmentation_bench():
    out = run_bench("segmentation.py", "--model", "vit_tiny_patch16_224", "--size", "64", "--batch", "2",
                    "--classes", "5", "--repeats", "1")
    assert out["bench"] == "segmentation" and out["feature_channels"] == 4 * 192
    assert out["backbone_forward_s"] > 0 and out["probe_iteration_s"] > 0
    # the fused loss runs exactly where resized_cross_entropy(fused=None) picks it: CUDA with Triton
    fused = torch.cuda.is_available() and resized_ce.triton is not None
    assert out["fused_loss"] is fused
    if fused:  # the unfused loss is timed too, as the baseline
        assert out["probe_iteration_unfused_s"] > 0
    else:  # the unfused loss is the baseline and the path
        assert out["probe_iteration_unfused_s"] == out["probe_iteration_s"]


def test_segmentation_paper_protocol_bench():
    """`bench/segmentation.py --protocol paper`: one line per preset and the projection line."""
    cmd = [sys.executable, "-c", BLOCKED, str(BENCH / "segmentation.py"), "--protocol", "paper",
           "--model", "vit_tiny_patch16_224", "--presets", "lip", "ade20k", "--scale", "0.15",
           "--batch", "2", "--iters", "1", "--images", "3", "--workers", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [line["bench"] for line in lines] == ["segmentation_paper"] * 2 + ["segmentation_paper_projection"]
    lip, ade, projection = lines
    assert lip["heads"] == [19] and ade["heads"] == [209, 59] and ade["crop"] > lip["crop"]
    for line in (lip, ade):
        assert all(line[k] > 0 for k in ("data_s", "forward_s", "heads_s", "step_s", "slide_image_s"))
        # the line's seconds are rounded (to 5 decimals): compare the ratio relatively
        assert line["ratio_step_over_forward"] == pytest.approx(line["step_s"] / line["forward_s"], rel=2e-3, abs=0.01)
    assert projection["projected_hours"] == round(lip["projected_hours_7_encoders"]
                                                  + ade["projected_hours_7_encoders"], 2)
    assert projection["meets_target"] is False  # a scaled-down CPU run never claims the target


def test_seg_loader_bench_gives_identical_views():
    """`bench/seg_loader.py`: the loader now and before, timed on the same draws, same views."""
    out = run_bench("seg_loader.py", "--draws", "3", "--images", "2")
    assert out["bench"] == "seg_loader" and out["identical_views"] is True
    assert out["ms_per_image"] > 0 and out["ms_per_image_old"] > 0


def test_knn_bench(tmp_path):
    pytest.importorskip("faiss")
    out = run_bench("knn.py", "--n", "3000", "--queries", "300", "--dim", "32", "--classes", "30",
                    "--workdir", str(tmp_path), blocked=False)
    assert out["bench"] == "knn" and out["n"] == 3000 and out["queries"] == 300 and out["protocol"] == "exact"
    assert out["k_searched"] >= 20 and out["queries_per_s"] > 0 and out["top1_agree"] == 1.0
    assert 0 <= out["MAP@R"] <= out["R-precision"] <= 1 and out["baseline_s"] > 0

