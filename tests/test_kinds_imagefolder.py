"""`kind: imagefolder` (ImageNet's train/<wnid>/*.JPEG layout, or any torchvision ImageFolder):
config, the rows of each store, extraction and the three probes through the `partaware` commands
the rules run, bad images, and the jobs the workflow plans.

The commands run in-process (`cli.main`) on a generated 3-class folder, with a 2-block ViT-Tiny
at 32 px.
"""
from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from partaware import roles
from partaware import config as C
from partaware import kinds
from partaware.data.demo_imagefolder import DEMO_CLASSES, generate_demo_imagefolder
from partaware.data.errors import DataError
from partaware.store import open_store
from cli_runner import run_cli

TINY = {"arch": "vit_tiny_patch16_224", "timm_kwargs": {"depth": 2}, "weights": "random", "seed": 1}
RUNTIME = json.dumps({"device": "cpu", "extract": {"batch_size": 4, "num_workers": 0}})
STORES = ("train", "val", "train_attentive", "val_attentive")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path) -> Path:
    """3 classes, 5 training and 3 validation images each, 64-96 px."""
    return generate_demo_imagefolder(tmp_path / "imagenet", n_train=5, n_val=3, seed=0)


def raw_cfg(root: Path, **ds) -> dict:
    return {
        "seed": 0, "device": "cpu",
        "cache": {"format": "zarr", "dtype": "float16", "chunk_rows": 4},
        "extract": {"batch_size": 4, "num_workers": 0},
        "datasets": {"imgs": {"kind": "imagefolder", "root": str(root), "size": 32, "resize": 40,
                              "attentive_per_class": 2, "tasks": ["linear", "attentive", "logistic"], **ds}},
        "models": {"rnd": dict(TINY)},
        "linear": {"epochs": 3, "batch_size": 8, "seeds": [0]},
        "attentive": {"epochs": 2, "batch_size": 4, "seeds": [0], "memory_mb": 16},
        "logistic": {"Cs": [1.0]},
    }


def partaware(capsys, *argv) -> tuple[int, str]:
    """Run one command; (exit code, its error line or '')."""
    return run_cli(capsys, *argv)[:2]


def spec(cfg: dict, sections=()) -> str:
    """What rules/common.smk passes a job as --spec."""
    out = {k: cfg[k] for k in ("seed", "cache", "data", *sections)}
    out["extract"] = {k: cfg["extract"][k] for k in ("shards", "precision")}
    out["datasets"] = {"imgs": cfg["datasets"]["imgs"]}
    out["models"] = {"rnd": cfg["models"]["rnd"]}
    return json.dumps(out, sort_keys=True)


def extract(capsys, cfg, split, out: Path) -> tuple[int, str]:
    return partaware(capsys, "extract", "--spec", spec(cfg), "--runtime", RUNTIME, "--dataset", "imgs",
                     "--model", "rnd", "--split", split, "--out", out)


# --------------------------------------------------------------------------- config
def test_config_fills_the_kind_defaults_and_names_a_wrong_key(folder):
    ds = C.validate(raw_cfg(folder))["datasets"]["imgs"]
    assert ds["splits"] == ["train", "val"] and ds["attentive_per_class"] == 2 and "max_per_class" not in ds
    assert C.validate({**raw_cfg(folder), "datasets": {"imgs": {"kind": "imagefolder", "root": str(folder),
                                                                "tasks": ["linear"]}}}
                      )["datasets"]["imgs"]["resize"] == 256
    assert kinds.get("imagefolder").has_index is False

    bad = raw_cfg(folder, max_per_klass=3)
    with pytest.raises(C.ConfigError, match=r"datasets\.imgs.*max_per_klass.*allowed keys:.*max_per_class"):
        C.validate(bad)
    with pytest.raises(C.ConfigError, match=r"datasets\.imgs\.tasks\.0: 'retrieval' is not allowed"):
        C.validate(raw_cfg(folder, tasks=["retrieval"]))
    with pytest.raises(C.ConfigError, match=r"datasets\.imgs\.splits: give the training split's folder"):
        C.validate(raw_cfg(folder, splits=["train"]))
    with pytest.raises(C.ConfigError, match=r"datasets\.imgs\.resize: 24 is below size 32"):
        C.validate(raw_cfg(folder, resize=24))
    with pytest.raises(C.ConfigError, match=r"path .*nowhere does not exist"):
        C.validate(raw_cfg(folder / "nowhere"))


