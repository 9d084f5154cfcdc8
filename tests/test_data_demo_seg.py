"""The synthetic demo segmentation dataset: layout, determinism, part-in-object nesting."""

import numpy as np
from PIL import Image

from partaware.data.demo_seg import (
    DEMO_OBJECT_NAMES, DEMO_PART_NAMES, DEMO_PART_PARENT, generate_demo_seg,
)
from partaware.data.segfolder import list_samples, load_label

SETS = {"part": "ann", "object": "ann_object"}


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_per_seed(tmp_path):
    a = _files(generate_demo_seg(tmp_path / "a", n_train=6, n_val=3, seed=3))
    b = _files(generate_demo_seg(tmp_path / "b", n_train=6, n_val=3, seed=3))
    c = _files(generate_demo_seg(tmp_path / "c", n_train=6, n_val=3, seed=4))
    assert len(a) == 3 * 9 and a == b
    assert a.keys() == c.keys() and a != c
    # train does not depend on the size of val
    d = _files(generate_demo_seg(tmp_path / "d", n_train=6, n_val=1, seed=3))
    assert all(d[k] == a[k] for k in d)


def test_layout_and_nesting(tmp_path):
    root = generate_demo_seg(tmp_path, size=96)
    assert len(DEMO_PART_NAMES) == 6 and len(DEMO_OBJECT_NAMES) == 3
    assert DEMO_PART_PARENT.shape == (7,) and DEMO_PART_PARENT[0] == 0
    seen_parts = set()
    for split, n in (("train", 24), ("val", 12)):
        samples = list_samples(root, split, SETS)
        assert len(samples) == n
        for s in samples:
            img = Image.open(s["img"])
            part = load_label(s["part"], len(DEMO_PART_NAMES))
            obj = load_label(s["object"], len(DEMO_OBJECT_NAMES))
            assert img.mode == "RGB" and img.size == (96, 96) and part.shape == (96, 96)
            assert 255 not in part and 255 not in obj
            np.testing.assert_array_equal(DEMO_PART_PARENT[part], obj)  # parts nest in objects
            assert (part > 0).any() and (part == 0).any()
            seen_parts |= set(np.unique(part).tolist())
    assert seen_parts == set(range(7))


def test_parts_look_different(tmp_path):
    """Each part class has its own colour, so the task is learnable from appearance."""
    root = generate_demo_seg(tmp_path, n_train=12, n_val=0)
    sums = np.zeros((7, 3))
    counts = np.zeros(7)
    for s in list_samples(root, "train", SETS):
        img = np.asarray(Image.open(s["img"]), dtype=float)
        part = load_label(s["part"], 6)
        for k in range(1, 7):
            sums[k] += img[part == k].sum(0)
            counts[k] += (part == k).sum()
    means = sums[1:] / counts[1:, None]
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert dists[~np.eye(6, dtype=bool)].min() > 20
