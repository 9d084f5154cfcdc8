"""The part index contract (docs/design.md "Part index"): columns, splits, files."""

import pandas as pd
import pytest

from partaware.data.errors import DataError
from partaware.data.parts import COLUMNS, read_index, select_split, write_index
from partaware.kinds import build_part_index


@pytest.fixture
def cub(real_cub):
    """Settings of the real CUB sample (first 6 images), with overrides."""
    return lambda **kw: {"kind": "cub", "name": "cub", "root": str(real_cub), "max_images": 6, **kw}


def test_columns_and_types(cub):
    df = build_part_index(cub())
    assert list(df.columns) == COLUMNS
    ints = ["row", "image_id", "part_id", "label", "x0", "y0", "x1", "y1"]
    assert all(df[c].dtype == "int64" for c in ints)
    assert all(df[c].dtype == "float64" for c in ["x", "y", "d"])
    assert all(isinstance(v, str) for v in df["image_path"]) and all(isinstance(v, str) for v in df["part_name"])
    # ordered by image then part
    assert list(df[["image_id", "part_id"]].itertuples(index=False, name=None)) == sorted(
        df[["image_id", "part_id"]].itertuples(index=False, name=None))
    assert df.attrs["retrieval_splits"] == ["train", "test"] and df.attrs["parts"] == [11, 12, 9, 14]


def test_select_split_renumbers_rows(cub):
    df = build_part_index(cub())
    # train = images 2, 4, 5 (3 + 2 + 3 patches); test = images 3, 6 (3 + 2)
    train, test, everything = (select_split(df, s) for s in ("train", "test", "all"))
    assert train["image_id"].tolist() == [2, 2, 2, 4, 4, 5, 5, 5]
    assert test["image_id"].tolist() == [3, 3, 3, 6, 6]
    assert train["row"].tolist() == list(range(8)) and test["row"].tolist() == list(range(5))
    assert everything.equals(df)
    assert df["row"].tolist() == list(range(13))  # the input is not modified
    with pytest.raises(DataError, match="split 'val' is unknown"):
        select_split(df, "val")


def test_empty_split_and_empty_dataset(cub):
    df = build_part_index(cub(max_images=2))  # image 1 has no patch, image 2 is train
    with pytest.raises(DataError, match=r"dataset 'cub': split 'test' \(= test\) has no part patches"):
        select_split(df, "test")
    with pytest.raises(DataError, match=r"dataset 'cub': no part patch survives"):
        build_part_index(cub(max_images=1))


def test_write_and_read_index(cub, tmp_path):
    df = build_part_index(cub())
    path = tmp_path / "index" / "cub" / "all.parquet"
    write_index(df, path)
    assert [p.name for p in path.parent.iterdir()] == ["all.parquet"]  # no temp file left
    back = read_index(path)
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs["retrieval_splits"] == ["train", "test"]
    assert len(select_split(back, "all")) == 13
    with pytest.raises(DataError, match="part index not found"):
        read_index(tmp_path / "none.parquet")


def test_bad_settings(cub):
    for bad in (0, -1, "6", True):
        with pytest.raises(DataError, match="max_images must be a positive integer"):
            build_part_index(cub(max_images=bad))
    with pytest.raises(DataError, match="`parts` must be a non-empty list"):
        build_part_index(cub(parts=[]))
    with pytest.raises(DataError, match=r"lists a part twice"):
        build_part_index(cub(parts=[11, 11]))
    with pytest.raises(DataError, match="unknown kind 'voc'"):
        build_part_index({"kind": "voc"})
    with pytest.raises(DataError, match="kind cub needs `root`"):
        build_part_index({"kind": "cub"})
    with pytest.raises(DataError, match="retrieval_splits"):
        build_part_index(cub(retrieval_splits=["val"]))
