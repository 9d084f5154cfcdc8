"""configs/paper.yaml plans every job of the study (dry run on stand-in data and checkpoints)."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())


def _stand_ins(root: Path) -> None:
    """Empty files and folders where paper.yaml expects the datasets and the two local checkpoints."""
    cub = root / "data" / "CUB_200_2011"
    for name in ("images.txt", "train_test_split.txt", "parts/parts.txt", "parts/part_locs.txt"):
        (cub / name).parent.mkdir(parents=True, exist_ok=True)
        (cub / name).write_text("")
    for split in ("train", "test"):
        spec = PAPER["datasets"]["coco"][split]
        (root / spec["images"]).mkdir(parents=True, exist_ok=True)
        (root / spec["annotations"]).parent.mkdir(parents=True, exist_ok=True)
        (root / spec["annotations"]).write_text("{}")
    for name in ("ade20k", "pascal_part", "lip"):
        (root / PAPER["datasets"][name]["root"]).mkdir(parents=True, exist_ok=True)
    for model in PAPER["models"].values():
        if "path" in model:
            (root / model["path"]).parent.mkdir(parents=True, exist_ok=True)
            (root / model["path"]).write_bytes(b"stand-in")


def test_paper_config_lists_every_job_of_the_study(tmp_path):
    _stand_ins(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(REPO / "configs" / "paper.yaml"), "-n", "--cores", "8"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = {}
    for line in out.stdout.split("Job stats:")[1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        jobs[parts[0]] = int(parts[1])
    models = 7
    assert jobs["fetch_checkpoint"] == models
    assert jobs["part_index"] == 2                              # cub, coco
    assert jobs["extract"] == models * 2 * 3                    # part sets: all/train/test (no seg cache)
    assert jobs["evaluate"] == models * 2 * 4                   # 4 part tasks x 2
    assert jobs["segment"] == models * 3                        # the paper protocol: ade20k, pascal, lip
    assert jobs["retrieval_grid"] == 2 and "feature_maps" not in jobs
    assert jobs["table"] == 1
    for model in PAPER["models"]:
        assert f"results/evals/ade20k/{model}/segmentation_paper.csv" in out.stdout
        assert f"results/features/cub/{model}/train.zarr" in out.stdout
        assert f"results/features/ade20k/{model}/train.zarr" not in out.stdout
