"""Pascal-Part .mat -> 193-part and 16-object label maps, checked against the real samples."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from partaware.data.errors import DataError
from partaware.data.pascal_part import (
    OBJECT_CLASSES, PART_CLASSES, PART_PARENT, convert_pascal_part, pascal_part_maps,
)
from partaware.data.segfolder import list_samples, load_label

# The 10 annotated samples in tests/fixtures/real/pascal_part/examples (listed, not globbed: a lost
# file must fail, not shrink the parametrisation).
STEMS = ["2008_000652", "2008_000700", "2008_000726", "2008_000939", "2008_001978", "2008_003228",
         "2008_003497", "2008_005643", "2008_006462", "2009_001103"]

VOC20 = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
         "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
         "train", "tvmonitor"]
OBJ16 = sorted(set(VOC20) - {"boat", "chair", "diningtable", "sofa"})


@pytest.fixture
def examples(real_pascal_part):
    """The .mat annotations and VOC2010 JPEGs, side by side."""
    return real_pascal_part / "examples"


@pytest.fixture
def tsv_rows(real_pascal_part):
    """The 193 (class, part) rows of the derived part list, in label order."""
    with open(real_pascal_part / "pascal_part_193_parts_DERIVED.tsv", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture
def name_to_id(tsv_rows):
    """(class, .mat part name) -> 1-based tsv row, expanding `wheel_1..10` ranges."""
    table = {}
    for i, row in enumerate(tsv_rows, start=1):
        m = re.fullmatch(r"(\w+?)_(\d+)\.\.(\d+)", row["part_names_in_mat"])
        names = ([f"{m[1]}_{k}" for k in range(int(m[2]), int(m[3]) + 1)] if m
                 else [row["part_names_in_mat"]])
        for n in names:
            table[(row["class"], n)] = i
    return table


def _objects(mat):
    anno = scipy.io.loadmat(mat)["anno"][0, 0]
    for o in anno["objects"][0]:
        names = [str(p["part_name"][0]) for p in o["parts"].ravel()]
        yield str(o["class"][0]), o["mask"] > 0, names


def test_part_list_matches_tsv(tsv_rows, examples):
    assert sorted(p.stem for p in examples.glob("*.mat")) == STEMS
    assert len(tsv_rows) == 193 == len(PART_CLASSES)
    assert [(r["class"], r["part"]) for r in tsv_rows] == list(PART_CLASSES)
    assert list(OBJECT_CLASSES) == OBJ16 and len(OBJ16) == 16
    assert sorted({r["class"] for r in tsv_rows}) == OBJ16
    for i, (obj, _) in enumerate(PART_CLASSES, start=1):
        assert PART_PARENT[i] == OBJ16.index(obj) + 1


@pytest.mark.parametrize("stem", STEMS)
def test_real_maps_hold_exactly_the_annotated_classes(stem, examples, name_to_id):
    mat = examples / f"{stem}.mat"
    expected_parts, expected_objs = set(), set()
    for cls, _, names in _objects(mat):
        if cls in OBJ16:
            expected_objs.add(OBJ16.index(cls) + 1)
            expected_parts |= {name_to_id[(cls, n)] for n in names}
    part_map, obj_map = pascal_part_maps(mat)
    assert part_map.dtype == obj_map.dtype == np.uint8 and part_map.shape == obj_map.shape
    assert set(np.unique(part_map).tolist()) - {0, 255} == expected_parts
    assert set(np.unique(obj_map).tolist()) - {0} == expected_objs
    # parts nest in their parent objects; background agrees between the two maps
    fg = (part_map > 0) & (part_map < 255)
    np.testing.assert_array_equal(PART_PARENT[part_map[fg]], obj_map[fg])
    np.testing.assert_array_equal(part_map == 0, obj_map == 0)
    with Image.open(examples / f"{stem}.jpg") as im:
        assert im.size[::-1] == part_map.shape


def test_object_without_parts_is_ignore_in_part_map(examples):
    mat = examples / "2009_001103.mat"  # holds a tvmonitor annotated without parts
    tv = [m for cls, m, names in _objects(mat) if cls == "tvmonitor" and not names]
    assert tv
    part_map, obj_map = pascal_part_maps(mat)
    tv_pixels = obj_map == OBJ16.index("tvmonitor") + 1
    assert tv_pixels.sum() > 1000
    assert (part_map[tv_pixels] == 255).all()


def test_small_parts_win_over_the_parts_containing_them(examples, name_to_id):
    # In 2008_000939 the car's licence plate is annotated before the back side that contains
    # it; smaller-over-larger keeps the plate.
    mat = examples / "2008_000939.mat"
    anno = scipy.io.loadmat(mat)["anno"][0, 0]
    car_obj = next(o for o in anno["objects"][0] if str(o["class"][0]) == "car")
    plate = next(p["mask"] > 0 for p in car_obj["parts"][0] if str(p["part_name"][0]) == "bliplate")
    assert plate.any()
    part_map, _ = pascal_part_maps(mat)
    assert (part_map[plate] == name_to_id[("car", "bliplate")]).mean() > 0.95


def test_convert_writes_layout_atomically(examples, tmp_path):
    ids = {"train": ["2008_000939", "2009_001103"], "val": ["2008_001978"]}
    counts = convert_pascal_part(examples, examples, tmp_path, ids)
    assert counts == {"train": 2, "val": 1}
    for split, stems in ids.items():
        samples = list_samples(tmp_path, split, {"part": "ann", "object": "ann_object"})
        assert [s["id"] for s in samples] == sorted(stems)
        for s in samples:
            assert s["img"].read_bytes() == (examples / f"{s['id']}.jpg").read_bytes()
            part_map, obj_map = pascal_part_maps(examples / f"{s['id']}.mat")
            np.testing.assert_array_equal(load_label(s["part"], 193), part_map)
            np.testing.assert_array_equal(load_label(s["object"], 16), obj_map)
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_convert_missing_mat_names_it(examples, tmp_path):
    with pytest.raises(DataError, match=r"2099_000001\.mat"):
        convert_pascal_part(examples, examples, tmp_path / "out", {"val": ["2099_000001"]})


def test_unknown_part_name_is_an_error(examples, tmp_path):
    anno = scipy.io.loadmat(examples / "2008_001978.mat")["anno"]
    anno[0, 0]["objects"][0, 0]["parts"][0, 0]["part_name"] = np.array(["wing_99"])
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {"anno": anno})
    with pytest.raises(DataError, match=r"bad\.mat.*'wing_99'.*'bird'"):
        pascal_part_maps(bad)


def test_convert_command_line(examples, tmp_path):
    """`partaware convert-pascal-part` writes the folders the segfolder adapter reads."""
    ids = STEMS
    (tmp_path / "train.txt").write_text("\n".join(ids[:6]))
    (tmp_path / "val.txt").write_text("\n".join(ids[6:]))
    out = tmp_path / "pascal_part"
    exe = Path(sys.executable).parent / "partaware"
    res = subprocess.run([str(exe), "convert-pascal-part", "--annotations", str(examples), "--images", str(examples),
                          "--out", str(out), "--split", f"train={tmp_path / 'train.txt'}",
                          "--split", f"val={tmp_path / 'val.txt'}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    samples = list_samples(out, "val", {"part": "ann", "object": "ann_object"})
    assert [s["id"] for s in samples] == ids[6:]