# --------------------------------------------------------------------------- rows
def test_rows_follow_torchvision_imagefolder_classes_and_order(folder):
    from torchvision.datasets import ImageFolder

    (folder / "train" / "disc" / "notes.txt").write_text("not an image")  # ignored, as torchvision does
    cfg = C.validate(raw_cfg(folder))
    ds, kind = cfg["datasets"]["imgs"], kinds.get("imagefolder")
    assert kind.classes(ds) == sorted(DEMO_CLASSES)
    for split in ("train", "val"):
        theirs = ImageFolder(str(folder / split))
        assert kind.samples(ds, split) == [(str(p), y) for p, y in theirs.samples]
        assert theirs.classes == kind.classes(ds)


def test_stores_and_subsets_per_class(folder):
    cfg = C.validate(raw_cfg(folder, max_per_class=4))
    ds, kind = cfg["datasets"]["imgs"], kinds.get("imagefolder")
    assert roles.splits(kind, ds, cfg) == list(STORES)
    assert roles.task_splits(kind, ds, "linear") == roles.task_splits(kind, ds, "logistic") == ["train", "val"]
    assert roles.task_splits(kind, ds, "attentive") == ["train_attentive", "val_attentive"]
    assert kind.store_arrays(ds, "train") == ["cls", "mean"]
    assert kind.store_arrays(ds, "val_attentive") == ["cls", "mean", "tokens"]

    train = kind.samples(ds, "train")
    assert [y for _, y in train] == [0] * 4 + [1] * 4 + [2] * 4  # max_per_class: 4 of 5
    subset = kind.samples(ds, "train_attentive")
    assert subset == [s for k, s in enumerate(train) if k % 4 < 2]  # the first 2 of each class
    assert [Path(p).name for p, _ in kind.samples(ds, "val_attentive")][:2] == ["disc_0000.JPEG", "disc_0001.JPEG"]

    only_linear = {**ds, "tasks": ["linear"]}
    assert roles.splits(kind, only_linear, cfg) == ["train", "val"]
    assert roles.splits(kind, {**ds, "tasks": ["attentive"]}, cfg) == ["train_attentive", "val_attentive"]
    with pytest.raises(DataError, match="no split 'test'.*train, val, train_attentive, val_attentive"):
        kind.samples(ds, "test")


def test_folder_problems_name_the_folder(folder):
    cfg = C.validate(raw_cfg(folder))
    ds, kind = cfg["datasets"]["imgs"], kinds.get("imagefolder")
    (folder / "val" / "zebra").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "val" / "zebra" / "z.JPEG")
    with pytest.raises(DataError, match=r"val/zebra: class folder not in the training split's classes"):
        kind.samples(ds, "val")
    shutil.rmtree(folder / "val" / "zebra")
    (folder / "train" / "empty").mkdir()
    with pytest.raises(DataError, match=r"train/empty: class folder holds no images"):
        kind.samples(ds, "train")
    shutil.rmtree(folder / "train" / "empty")
    for image in (folder / "val").rglob("*.JPEG"):  # ImageNet's validation images as downloaded: flat
        image.rename(folder / "val" / image.name)
    for sub in [p for p in (folder / "val").iterdir() if p.is_dir()]:
        sub.rmdir()
    with pytest.raises(DataError, match=r"val: no class folders \(it holds 9 images directly: sort them"):
        kind.samples(ds, "val")


