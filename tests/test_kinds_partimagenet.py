"""Kind `partimagenet` (kinds/partimagenet.py, data/partimagenet.py): PartImageNet_Seg folders
generated in the documented layout (no public sample files exist outside the dataset archive;
tests/fixtures/README.md), the label coding (40 parts + background = 41 classes, background last,
255 ignored), the layout errors, both segmentation protocols and per-pixel part discovery
(task `part_discovery_pixels`) through the CLI, and the per-pixel scores by hand."""
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow_runner import BIN

from partaware import config as C
from partaware import kinds
from partaware.data import partimagenet as P
from partaware.data.errors import DataError
from partaware.data.segfolder import OFFSET_KEY, load_label, reduce_zero_label

MODEL = {"arch": "vit_tiny_patch16_224", "weights": "random", "seed": 1, "timm_kwargs": {"depth": 2}}
PIPELINE = {"crop": 32, "train_scale": [128, 48], "test_scale": [128, 48], "stride": 16}


@pytest.fixture
def pin(tmp_path):
    return P.generate_partimagenet(tmp_path / "PartImageNet_Seg", ("train", "val"), per_split=4, size=64)


def raw_cfg(root, **ds):
    return {"datasets": {"pin": {"kind": "partimagenet", "root": str(root), "size": 64, "blocks": [1, 2],
                                 "pipeline": PIPELINE, "tasks": ["segmentation", "part_discovery_pixels"], **ds}},
            "models": {"tiny": MODEL}, "stats": {"bootstrap": 0},
            "segmentation": {"protocol": ["paper", "cached"], "iters": 4, "batch_size": 2, "warmup_iters": 1,
                             "num_workers": 0},
            "part_discovery": {"k": [2, 4], "max_tokens": 500},
            "extract": {"batch_size": 8, "num_workers": 0}}


def test_config_defaults_and_labels(pin):
    cfg = C.validate(raw_cfg(pin, pipeline="partimagenet"))
    ds = cfg["datasets"]["pin"]
    assert ds["label_sets"] == {"part": {"classes": 41}, "object": {"classes": 12}} and ds["splits"] == ["train", "val"]
    assert kinds.get("partimagenet").pipeline(ds).crop == 512
    samples = kinds.get("partimagenet").samples(ds, "val")
    assert len(samples) == 4 and samples[0]["img"].suffix == ".JPEG" and samples[0][OFFSET_KEY] == {"part": 1,
                                                                                                     "object": 1}
    raw = np.array(Image.open(samples[0]["part"]))
    part = reduce_zero_label(load_label(samples[0]["part"], 41, offset=1))
    # raw part c -> class c; background 40 -> class 40 (scored); 255 ignored
    assert np.array_equal(part, raw) and {40, 255} <= set(np.unique(part).tolist())
    obj = reduce_zero_label(load_label(samples[0]["object"], 12, offset=1))
    assert set(np.unique(obj).tolist()) - {255} <= set(range(12)) and 11 in obj
    with pytest.raises(DataError, match=r"label value\(s\) 41 out of range for 40 classes"):
        load_label(samples[0]["part"], 40, offset=1)  # a class count that does not fit the coding


def test_layout_errors_name_the_folder(pin, tmp_path):
    with pytest.raises(C.ConfigError, match=r"datasets\.pin\.root: .*images/images/train not found; set the dataset's "
                                            r"`root` to the PartImageNet_Seg folder"):
        C.validate(raw_cfg(pin / "images"))  # a wrong root
    shutil.rmtree(pin / "annotations" / "val_whole")
    with pytest.raises(C.ConfigError) as err:
        C.validate(raw_cfg(pin))  # a missing split folder
    assert "\n" not in str(err.value) and str(pin / "annotations" / "val_whole") + " not found" in str(err.value)
    assert C.validate(raw_cfg(pin, label_sets={"part": {"classes": 41}}))  # without the object set: fine
    with pytest.raises(C.ConfigError, match=r"'trainval' is not a PartImageNet_Seg split"):
        C.validate(raw_cfg(pin, splits=["trainval", "val"]))
    (pin / "annotations" / "val" / "n01440764_val_0.png").unlink()
    with pytest.raises(DataError, match=r"n01440764_val_0\.png: missing 'part' label file for image"):
        P.list_samples(pin, "val", ["part"])


def _run(args, cwd):
    out = subprocess.run([str(BIN / "partaware"), *args], capture_output=True, text=True, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]


