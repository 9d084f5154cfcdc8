"""Bad data, bad checkpoints and stale stores, through the `partaware` commands the rules run.

The commands run in-process (`cli.main([...])`, the same argument parsing and error handling as
the console script) on a small generated CUB-layout dataset; each fault must end in exit code 1
and one `partaware <command>: error:` line naming the file (and line, or value) and the fix,
with nothing published at the output path. The parsers' own unit tests (test_data_*.py,
test_checkpoints.py, test_models_encoder.py) cover the message details; these cover the path
from the command line.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image

from partaware import specs
from partaware import config as C
from partaware.data.demo import generate_demo_cub
from partaware.data.images import crop_patch, load_rgb
from partaware.store import open_store
from cli_runner import run_cli

TINY = {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}}
RUNTIME = json.dumps({"device": "cpu", "extract": {"batch_size": 16, "num_workers": 0}})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def partaware(capsys, *argv) -> tuple[int, str]:
    """Run one command; (exit code, its error line or '')."""
    return run_cli(capsys, *argv)[:2]


def spec(cfg: dict, dataset: str = "birds", model: str | None = None, sections=()) -> str:
    """What rules/common.smk passes a job as --spec."""
    out = {k: cfg[k] for k in ("seed", "cache", "data", *sections)}
    out["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    out["datasets"] = {dataset: cfg["datasets"][dataset]}
    out["models"] = {model: cfg["models"][model]} if model else {}
    return json.dumps(out, sort_keys=True)


def make_cfg(root: Path, on_bad_image="error", **models) -> dict:
    return C.validate({
        "seed": 0, "device": "cpu",
        "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 8},
        "extract": {"batch_size": 16, "num_workers": 0},
        "data": {"on_bad_image": on_bad_image},
        "datasets": {"birds": {"kind": "cub", "root": str(root), "parts": [11, 12, 9, 14], "size": 32,
                               "resize": 40, "tasks": ["retrieval"]}},
        "models": models or {"rnd": {**TINY, "weights": "random", "seed": 1}},
        "retrieval": {"features": ["mean", "cls"], "memory_mb": 16},
    })


@pytest.fixture
def cub(tmp_path) -> Path:
    return generate_demo_cub(tmp_path / "CUB_200_2011", n_images=6, seed=0)


def index(capsys, cfg, outdir: Path) -> tuple[int, str]:
    return partaware(capsys, "index", "--spec", spec(cfg), "--dataset", "birds", "--outdir", outdir)


def extract(capsys, cfg, model, index_path, out, checkpoint=None) -> tuple[int, str]:
    extra = ["--checkpoint", checkpoint] if checkpoint else []
    return partaware(capsys, "extract", "--spec", spec(cfg, model=model), "--runtime", RUNTIME,
                     "--dataset", "birds", "--model", model, "--split", "all", "--index", index_path,
                     "--out", out, *extra)


def edit_line(path: Path, number: int, text: str) -> str:
    lines = path.read_text().splitlines()
    old, lines[number - 1] = lines[number - 1], text
    path.write_text("\n".join(lines) + "\n")
    return old


# --------------------------------------------------------------------------- annotations
def test_wrong_column_count_names_file_and_line(cub, tmp_path, capsys):
    old = edit_line(cub / "parts" / "part_locs.txt", 17, "2 2 140.0 61.0")
    assert len(old.split()) == 5
    code, error = index(capsys, make_cfg(cub), tmp_path / "index")
    assert code == 1
    assert f"{cub / 'parts' / 'part_locs.txt'}:17: expected 5 columns, found 4" in error
    assert "restore this line" in error
    assert not (tmp_path / "index").exists()


def test_empty_split_names_the_split(cub, tmp_path, capsys):
    split = cub / "train_test_split.txt"
    split.write_text("".join(f"{line.split()[0]} 1\n" for line in split.read_text().splitlines()))
    code, error = index(capsys, make_cfg(cub), tmp_path / "index")
    assert code == 1 and "split 'test'" in error and "no part patches" in error


def test_missing_image_error_mode_names_it_skip_mode_indexes_it(cub, tmp_path, capsys):
    gone = sorted((cub / "images").rglob("*.jpg"))[1]
    gone.unlink()
    code, error = index(capsys, make_cfg(cub), tmp_path / "index")
    assert code == 1 and str(gone) in error and "on_bad_image: skip" in error
    code, _ = index(capsys, make_cfg(cub, on_bad_image="skip"), tmp_path / "index")
    assert code == 0  # extraction then skips it and lists it (test_faults_workflow.py)
    assert str(gone) in set(pd.read_parquet(tmp_path / "index" / "all.parquet")["image_path"])


def test_keypoint_outside_the_image_gives_a_zero_filled_crop(cub, tmp_path, capsys):
    """As the released code: the keypoint is kept and PIL zero-fills the crop outside the image."""
    locs = cub / "parts" / "part_locs.txt"
    lines = locs.read_text().splitlines()
    cfg = make_cfg(cub)
    moved = None
    for n, line in enumerate(lines, 1):  # the first selected visible keypoint that stays indexed at x = -5
        i, p, x, y, v = line.split()
        if v == "1" and int(p) in (11, 12, 9, 14):
            edit_line(locs, n, f"{i} {p} -5.0 {y} 1")
            if index(capsys, cfg, tmp_path / "index")[0] == 0:
                rows = pd.read_parquet(tmp_path / "index" / "all.parquet")
                hit = rows[(rows.image_id == int(i)) & (rows.part_id == int(p))]
                if len(hit):
                    moved = hit.iloc[0]
                    break
            edit_line(locs, n, line)
    assert moved is not None and moved.x == -5.0 and moved.x0 < 0 < moved.x1

    image = load_rgb(moved.image_path)
    box = (int(moved.x0), int(moved.y0), int(moved.x1), int(moved.y1))
    patch = np.asarray(crop_patch(image, box))
    outside = -box[0]  # columns left of the image
    assert patch.shape[:2] == (box[3] - box[1], box[2] - box[0])
    assert not patch[:, :outside].any()
    top, bottom = max(0, -box[1]), min(patch.shape[0], image.height - box[1])
    np.testing.assert_array_equal(patch[top:bottom, outside:],
                                  np.asarray(image)[box[1] + top:box[1] + bottom, :box[2]])
    far = crop_patch(image, (-300, 10, -260, 50))  # entirely outside: all zero, still a patch
    assert far.size == (40, 40) and not np.asarray(far).any()

    code, error = extract(capsys, cfg, "rnd", tmp_path / "index" / "all.parquet", tmp_path / "all.zarr")
    assert code == 0, error
    with open_store(tmp_path / "all.zarr") as store:
        assert store.read("valid").all() and np.isfinite(store.read("cls").astype(np.float32)).all()


def test_image_that_does_not_hold_its_keypoints_is_a_bad_input(cub, tmp_path, capsys):
    """A 1 x 1 image in place of the annotated one: every crop box lies outside it. Error mode
    names the image and box; skip mode leaves its patches out (valid = 0) and lists why."""
    code, _ = index(capsys, make_cfg(cub), tmp_path / "index")
    assert code == 0
    rows = pd.read_parquet(tmp_path / "index" / "all.parquet")
    tiny = Path(rows.image_path.iloc[0])
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny, format="JPEG")
    code, error = extract(capsys, make_cfg(cub), "rnd", tmp_path / "index" / "all.parquet", tmp_path / "e.zarr")
    assert code == 1 and str(tiny) in error and "1x1 image" in error and "on_bad_image: skip" in error
    assert not (tmp_path / "e.zarr").exists()
    code, error = extract(capsys, make_cfg(cub, on_bad_image="skip"), "rnd", tmp_path / "index" / "all.parquet",
                          tmp_path / "s.zarr")
    assert code == 0, error
    with open_store(tmp_path / "s.zarr") as store:
        valid = store.read("valid").astype(bool)
        bad = (rows.image_path == str(tiny)).to_numpy()
        np.testing.assert_array_equal(valid, ~bad)
        reasons = store.attrs["skipped_images"]
        assert len(reasons) == bad.sum() and all(str(tiny) in r and "does not overlap" in r for r in reasons)


def test_segmentation_image_below_the_minimum_side_is_a_bad_input(tmp_path, capsys):
    from partaware.data.demo_seg import generate_demo_seg

    root = generate_demo_seg(tmp_path / "seg", n_train=2, n_val=2, size=48, seed=0)
    small = sorted((root / "img" / "val").glob("*.jpg"))[0]
    Image.new("RGB", (1, 1)).save(small, format="JPEG")
    Image.new("L", (1, 1)).save(root / "ann" / "val" / f"{small.stem}.png")
    for on_bad_image in ("error", "skip"):
        cfg = C.validate({"device": "cpu", "data": {"on_bad_image": on_bad_image},
                          "extract": {"batch_size": 4, "num_workers": 0}, "segmentation": {"protocol": "cached"},
                          "datasets": {"seg": {"kind": "segfolder", "root": str(root), "size": 32, "blocks": [1],
                                               "label_sets": {"part": {"dir": "ann", "classes": 6}},
                                               "tasks": ["segmentation"]}},
                          "models": {"rnd": {**TINY, "weights": "random", "seed": 1}}})
        out = tmp_path / f"{on_bad_image}.zarr"
        code, error = partaware(capsys, "extract", "--spec", spec(cfg, "seg", "rnd"), "--runtime", RUNTIME,
                                "--dataset", "seg", "--model", "rnd", "--split", "val", "--out", out)
        if on_bad_image == "error":
            assert code == 1 and str(small) in error and "1x1 px" in error
        else:
            assert code == 0, error
            with open_store(out) as store:
                assert store.read("valid").tolist() == [0, 1]
                assert str(small) in store.attrs["skipped_images"][0]


# --------------------------------------------------------------------------- segmentation labels
@pytest.mark.parametrize("on_bad_image", ["error", "skip"])
def test_label_value_outside_the_classes_names_file_and_value(tmp_path, capsys, on_bad_image):
    """A label outside the declared classes is an error in both modes (it would corrupt mIoU)."""
    from partaware.data.demo_seg import generate_demo_seg

    root = generate_demo_seg(tmp_path / "seg", n_train=2, n_val=1, size=32, seed=0)
    label = root / "ann" / "train" / "0001.png"
    values = np.array(Image.open(label))
    values[0, :3] = 200
    Image.fromarray(values).save(label)
    cfg = C.validate({
        "device": "cpu", "data": {"on_bad_image": on_bad_image}, "segmentation": {"protocol": "cached"},
        "datasets": {"seg": {"kind": "segfolder", "root": str(root), "size": 32, "blocks": [1, 2],
                             "label_sets": {"part": {"dir": "ann", "classes": 6}}, "tasks": ["segmentation"]}},
        "models": {"rnd": {**TINY, "weights": "random"}},
    })
    out = tmp_path / "train.zarr"
    code, error = partaware(capsys, "extract", "--spec", spec(cfg, "seg", "rnd"), "--runtime", RUNTIME,
                            "--dataset", "seg", "--model", "rnd", "--split", "train", "--out", out)
    assert code == 1
    assert str(label) in error and "200" in error and "6 classes" in error
    assert not out.exists()


# --------------------------------------------------------------------------- checkpoints
def _state_dict(arch="vit_tiny_patch16_224", seed=0):
    torch.manual_seed(seed)
    return timm.create_model(arch, num_classes=0, depth=2, img_size=32).state_dict()


@pytest.fixture
def cub_index(cub, tmp_path, capsys) -> Path:
    assert index(capsys, make_cfg(cub), tmp_path / "index")[0] == 0
    return tmp_path / "index" / "all.parquet"


def _checkpoint_model(path, **extra):
    return {"ck": {**TINY, "weights": "checkpoint", "format": "timm", "path": str(path), **extra}}


def test_fetch_refuses_a_hash_mismatch_naming_expected_and_found(cub, tmp_path, capsys):
    ckpt = tmp_path / "weights.pth"
    torch.save(_state_dict(), ckpt)
    cfg = make_cfg(cub, **_checkpoint_model(ckpt, sha256="ab" * 32))
    out = tmp_path / "resources" / "ck.pth"
    code, error = partaware(capsys, "fetch", "--spec", spec(cfg, model="ck"), "--model", "ck", "--out", out)
    assert code == 1 and "sha256 mismatch" in error
    assert f"expected {'ab' * 32}" in error and "found " in error and str(ckpt) in error
    assert not out.exists() and not out.is_symlink()


def test_fetch_refuses_an_html_page(cub, tmp_path, capsys):
    ckpt = tmp_path / "weights.pth"
    ckpt.write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>quota</body></html>")
    cfg = make_cfg(cub, **_checkpoint_model(ckpt))
    out = tmp_path / "resources" / "ck.pth"
    code, error = partaware(capsys, "fetch", "--spec", spec(cfg, model="ck"), "--model", "ck", "--out", out)
    assert code == 1 and "HTML page" in error and str(ckpt) in error
    assert not out.exists() and not out.is_symlink()


@pytest.mark.parametrize("fault", ["truncated", "wrong architecture"])
def test_extract_refuses_a_bad_checkpoint_and_publishes_nothing(fault, cub, cub_index, tmp_path, capsys):
    ckpt = tmp_path / "weights.pth"
    if fault == "truncated":
        torch.save(_state_dict(), ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:20000])
    else:
        torch.save(_state_dict("vit_small_patch16_224"), ckpt)  # a ViT-S file for a ViT-Ti model
    cfg = make_cfg(cub, **_checkpoint_model(ckpt))
    linked = tmp_path / "resources" / "ck.pth"
    code, _ = partaware(capsys, "fetch", "--spec", spec(cfg, model="ck"), "--model", "ck", "--out", linked)
    assert code == 0  # no sha256 pinned: fetch can only check it is a file and not a web page
    out = tmp_path / "all.zarr"
    code, error = extract(capsys, cfg, "ck", cub_index, out, checkpoint=linked)
    assert code == 1
    if fault == "truncated":
        assert "cannot read checkpoint" in error and "truncated" in error and "fetch it again" in error
    else:
        assert "wrong backbone tensor shapes" in error
        assert "checkpoint (1, 1, 384) vs model (1, 1, 192)" in error  # found vs expected
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()


# --------------------------------------------------------------------------- stale store
def test_evaluate_refuses_a_store_built_for_another_config(cub, cub_index, tmp_path, capsys):
    cfg = make_cfg(cub)
    store = tmp_path / "all.zarr"
    assert extract(capsys, cfg, "rnd", cub_index, store)[0] == 0
    built = open_store(store).attrs["config_hash"]

    def evaluate(cfg, out):
        return partaware(capsys, "evaluate", "--spec", spec(cfg, model="rnd", sections=("retrieval",)),
                         "--runtime", RUNTIME, "--task", "retrieval", "--dataset", "birds",
                         "--model", "rnd", "--out", out, store)

    assert evaluate(cfg, tmp_path / "ok.csv")[0] == 0
    assert len(pd.read_csv(tmp_path / "ok.csv")) == 4

    other = copy.deepcopy(cfg)
    other["datasets"]["birds"]["size"] = 48  # the store now is stale for this spec
    expected = C.digest(specs.store_signature(other, "birds", "rnd", "all"))
    code, error = evaluate(other, tmp_path / "stale.csv")
    assert code == 1
    assert built in error and expected in error and str(store) in error and "rebuild" in error
    assert not (tmp_path / "stale.csv").exists()
