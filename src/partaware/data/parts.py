"""The part index: one row per part patch, the join key between images and feature stores.

A dataset kind (`partaware.kinds.cub`, `.coco`) reads its annotations into a patch table;
`index_from_patches` turns that into the table of docs/design.md ("Part index"), and
`partaware.kinds.build_part_index(dataset_cfg)` does both. Recognised `dataset_cfg` keys (others
are ignored; the config schema validates them):

- `kind`: `cub` or `coco` (required); `name`: used in messages and stored attributes.
- cub: `root`, the folder holding images.txt (the demo generator writes this layout too).
- coco: `train: {annotations: json, images: dir}` and/or `test: {...}` (train2017 / val2017).
- `parts`: 1-based part / keypoint ids, default cub [11, 12, 9, 14], coco [1, 11, 16];
  `label` is the position of `part_id` in this list.
- `max_images`: first N images (of images.txt, or of each COCO json's `images`), quick runs.
- `check_files` (default true): every indexed image must exist.
- `retrieval_splits`: which splits form the `all` (retrieval) set; default cub [train, test]
  (all 11,788 images), coco [train] (train2017, as the paper).

Split files: `select_split(index, split)` gives `all` / `train` / `test` tables, each with its
own `row` numbering 0..n-1 (a feature store of a split joins that split's file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..atomic import atomic_path
from .errors import DataError

COLUMNS = ["row", "image_id", "image_path", "part_id", "part_name", "label",
           "x", "y", "d", "x0", "y0", "x1", "y1", "split"]
INT_COLUMNS = ["row", "image_id", "part_id", "label", "x0", "y0", "x1", "y1"]
FLOAT_COLUMNS = ["x", "y", "d"]
SPLITS = ("all", "train", "test")


def _name(cfg: dict) -> str:
    return str(cfg.get("name") or cfg.get("kind") or "?")


def max_images(cfg: dict) -> int | None:
    n = cfg.get("max_images")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise DataError(f"dataset {_name(cfg)!r}: max_images must be a positive integer or null, got {n!r}")
    return n


def part_ids(cfg: dict, default: Sequence[int]) -> list[int]:
    parts = cfg.get("parts")
    if parts is None:
        return list(default)
    if not isinstance(parts, (list, tuple)) or not parts or not all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
        raise DataError(f"dataset {_name(cfg)!r}: `parts` must be a non-empty list of 1-based integer ids, got {parts!r}")
    return list(parts)


def _check_files(df: pd.DataFrame, cfg: dict) -> None:
    missing = [p for p in df["image_path"].unique() if not os.path.isfile(p)]
    if missing:
        raise DataError(
            f"dataset {_name(cfg)!r}: {len(missing)} indexed image(s) missing, e.g. {missing[0]}; restore them, "
            "point the dataset at the full copy, limit it with `max_images`, or set `data.on_bad_image: skip` "
            "in the workflow config to skip and list them (build_part_index(..., check_files: false) outside "
            "the workflow)"
        )


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reset_index(drop=True)
    df["row"] = range(len(df))
    for c in INT_COLUMNS:
        df[c] = df[c].astype("int64")
    for c in FLOAT_COLUMNS:
        df[c] = df[c].astype("float64")
    return df[COLUMNS]


def index_from_patches(patches: pd.DataFrame, cfg: dict, default_parts: Sequence[int],
                       default_retrieval: Sequence[str]) -> pd.DataFrame:
    """The part index from one kind's patch table (both splits), sorted by image then part.

    `default_parts` / `default_retrieval` are the kind's: the paper's part ids and the splits
    that form the retrieval set unless `parts` / `retrieval_splits` say otherwise.
    """
    cfg = dict(cfg)
    df = patches
    if df.empty:
        raise DataError(f"dataset {_name(cfg)!r}: no part patch survives (visible, selected parts {cfg.get('parts')}, "
                        "20 < d/2 < 1000); check `parts`, `max_images` and the annotation files")
    if cfg.get("check_files", True):
        _check_files(df, cfg)
    ids = part_ids(cfg, default_parts)
    df["label"] = df["part_id"].map({p: i for i, p in enumerate(ids)})
    # stable: keeps each adapter's within-image order (cub: part id; coco: person, keypoint id)
    df["_split_rank"] = (df["split"] != "train").astype(int)
    df = df.sort_values(["image_id", "_split_rank"], kind="mergesort")
    df = _typed(df)
    retrieval = cfg.get("retrieval_splits") or list(default_retrieval)
    bad = [s for s in retrieval if s not in ("train", "test")]
    if bad:
        raise DataError(f"dataset {_name(cfg)!r}: retrieval_splits {list(retrieval)} may only name train and test")
    df.attrs = {"dataset": _name(cfg), "kind": cfg.get("kind", ""), "parts": ids, "retrieval_splits": list(retrieval)}
    return df


def select_split(index: pd.DataFrame, split: str, retrieval_splits: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of one split with `row` renumbered 0..n-1; `all` = the retrieval set.

    The retrieval set is `retrieval_splits`, else the index's attrs (set by build_part_index and
    kept by parquet), else every row.
    """
    if split not in SPLITS:
        raise DataError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    if split == "all":
        wanted = retrieval_splits or index.attrs.get("retrieval_splits") or ("train", "test")
    else:
        wanted = (split,)
    out = index[index["split"].isin(list(wanted))].copy()
    if out.empty:
        name = index.attrs.get("dataset", "?")
        raise DataError(f"dataset {name!r}: split {split!r} (= {', '.join(wanted)}) has no part patches; "
                        "configure that split's files (coco: `train` / `test`) or raise `max_images`")
    out = _typed(out)
    out.attrs = dict(index.attrs)
    return out


def write_index(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Parquet, published by one rename."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def read_table(path: str | os.PathLike, columns, what: str, made_by: str) -> pd.DataFrame:
    """A parquet table the workflow writes (`what`, made by the rule / command `made_by`), checked
    for its columns; a missing or foreign file is one error naming it and the fix."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found; build it first ({made_by})")
    df = pd.read_parquet(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: not a {what} (missing columns {missing}); delete it and rebuild it ({made_by})")
    return df


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """A part index file, checked for the contract's columns."""
    return read_table(path, COLUMNS, "part index", "the part_index rule, `partaware index`")
