"""COCO adapter on a real val2017 subset (mmpose's test_coco.json: 4 images, 14 persons)."""

import json

import numpy as np
import pytest

from partaware.data.errors import DataError
from partaware.data.geometry import nearest_other_distance
from partaware.data.parts import select_split
from partaware.kinds import build_part_index

# Hand derivation from test_coco.json, keypoints 1 nose, 11 right_wrist, 16 left_ankle, v == 2:
# persons with >= 2 such keypoints (annotation id: kept keypoints):
#   785: 442619 n(367,81) rw(309,178) la(466,362)
#   40083: 198196 n(99,144) la(177,256); 230195 n(343,164) rw(330,262)   (1202706 has none)
#   196141: 460541 n(297,111) rw(279,143) la(398,327); 488308 n(589,113) rw(585,139) (la v=1);
#           1724673 n(48,79) rw(49,112) la(56,160)   (508900 none, 1717641 only la -> skipped)
#   197388: 437295 n(334,135) rw(250,185) la(293,321); 467657 n(345,92) la(318,206) (rw v=1);
#           531914 n(591,78) rw(561,150) la(591,252); 533949 n(580,211) rw(538,285) (la v=1);
#           543117 n(36,79) la(35,245)
# Annotation ids of one image differ by >= 2035, so every d is within its own person:
#   442619: |n-rw| = sqrt(58^2+97^2) = sqrt(12773) = 113.018 (r = round(28.25) = 28), la: sqrt(58505) = 241.878 (r 60)
#   198196: sqrt(78^2+112^2) = sqrt(18628) = 136.484 (r 34); 230195: sqrt(13^2+98^2) = sqrt(9773) = 98.858 (r 25)
#   460541: |n-rw| = sqrt(1348) = 36.7 -> d/2 < 20, both dropped; la: sqrt(119^2+184^2) = sqrt(48017) = 219.128 (r 55)
#   488308: sqrt(4^2+26^2) = 26.3 -> both dropped
#   1724673: |n-rw| = sqrt(1090) = 33.0 -> both dropped; la: |rw-la| = sqrt(7^2+48^2) = sqrt(2353) = 48.508 (r 12)
#   437295: |n-rw| = sqrt(84^2+50^2) = sqrt(9556) = 97.755 (r 24); la: |rw-la| = sqrt(20345) = 142.636 (r 36)
#   467657: sqrt(27^2+114^2) = sqrt(13725) = 117.154 (r 29)
#   531914: |n-rw| = sqrt(30^2+72^2) = 78 exactly, r = round(19.5) = 20; la: |rw-la| = sqrt(11304) = 106.320 (r 27)
#   533949: sqrt(42^2+74^2) = sqrt(7240) = 85.088 (r 21)
#   543117: sqrt(1^2+166^2) = sqrt(27557) = 166.003 (r = round(41.50075) = 42) -> x0 = 36-42 = -6 (outside: kept)
EXPECTED = [
    # image_id, part_id, part_name, label, x, y, d, (x0, y0, x1, y1)
    (785, 1, "nose", 0, 367, 81, 113.018, (339, 53, 395, 109)),
    (785, 11, "right_wrist", 1, 309, 178, 113.018, (281, 150, 337, 206)),
    (785, 16, "left_ankle", 2, 466, 362, 241.878, (406, 302, 526, 422)),
    (40083, 1, "nose", 0, 99, 144, 136.484, (65, 110, 133, 178)),
    (40083, 16, "left_ankle", 2, 177, 256, 136.484, (143, 222, 211, 290)),
    (40083, 1, "nose", 0, 343, 164, 98.858, (318, 139, 368, 189)),
    (40083, 11, "right_wrist", 1, 330, 262, 98.858, (305, 237, 355, 287)),
    (196141, 16, "left_ankle", 2, 398, 327, 219.128, (343, 272, 453, 382)),
    (196141, 16, "left_ankle", 2, 56, 160, 48.508, (44, 148, 68, 172)),
    (197388, 1, "nose", 0, 334, 135, 97.755, (310, 111, 358, 159)),
    (197388, 11, "right_wrist", 1, 250, 185, 97.755, (226, 161, 274, 209)),
    (197388, 16, "left_ankle", 2, 293, 321, 142.636, (257, 285, 329, 357)),
    (197388, 1, "nose", 0, 345, 92, 117.154, (316, 63, 374, 121)),
    (197388, 16, "left_ankle", 2, 318, 206, 117.154, (289, 177, 347, 235)),
    (197388, 1, "nose", 0, 591, 78, 78.0, (571, 58, 611, 98)),
    (197388, 11, "right_wrist", 1, 561, 150, 78.0, (541, 130, 581, 170)),
    (197388, 16, "left_ankle", 2, 591, 252, 106.320, (564, 225, 618, 279)),
    (197388, 1, "nose", 0, 580, 211, 85.088, (559, 190, 601, 232)),
    (197388, 11, "right_wrist", 1, 538, 285, 85.088, (517, 264, 559, 306)),
    (197388, 1, "nose", 0, 36, 79, 166.003, (-6, 37, 78, 121)),
    (197388, 16, "left_ankle", 2, 35, 245, 166.003, (-7, 203, 77, 287)),
]


