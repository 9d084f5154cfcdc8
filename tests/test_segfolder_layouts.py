"""Segmentation folders as the authors ship them: the mmseg and ade layouts, explicit per-split
folders, label sets shipped in another release, the errors a mismatch gives, and extraction
(`partaware extract`) reading both layouts to the same store."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from partaware import cli
from partaware import config as C
from partaware import kinds
from partaware.data.demo_seg import generate_demo_seg
from partaware.data.errors import DataError
from partaware.data.segfolder import image_folder, label_folder, list_samples
from partaware.store import open_store

TINY = {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}, "weights": "random", "seed": 1}
RUNTIME = json.dumps({"device": "cpu", "extract": {"batch_size": 8, "num_workers": 0}})
ADE = {"train": "training", "val": "validation"}


def _write(root: Path, img_dir: str | None, label_dirs, stems) -> None:
    """Tiny JPEGs under root/img_dir and one label PNG per stem in each of root/label_dirs."""
    for stem in stems:
        if img_dir:
            p = root / img_dir / f"{stem}.jpg"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 18), (90, 40, 10)).save(p)
        for d in label_dirs:
            q = root / d / f"{stem}.png"
            q.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ones((18, 20), np.uint8)).save(q)


# --------------------------------------------------------------------------------- the layouts
def test_mmseg_is_the_default_layout_and_label_dirs_still_work(tmp_path):
    _write(tmp_path, "img/train", ["ann/train", "ann_object/train"], ["b", "a"])
    old = list_samples(tmp_path, "train", {"part": "ann", "object": "ann_object"})
    new = list_samples(tmp_path, "train", {"part": {"dir": "ann", "classes": 6},
                                           "object": {"dir": "ann_object", "classes": 3}})
    assert old == new
    assert [s["id"] for s in new] == ["a", "b"]
    assert new[0] == {"id": "a", "img": tmp_path / "img/train/a.jpg", "part": tmp_path / "ann/train/a.png",
                      "object": tmp_path / "ann_object/train/a.png"}
    # the mmseg preset's default label folder is ann
    assert list_samples(tmp_path, "train", {"part": {"classes": 6}})[1]["part"] == tmp_path / "ann/train/b.png"


def test_ade_layout_reads_training_and_validation(tmp_path):
    for split, folder in ADE.items():
        _write(tmp_path, f"images/{folder}", [f"annotations/{folder}"], [f"ADE_{split}_0001", f"ADE_{split}_0002"])
        samples = list_samples(tmp_path, split, {"object": {"classes": 150}}, layout="ade")
        assert [s["img"] for s in samples] == [tmp_path / f"images/{folder}/ADE_{split}_000{i}.jpg" for i in (1, 2)]
        assert samples[0]["object"] == tmp_path / f"annotations/{folder}/ADE_{split}_0001.png"
    assert image_folder(tmp_path, "val", "ade") == tmp_path / "images/validation"
    assert label_folder(tmp_path, "train", "ade") == tmp_path / "annotations/training"
    assert label_folder(tmp_path, "train", "mmseg", dir="ann_object") == tmp_path / "ann_object/train"


def test_explicit_folders_override_the_preset_per_split(tmp_path):
    _write(tmp_path, "pics/tr", ["masks/tr"], ["x"])            # train: explicit folders
    _write(tmp_path, "img/val", ["ann/val"], ["y"])             # val: the preset's
    abs_masks = tmp_path / "elsewhere" / "val_masks"
    _write(tmp_path, None, [abs_masks], ["y"])
    sets = {"part": {"classes": 6, "labels": {"train": "masks/tr", "val": str(abs_masks)}}}
    train = list_samples(tmp_path, "train", sets, images={"train": "pics/tr"})
    assert train == [{"id": "x", "img": tmp_path / "pics/tr/x.jpg", "part": tmp_path / "masks/tr/x.png"}]
    val = list_samples(tmp_path, "val", sets, images={"train": "pics/tr"})
    assert val == [{"id": "y", "img": tmp_path / "img/val/y.jpg", "part": abs_masks / "y.png"}]


def test_label_set_from_another_release_with_the_same_images_shares_the_run(tmp_path):
    part, obj = tmp_path / "ADE20K_Part", tmp_path / "ade_59object"
    _write(part, "img/train", ["ann/train"], ["ADE_1", "ADE_2"])
    _write(obj, "images/training", ["annotations/training"], ["ADE_1", "ADE_2"])
    samples = list_samples(part, "train", {"part": {"dir": "ann", "classes": 209},
                                           "object": {"root": str(obj), "layout": "ade", "classes": 59}})
    assert [s["img"] for s in samples] == [part / "img/train/ADE_1.jpg", part / "img/train/ADE_2.jpg"]
    assert [s["object"] for s in samples] == [obj / "annotations/training/ADE_1.png",
                                              obj / "annotations/training/ADE_2.png"]


def test_label_set_over_other_images_is_one_error_naming_the_files(tmp_path):
    part, obj = tmp_path / "ADE20K_Part", tmp_path / "ade_59object"
    _write(part, "img/train", ["ann/train"], ["a", "b", "c"])
    _write(obj, "images/training", ["annotations/training"], ["a", "b", "c", "d", "e", "f", "g"])
    (part / "img/train/c.jpg").rename(part / "img/train/z.jpg")
    _write(part, None, ["ann/train"], ["z"])
    with pytest.raises(DataError) as err:
        list_samples(part, "train", {"part": {"dir": "ann", "classes": 209},
                                     "object": {"root": str(obj), "layout": "ade", "classes": 59}})
    msg = str(err.value)
    assert "label set 'object'" in msg and str(obj / "images/training") in msg and str(part / "img/train") in msg
    assert f"5 only in {obj / 'images/training'} (c, d, e, ...)" in msg     # the first few stems only
    assert f"1 only in {part / 'img/train'} (z)" in msg
    assert "its own dataset" in msg


def test_missing_label_is_an_error_naming_label_and_image(tmp_path):
    _write(tmp_path, "images/validation", ["annotations/validation"], ["a", "b"])
    (tmp_path / "annotations/validation/b.png").unlink()
    with pytest.raises(DataError) as err:
        list_samples(tmp_path, "val", {"object": {"classes": 150}}, layout="ade")
    msg = str(err.value)
    assert str(tmp_path / "annotations/validation/b.png") in msg and str(tmp_path / "images/validation/b.jpg") in msg


def test_no_images_names_the_folder_the_layout_expects(tmp_path):
    _write(tmp_path, "img/train", ["ann/train"], ["a"])  # an mmseg copy read with the ade layout
    with pytest.raises(DataError, match=r"images/training: no \*\.jpg images .*ade layout"):
        list_samples(tmp_path, "train", {"object": {"classes": 150}}, layout="ade")


# --------------------------------------------------------------------------------- the config
def _cfg(datasets: dict) -> dict:
    return {"device": "cpu", "segmentation": {"protocol": "cached"}, "extract": {"batch_size": 8, "num_workers": 0},
            "datasets": datasets, "models": {"rnd": TINY}}


def _seg(root, **extra) -> dict:
    return {"kind": "segfolder", "root": str(root), "size": 32, "blocks": [1], "tasks": ["segmentation"],
            "label_sets": {"part": {"dir": "ann", "classes": 6}}, **extra}


def test_config_keeps_old_datasets_and_checks_the_new_keys(tmp_path):
    cfg = C.validate(_cfg({"seg": _seg(tmp_path)}))
    assert cfg["datasets"]["seg"]["layout"] == "mmseg"  # the schema's default
    with pytest.raises(C.ConfigError, match=r"datasets\.seg\.layout: 'voc' is not allowed.*mmseg"):
        C.validate(_cfg({"seg": _seg(tmp_path, layout="voc")}))
    with pytest.raises(C.ConfigError, match=r"datasets\.seg\.images\.test: 'test' is not one of this dataset's "
                                            r"splits \['train', 'val'\]"):
        C.validate(_cfg({"seg": _seg(tmp_path, images={"test": "img/test"})}))
    other = _seg(tmp_path)
    other["label_sets"]["object"] = {"root": str(tmp_path / "missing"), "layout": "ade", "classes": 59}
    with pytest.raises(C.ConfigError, match=r"datasets\.seg: path .*missing does not exist"):
        C.validate(_cfg({"seg": other}))
    with pytest.raises(C.ConfigError, match=r"label_sets\.object\.labels\.training: 'training' is not one"):
        C.validate(_cfg({"seg": _seg(tmp_path, label_sets={"object": {"labels": {"training": "x"}, "classes": 59}})}))
    with pytest.raises(C.ConfigError, match=r"label_sets\.part: .*'classes' is a required property"):
        C.validate(_cfg({"seg": _seg(tmp_path, label_sets={"part": {"dir": "ann"}})}))


# --------------------------------------------------------------------------------- extraction
@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict:
    """One generated dataset shipped three ways: mmseg (img/, ann/, ann_object/), ade (images/,
    annotations/ with the part labels) with the object labels in a second ade release, and
    explicit folders."""
    tmp = tmp_path_factory.mktemp("releases")
    mmseg = generate_demo_seg(tmp / "mmseg", n_train=2, n_val=3, size=48, seed=0)
    ade, obj, custom = tmp / "ade", tmp / "ade_object", tmp / "custom"
    for split, folder in ADE.items():
        shutil.copytree(mmseg / "img" / split, ade / "images" / folder)
        shutil.copytree(mmseg / "ann" / split, ade / "annotations" / folder)
        shutil.copytree(mmseg / "img" / split, obj / "images" / folder)
        shutil.copytree(mmseg / "ann_object" / split, obj / "annotations" / folder)
        shutil.copytree(mmseg / "img" / split, custom / "JPEGImages" / split)
        shutil.copytree(mmseg / "ann" / split, custom / "parts" / f"{split}_masks")
        shutil.copytree(mmseg / "ann_object" / split, custom / "objects" / split)
    return {
        "mmseg": {"root": str(mmseg), "label_sets": {"part": {"dir": "ann", "classes": 6},
                                                     "object": {"dir": "ann_object", "classes": 3}}},
        "ade": {"root": str(ade), "layout": "ade",
                "label_sets": {"part": {"classes": 6},
                               "object": {"root": str(obj), "layout": "ade", "classes": 3}}},
        "custom": {"root": str(custom), "images": {"train": "JPEGImages/train", "val": "JPEGImages/val"},
                   "label_sets": {"part": {"classes": 6, "labels": {"train": "parts/train_masks",
                                                                    "val": "parts/val_masks"}},
                                  "object": {"dir": "objects", "classes": 3}}},
    }


def _extract(capsys, cfg: dict, dataset: str, out: Path) -> tuple[int, str]:
    spec = {k: cfg[k] for k in ("seed", "cache", "data")}
    spec["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    spec.update(datasets={dataset: cfg["datasets"][dataset]}, models={"rnd": cfg["models"]["rnd"]})
    capsys.readouterr()
    try:
        cli.main(["extract", "--spec", json.dumps(spec, sort_keys=True), "--runtime", RUNTIME, "--dataset", dataset,
                  "--model", "rnd", "--split", "val", "--out", str(out)])
        code = 0
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return code, err


def test_every_layout_extracts_the_same_store(releases, tmp_path, capsys, one_torch_thread):
    stores = {}
    for name, where in releases.items():
        cfg = C.validate(_cfg({name: {"kind": "segfolder", "size": 32, "blocks": [1], "tasks": ["segmentation"],
                                      **where}}))
        assert [s["id"] for s in kinds.of(cfg["datasets"][name]).samples(cfg["datasets"][name], "val")] == \
            ["0000", "0001", "0002"]
        out = tmp_path / f"{name}.zarr"
        code, err = _extract(capsys, cfg, name, out)
        assert code == 0, err[-3000:]
        with open_store(out) as store:
            stores[name] = {a: store.read(a) for a in ("labels/part", "labels/object", "layers/1", "row")}
            assert store.n_rows == 3
    for name in ("ade", "custom"):
        for array, value in stores["mmseg"].items():
            np.testing.assert_array_equal(stores[name][array], value, err_msg=f"{name}: {array}")
    assert stores["mmseg"]["labels/part"].max() > stores["mmseg"]["labels/object"].max() > 0


def test_extraction_stops_on_a_label_set_over_other_images(releases, tmp_path, capsys, one_torch_thread):
    obj = Path(releases["ade"]["label_sets"]["object"]["root"])
    other = tmp_path / "ade_object_other"
    shutil.copytree(obj, other)
    (other / "images/validation/0002.jpg").rename(other / "images/validation/9999.jpg")
    where = json.loads(json.dumps(releases["ade"]))
    where["label_sets"]["object"]["root"] = str(other)
    cfg = C.validate(_cfg({"ade": {"kind": "segfolder", "size": 32, "blocks": [1], "tasks": ["segmentation"],
                                   **where}}))
    code, err = _extract(capsys, cfg, "ade", tmp_path / "bad.zarr")
    lines = [line for line in err.splitlines() if line.startswith("partaware extract: error:")]
    assert code == 1 and len(lines) == 1
    assert "label set 'object'" in lines[0] and "(9999)" in lines[0] and "(0002)" in lines[0]
    assert "its own dataset" in lines[0]
    assert not (tmp_path / "bad.zarr").exists()
