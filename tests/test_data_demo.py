"""The synthetic CUB-layout demo dataset."""

import filecmp
from pathlib import Path

import pandas as pd

from partaware.data.demo import generate_demo_cub
from partaware.data.parts import select_split
from partaware.kinds import build_part_index


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_deterministic_bytes(tmp_path):
    a = generate_demo_cub(tmp_path / "a", n_images=6, seed=3)
    b = generate_demo_cub(tmp_path / "b", n_images=6, seed=3)
    c = generate_demo_cub(tmp_path / "c", n_images=6, seed=4)
    assert files(a) == files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, files(a), shallow=False)
    assert mismatch == [] and errors == []
    assert (a / "parts/part_locs.txt").read_bytes() != (c / "parts/part_locs.txt").read_bytes()


def test_cub_layout_and_adapter(tmp_path):
    root = generate_demo_cub(tmp_path / "demo", n_images=60, seed=0)
    for name in ["images.txt", "train_test_split.txt", "classes.txt", "image_class_labels.txt",
                 "bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt"]:
        assert (root / name).is_file(), name
    parts = (root / "parts/parts.txt").read_text().splitlines()
    assert parts[8] == "9 left wing" and parts[10] == "11 right eye" and parts[11] == "12 right leg" and parts[13] == "14 tail"
    locs = pd.read_csv(root / "parts/part_locs.txt", sep=" ", header=None, names=["img", "part", "x", "y", "v"])
    assert len(locs) == 60 * 15 and (locs.groupby("img").size() == 15).all()

    df = build_part_index({"kind": "cub", "name": "demo", "root": str(root)})
    assert set(df["label"]) == {0, 1, 2, 3}
    assert df.groupby("label").size().min() >= 40  # every part well represented
    visible = ((locs["v"] == 1) & locs["part"].isin([11, 12, 9, 14])).sum()
    assert len(df) >= 0.9 * visible  # the geometry filter keeps nearly everything
    n_train, n_test = len(select_split(df, "train")), len(select_split(df, "test"))
    assert n_train + n_test == len(df) and min(n_train, n_test) >= 0.4 * len(df)
    assert all(Path(p).is_file() for p in df["image_path"])