@pytest.fixture
def split_spec(real_coco):
    """split_spec(path): a split on the real images, annotations from `path` (default: the real test_coco.json)."""
    return lambda path=real_coco / "test_coco.json": {"annotations": str(path), "images": str(real_coco)}


def test_real_coco_patches(split_spec, real_coco):
    df = build_part_index({"kind": "coco", "name": "coco", "train": split_spec()})
    got = [(r.image_id, r.part_id, r.part_name, r.label, r.x, r.y, round(r.d, 3), (r.x0, r.y0, r.x1, r.y1))
           for r in df.itertuples()]
    assert got == EXPECTED
    assert set(df["split"]) == {"train"}
    assert df["image_path"].iloc[0] == str(real_coco / "000000000785.jpg")


def test_annotation_id_separates_persons(split_spec):
    # 197388: nose of person 467657 (345,92) is sqrt(11^2+43^2) = 44.4 px from the nose of
    # person 437295 (334,135), but the released code measures on (x, y, annotation id) triples,
    # so the persons are 467657 - 437295 = 30362 apart and d stays within the person: 117.154.
    xy = np.array([[334, 135], [345, 92]], dtype=float)
    assert nearest_other_distance(xy)[1] == pytest.approx(44.385, abs=1e-3)
    xya = np.array([[334, 135, 437295], [345, 92, 467657]], dtype=float)
    assert nearest_other_distance(xya)[1] == pytest.approx(np.hypot(np.hypot(11, 43), 30362))
    df = build_part_index({"kind": "coco", "train": split_spec()})
    nose = df[(df.image_id == 197388) & (df.x == 345) & (df.y == 92)]
    assert nose["d"].item() == pytest.approx(117.154, abs=1e-3)


def test_train_and_test_splits_and_retrieval_set(split_spec):
    # both splits pointed at the same file: every patch appears once per split
    df = build_part_index({"kind": "coco", "name": "coco", "train": split_spec(), "test": split_spec()})
    assert (df["split"] == "train").sum() == (df["split"] == "test").sum() == 21
    assert df.groupby("image_id")["split"].apply(list)[785] == ["train"] * 3 + ["test"] * 3
    retrieval = select_split(df, "all")  # COCO's retrieval set is train2017 only
    assert len(retrieval) == 21 and set(retrieval["split"]) == {"train"}
    assert retrieval["row"].tolist() == list(range(21))


def test_max_images_and_custom_keypoints(split_spec):
    df = build_part_index({"kind": "coco", "train": split_spec(), "max_images": 1})
    assert df["image_id"].tolist() == [785] * 3
    # keypoints 1 and 16 only: 442619's nose-ankle distance sqrt(99^2+281^2) = sqrt(88762) = 297.930
    df = build_part_index({"kind": "coco", "train": split_spec(), "parts": [16, 1], "max_images": 1})
    assert df["label"].tolist() == [1, 0] and round(df["d"].iloc[0], 3) == 297.930


def test_only_test_split_configured_has_no_retrieval_set(split_spec):
    df = build_part_index({"kind": "coco", "name": "cocoval", "test": split_spec()})
    with pytest.raises(DataError, match=r"dataset 'cocoval': split 'all' \(= train\) has no part patches"):
        select_split(df, "all")


def test_unknown_keypoint_id(split_spec):
    with pytest.raises(DataError, match=r"test_coco\.json: keypoint id\(s\) \[18\].*1\.\.17 = 1 nose"):
        build_part_index({"kind": "coco", "train": split_spec(), "parts": [1, 18]})


def test_broken_json_and_annotations(split_spec, real_coco, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [],\n "annotations": [\n oops]}')
    with pytest.raises(DataError, match=r"bad\.json:3: not valid JSON"):
        build_part_index({"kind": "coco", "train": split_spec(bad)})
    data = json.loads((real_coco / "test_coco.json").read_text())
    data["annotations"][0]["image_id"] = 12345
    orphan = tmp_path / "orphan.json"
    orphan.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"orphan\.json: annotation id 442619 refers to image_id 12345"):
        build_part_index({"kind": "coco", "train": split_spec(orphan)})
    with pytest.raises(DataError, match=r"missing\.json: COCO annotation file not found"):
        build_part_index({"kind": "coco", "train": split_spec(tmp_path / "missing.json")})
    with pytest.raises(DataError, match=r"kind coco needs `train` and/or `test`"):
        build_part_index({"kind": "coco"})