def test_both_segmentation_protocols_through_the_cli(pin, tmp_path):
    from partaware import specs

    cfg = C.validate(raw_cfg(pin))
    work = tmp_path / "run"
    work.mkdir()
    stores = []
    for split in ("train", "val"):
        store = work / "results" / "features" / "pin" / "tiny" / f"{split}.zarr"
        _run(["extract", "--spec", json.dumps(specs.extract_spec(cfg, "pin", "tiny", split)), "--dataset", "pin",
              "--model", "tiny", "--split", split, "--out", str(store)], work)
        stores.append(str(store))
    discovery = work / "results" / "evals" / "pin" / "tiny" / "part_discovery_pixels.csv"
    _run(["evaluate", "--spec", json.dumps(specs.task_spec(cfg, "pin", "tiny", "part_discovery_pixels")), "--task",
          "part_discovery_pixels", "--dataset", "pin", "--model", "tiny", "--out", str(discovery), *stores], work)
    found = pd.read_csv(discovery).set_index("metric")
    assert set(found.index) == {"NMI@2", "ARI@2", "NMI@4", "ARI@4"} and (found["feature"] == "block 2 dense").all()
    assert (found["n"] == 4 * 64 * 64 - 4 * 32).all()  # every val pixel but the ignored 32-pixel seams
    assert found["value"].between(-100, 100).all() and found["notes"].str.contains("per pixel").all()
    out = work / "results" / "evals" / "pin" / "tiny" / "segmentation.csv"
    spec = json.dumps(specs.task_spec(cfg, "pin", "tiny", "segmentation"))
    _run(["evaluate", "--spec", spec, "--task", "segmentation", "--dataset", "pin", "--model", "tiny",
          "--out", str(out), *stores], work)
    paper = out.with_name("segmentation_paper.csv")
    _run(["segment", "--spec", spec, "--dataset", "pin", "--model", "tiny", "--state", str(tmp_path / "s.pt"),
          "--out", str(paper)], work)
    for csv in (out, paper):
        rows = pd.read_csv(csv)
        assert set(rows["label_set"]) == {"part", "object"} and rows["value"].between(0, 100).all()
        assert rows["notes"].str.contains("40 parts + background (pixel 40, scored", regex=False).all()
        per_class = pd.read_csv(csv.with_name(csv.stem + "_per_class.csv"))
        assert per_class.groupby("label_set")["class"].nunique().to_dict() == {"object": 12, "part": 41}


class _Store:
    """An in-memory stand-in of a published segmentation store (the arrays the task reads)."""

    def __init__(self, arrays):
        self.arrays, self.n_rows = arrays, len(arrays["valid"])

    def read(self, name, start=0, stop=None):
        return self.arrays[name][start:stop]

    def read_checked(self, name, start=0, stop=None, valid=None):
        return self.arrays[name][start:stop]

    def info(self, name):
        return {"shape": self.arrays[name].shape, "dtype": self.arrays[name].dtype}


def test_pixel_scores_by_hand():
    """Tokens of two kinds, left half and right half of each image: the clusters match the labels
    exactly (NMI = ARI = 100) where the label map follows the tokens (one pixel ignored), and a
    label map of one class everywhere scores NMI 0 and ARI 0 in the pooled table."""
    from partaware import tasks

    tokens = np.zeros((3, 2, 2, 2), np.float32)
    tokens[:, 0, :, 0], tokens[:, 1, :, 1] = 1, 1                    # left column kind 0, right kind 1
    labels = np.ones((3, 4, 4), np.uint8)
    labels[:, :, 2:] = 2
    labels[:, 0, 0] = 255                                             # an ignored pixel
    store = _Store({"layers/1": tokens, "labels/part": labels, "valid": np.ones(3, np.uint8)})
    cfg = {"datasets": {"d": {"blocks": [1], "label_sets": {"part": {"classes": 3}}}},
           "part_discovery": {"k": [2], "max_tokens": 100, "niter": 10, "nredo": 1, "seed": 0},
           "stats": {"bootstrap": 10, "level": 0.95, "seed": 0}}
    ctx = {"dataset": "d", "model": "m", "group": "", "weights": "random"}
    rows = {r["metric"]: r for r in tasks.get("part_discovery_pixels").rows(cfg, ctx, [store, store])[0]}
    assert rows["NMI@2"]["value"] == pytest.approx(100) and rows["ARI@2"]["value"] == pytest.approx(100)
    assert rows["NMI@2"]["n"] == 3 * 15 and rows["NMI@2"]["feature"] == "block 1 dense"
    flat = _Store({"layers/1": tokens, "labels/part": np.full((3, 4, 4), 1, np.uint8), "valid": np.ones(3, np.uint8)})
    rows = {r["metric"]: r for r in tasks.get("part_discovery_pixels").rows(cfg, ctx, [flat, flat])[0]}
    assert rows["ARI@2"]["value"] == pytest.approx(0) and rows["NMI@2"]["value"] == pytest.approx(0, abs=1e-9)