# --------------------------------------------------------------------------- extraction + probes
def test_extraction_and_the_three_probes_through_the_cli(folder, tmp_path, capsys, caplog):
    from partaware.data.images import load_rgb, patch_transform
    from partaware.models.encoder import build_encoder
    from partaware.paper import attach_paper

    cfg = C.validate(raw_cfg(folder))
    kind, ds = kinds.get("imagefolder"), cfg["datasets"]["imgs"]
    stores = {s: tmp_path / "features" / f"{s}.zarr" for s in STORES}
    with caplog.at_level(logging.INFO, logger="partaware"):
        for split, out in stores.items():
            code, error = extract(capsys, cfg, split, out)
            assert code == 0, error
    costs = [r.getMessage() for r in caplog.records if "caching the tokens" in r.getMessage()]
    assert costs == [f"imgs/{s}_attentive: caching the tokens of 6 images: 6 x 5 x 192 x 2 B = 11.2 KiB "
                     "(1.9 KiB per image)" for s in ("train", "val")]

    for split, out in stores.items():
        samples = kind.samples(ds, split)
        with open_store(out) as store:
            names = set(store.array_names())
            assert names == {"cls", "mean", "label", "row", "valid"} | ({"tokens"} if "attentive" in split else set())
            np.testing.assert_array_equal(store.read("label"), [y for _, y in samples])
            np.testing.assert_array_equal(store.read("row"), np.arange(len(samples)))
            assert store.read("valid").all() and store.attrs["classes"] == sorted(DEMO_CLASSES)
            assert "resize shorter 40 bicubic, center crop 32" in store.attrs["transform"]
            if split == "val":  # the cached view is the encoder's view of the whole image
                encoder = build_encoder({**cfg["models"]["rnd"], "img_size": 32}, None).eval()
                x = patch_transform("train", 32, 40)(load_rgb(samples[4][0]))[None]
                with torch.inference_mode():
                    want = encoder(x)["cls"][0].numpy()
                np.testing.assert_allclose(store.read("cls")[4].astype(np.float32), want, atol=2e-2, rtol=1e-2)
    assert len(kind.samples(ds, "train")) == 15 and len(kind.samples(ds, "val_attentive")) == 6

    results = {}
    for task in ("linear", "logistic", "attentive"):
        out = tmp_path / "evals" / f"{task}.csv"
        inputs = [stores[s] for s in roles.task_splits(kind, ds, task)]
        code, error = partaware(capsys, "evaluate", "--spec", spec(cfg, (task,)), "--runtime", RUNTIME,
                                "--task", task, "--dataset", "imgs", "--model", "rnd", "--out", out, *inputs)
        assert code == 0, error
        results[task] = pd.read_csv(out)
    for task, rows in results.items():
        assert set(rows["label_set"]) == {"object"} and set(rows["dataset"]) == {"imgs"}
        view = "cached fixed view: resize shorter 40, centre crop 32"
        subset = "; the first 2 images per class (the paper: all)" if task == "attentive" else ""
        assert rows["notes"].str.endswith(view + subset).all(), rows["notes"].tolist()
        assert rows["value"].between(0, 100).all()
    assert list(results["linear"]["n"]) == [9, 9] and list(results["attentive"]["n"]) == [6, 6]
    assert results["linear"]["protocol"][0] == "paper"
    assert results["linear"]["notes"][0].startswith("best test epoch")
    assert results["logistic"]["metric"].tolist() == ["top1"]

    # the rows as the paper's models and dataset would write them pick up Table 1's values
    paper_rows = pd.concat([results["linear"], results["attentive"]]).assign(
        dataset="imagenet", model="mae", weights="checkpoint")
    best = paper_rows["metric"] == "top1_best_epoch"
    assert attach_paper(paper_rows)[best].tolist() == [67.8, 74.2]  # Table 1: linear, attentive
    assert attach_paper(paper_rows)[~best].isna().all()


def test_bad_image_error_names_it_skip_leaves_its_row_out(folder, tmp_path, capsys):
    bad = folder / "train" / "square" / "square_0002.JPEG"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    code, error = extract(capsys, C.validate(raw_cfg(folder)), "train", tmp_path / "e.zarr")
    assert code == 1 and str(bad) in error and "on_bad_image: skip" in error
    assert not (tmp_path / "e.zarr").exists()

    raw = raw_cfg(folder)
    raw["data"] = {"on_bad_image": "skip"}
    code, error = extract(capsys, C.validate(raw), "train", tmp_path / "s.zarr")
    assert code == 0, error
    with open_store(tmp_path / "s.zarr") as store:
        valid = store.read("valid").astype(bool)
        assert valid.tolist() == [k != 7 for k in range(15)]  # square (label 1) is rows 5..9
        assert store.read("label")[7] == 1
        assert [str(bad) in r for r in store.attrs["skipped_images"]] == [True]


# --------------------------------------------------------------------------- workflow
def test_workflow_plans_the_imagefolder_jobs(folder, tmp_path):
    from workflow_runner import planned_jobs

    raw = raw_cfg(folder)
    raw["models"]["rnd2"] = {**TINY, "seed": 2}
    workdir = tmp_path / "run"
    workdir.mkdir()
    # 2 models x (train, val, train_attentive, val_attentive) stores; x 3 probes; no part index
    assert planned_jobs(workdir, raw) == {"extract": 8, "evaluate": 6, "table": 1, "summary_plot": 1}
    only_linear = copy.deepcopy(raw)
    only_linear["datasets"]["imgs"]["tasks"] = ["linear"]
    assert planned_jobs(workdir, only_linear, "results/table.csv") == {"extract": 4, "evaluate": 2, "table": 1}

    demo = copy.deepcopy(raw)
    ds = demo["datasets"]["imgs"]
    del ds["root"]
    ds["demo"] = {"n_train": 2, "n_val": 1}
    assert planned_jobs(workdir, demo, "results/table.csv") == {"demo_data": 1, "extract": 8, "evaluate": 6,
                                                                "table": 1}
