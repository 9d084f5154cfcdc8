"""CUB keypoint pairs for correspondence (data/pairs.py): drawn by seed, same class, mirror map,
visibility; real CUB annotations parsed and scored end to end."""
import shutil

import pytest
from PIL import Image

from correspondence_helpers import PATCH, SIZE, isolated, maps_from_pairs
from partaware.data import pairs as P
from partaware.data.errors import DataError
from partaware.evals import correspondence as C


def test_mirror_names_pair_left_and_right():
    names = ["left eye", "right eye", "left wing", "right wing", "left leg", "beak", "left_ear", "right_ear"]
    m = P.mirror_names(names)
    assert m["left eye"] == "right eye" and m["right wing"] == "left wing" and m["left_ear"] == "right_ear"
    assert "left leg" not in m and "beak" not in m  # no counterpart listed


def test_draws_are_same_class_distinct_and_fixed_by_seed():
    classes = {0: list("abcd"), 1: list("xyz"), 2: ["solo"]}
    a = P.draw_same_class_pairs(classes, 10, seed=3)
    assert a == P.draw_same_class_pairs(classes, 10, seed=3) != P.draw_same_class_pairs(classes, 10, seed=4)
    assert len(set(a)) == 10 and all(s != t for s, t in a)
    assert all((s in "abcd") == (t in "abcd") for s, t in a)
    every = P.draw_same_class_pairs(classes, 100, seed=0)
    assert len(every) == 4 * 3 + 3 * 2  # fewer than asked: all of them


def test_real_cub_pairs_are_test_images_of_one_class(real_cub):
    pairs = P.cub_pairs(real_cub, n_pairs=200, seed=0)
    assert pairs["pair"].nunique() == 200 and (pairs.groupby("pair").size() == 15).all()
    split = dict(line.split() for line in (real_cub / "train_test_split.txt").read_text().splitlines())
    label = dict(line.split() for line in (real_cub / "image_class_labels.txt").read_text().splitlines())
    assert all(split[i] == "0" for i in set(pairs.src_image) | set(pairs.trg_image))
    assert all(label[s] == label[t] for s, t in zip(pairs.src_image, pairs.trg_image))
    # visibility: both images' part_locs flags; hidden ones stay in the table but unscored
    locs = {}
    for line in (real_cub / "parts" / "part_locs.txt").read_text().splitlines():
        i, p, x, y, v = line.split()
        locs[(i, int(p))] = (float(x), float(y), v == "1")
    names = {n: int(i) for i, n in (l.split(" ", 1) for l in (real_cub / "parts" / "parts.txt").read_text().splitlines())}
    for r in pairs.sample(60, random_state=0).itertuples():
        pid = names[r.part]
        assert r.visible == (locs[(r.src_image, pid)][2] and locs[(r.trg_image, pid)][2])
        assert (r.trg_x, r.trg_y) == locs[(r.trg_image, pid)][:2]
        if r.mirror_part:
            assert r.mirror_visible == locs[(r.trg_image, names[r.mirror_part])][2]
    # the threshold scale is the TARGET's box
    boxes = {l.split()[0]: l.split()[1:] for l in (real_cub / "bounding_boxes.txt").read_text().splitlines()}
    r = pairs.iloc[0]
    assert r.trg_box == max(float(boxes[r.trg_image][2]), float(boxes[r.trg_image][3]))


def test_pairs_round_trip_through_parquet(real_cub, tmp_path):
    pairs = P.cub_pairs(real_cub, n_pairs=30, seed=1)
    P.write_pairs(pairs, tmp_path / "index" / "pairs.parquet")
    back = P.read_pairs(tmp_path / "index" / "pairs.parquet")
    assert back.equals(pairs)
    keys = P.image_table(pairs)
    assert set(keys["key"]) == set(pairs.src_image) | set(pairs.trg_image)


def test_real_cub_scored_end_to_end_with_keypoint_features(real_cub):
    """The fixture's test JPEGs (ids 1, 3, 6, one class): every visible keypoint transfers to
    the token of its true location, so PCK@0.1 is 100 %; real sizes are non-square."""
    pairs = P.cub_pairs(real_cub, n_pairs=10, seed=0, max_images=6)
    assert pairs["pair"].nunique() == 6
    images = P.image_table(pairs)
    sizes = {k: Image.open(p).size for k, p in zip(images["key"], images["path"])}
    assert any(w != h for w, h in sizes.values())
    scored = isolated(pairs, 40)
    res = C.evaluate_pairs(scored, maps_from_pairs(pairs, sizes), sizes, (SIZE, SIZE), PATCH, [0.1, 0.15], 0.1)
    assert len(res.pair) == len(scored) >= 5
    assert res.summary()["PCK@0.1"] == 1.0
    assert res.summary()["left_right_confusion"] == 0.0  # some scored parts have a visible counterpart


def test_missing_cub_files_name_the_file(real_cub, tmp_path):
    with pytest.raises(DataError, match="images.txt: CUB file not found"):
        P.cub_pairs(tmp_path)
    with pytest.raises(DataError, match="pair table not found"):
        P.read_pairs(tmp_path / "pairs.parquet")


def test_bad_box_or_missing_entry_names_the_file(real_cub, tmp_path):
    root = tmp_path / "CUB_200_2011"
    shutil.copytree(real_cub, root, ignore=shutil.ignore_patterns("*.jpg"))
    boxes = (root / "bounding_boxes.txt").read_text().splitlines()
    (root / "bounding_boxes.txt").write_text("\n".join(["1 60.0 27.0 0.0 304.0", *boxes[1:]]) + "\n")
    with pytest.raises(DataError, match=r"bounding_boxes.txt:1: box width 0.0"):
        P.cub_pairs(root, n_pairs=5)
    (root / "bounding_boxes.txt").write_text("\n".join(boxes[:-10]) + "\n")  # the last test images lose theirs
    with pytest.raises(DataError, match=r"bounding_boxes.txt: no entry for image id"):
        P.cub_pairs(root, n_pairs=5)
