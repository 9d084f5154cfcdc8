"""configs/paper.yaml plans every job of the study (dry run on stand-in data and checkpoints)."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

from workflow_runner import job_stats

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())


def _stand_ins(root: Path) -> None:
    """Empty files and folders where paper.yaml expects the datasets and the two local checkpoints."""
    cub = root / "data" / "CUB_200_2011"
    for name in ("images.txt", "train_test_split.txt", "parts/parts.txt", "parts/part_locs.txt",
                 "image_class_labels.txt", "bounding_boxes.txt"):  # the last two: correspondence pairs
        (cub / name).parent.mkdir(parents=True, exist_ok=True)
        (cub / name).write_text("")
    for split in ("train", "test"):
        spec = PAPER["datasets"]["coco"][split]
        (root / spec["images"]).mkdir(parents=True, exist_ok=True)
        (root / spec["annotations"]).parent.mkdir(parents=True, exist_ok=True)
        (root / spec["annotations"]).write_text("{}")
    for name in ("ade20k", "ade20k150", "pascal_part", "lip"):
        ds = PAPER["datasets"][name]
        for folder in [ds["root"], *(s["root"] for s in ds["label_sets"].values() if "root" in s)]:
            (root / folder).mkdir(parents=True, exist_ok=True)
    (root / PAPER["datasets"]["imagenet"]["root"]).mkdir(parents=True, exist_ok=True)
    (root / PAPER["datasets"]["imagenet_patches"]["root"]).mkdir(parents=True, exist_ok=True)
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
    jobs = job_stats(out.stdout)
    models = 7
    assert jobs["fetch_checkpoint"] == models
    assert jobs["part_index"] == 2                              # cub, coco
    assert jobs["pair_table"] == 1                              # cub's correspondence pairs
    # part sets: all/train/test (no seg cache); cub: its dense maps and train/test box crops; imagenet:
    # train/val and their attentive subsets; imagenet_patches: its patch grid
    assert jobs["extract"] == models * (2 * 3 + 1 + 2 + 4 + 1)
    # 4 part tasks x 2; cub's knn, correspondence and part_discovery; imagenet's 2 probes + knn
    assert jobs["evaluate"] == models * (2 * 4 + 1 + 1 + 1 + 3)
    assert jobs["correspondence_figure"] == 1 and jobs["part_discovery_figure"] == 1
    assert jobs["segment"] == models * 4                        # the paper protocol: ade20k, ade20k150, pascal, lip
    assert jobs["retrieval_grid"] == 2 and "feature_maps" not in jobs
    assert jobs["patch_retrieval"] == jobs["patch_retrieval_projected"] == 1  # Figures 2 and 4
    assert jobs["contrast_plot"] == 1                           # ade20k and pascal_part: part and object
    assert jobs["table"] == 1
    for model in PAPER["models"]:
        assert f"results/evals/ade20k/{model}/segmentation_paper.csv" in out.stdout
        assert f"results/evals/ade20k150/{model}/segmentation_paper.csv" in out.stdout
        assert f"results/features/cub/{model}/train.zarr" in out.stdout
        assert f"results/features/cub/{model}/test_dense224.zarr" in out.stdout
        assert f"results/evals/cub/{model}/correspondence.csv" in out.stdout
        assert f"results/features/cub/{model}/train_crop224.zarr" in out.stdout
        assert f"results/evals/cub/{model}/part_discovery.csv" in out.stdout
        assert f"results/features/ade20k/{model}/train.zarr" not in out.stdout
        for store in ("train", "val", "train_attentive", "val_attentive"):
            assert f"results/features/imagenet/{model}/{store}.zarr" in out.stdout
        for task in ("linear", "attentive", "knn"):
            assert f"results/evals/imagenet/{model}/{task}.csv" in out.stdout
        assert f"results/evals/cub/{model}/knn.csv" in out.stdout
        assert f"results/features/imagenet_patches/{model}/patches.zarr" in out.stdout
        assert f"results/evals/imagenet_patches/{model}" not in out.stdout  # figures only


def test_paper_config_reads_the_segmentation_folders_as_the_authors_ship_them():
    """PROTOCOL section 5's table: ADE20K-Part, Pascal-Part, LIP img/ and ann/; ADE20K-Object (59)
    and ADE20K-150 images/ and annotations/ {training,validation}."""
    from partaware.data.segfolder import image_folder, label_folder

    def folders(name, label_set, split):
        ds = PAPER["datasets"][name]
        spec = ds["label_sets"][label_set]
        root, layout = Path(spec.get("root", ds["root"])), spec.get("layout", ds.get("layout", "mmseg"))
        return (image_folder(root, split, layout, spec.get("images") or ds.get("images")).relative_to(root).as_posix(),
                label_folder(root, split, layout, spec.get("labels"), spec.get("dir")).relative_to(root).as_posix())

    for name in ("ade20k", "pascal_part", "lip"):
        assert folders(name, "part", "train") == ("img/train", "ann/train")
        assert folders(name, "part", "val") == ("img/val", "ann/val")
    for name in ("ade20k150", "ade20k"):
        assert folders(name, "object", "train") == ("images/training", "annotations/training")
        assert folders(name, "object", "val") == ("images/validation", "annotations/validation")
    assert PAPER["datasets"]["ade20k150"]["label_sets"]["object"]["classes"] == 150
