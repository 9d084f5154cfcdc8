"""Pair details: per row of a pair table (`pair`, `part`), what a kind knows beyond it that the
correspondence task's reporting splits read (`tasks.correspondence_splits`): SPair's difficulty
fields and geometry-aware flags, SOCO's match kinds. Written beside the pair table
(results/index/<dataset>/pair_details.parquet) by the same job, so both always belong together.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

DETAILS_FILE = "pair_details.parquet"


def details_path(pairs_path: str | os.PathLike) -> Path:
    return Path(pairs_path).with_name(DETAILS_FILE)


def write_details(details: pd.DataFrame, pairs_path: str | os.PathLike) -> None:
    """The details of the pair table at `pairs_path`, published by rename."""
    from ..atomic import atomic_path

    with atomic_path(details_path(pairs_path)) as tmp:
        details.reset_index(drop=True).to_parquet(tmp, index=False)


def read_details(pairs_path: str | os.PathLike) -> pd.DataFrame | None:
    """The details beside a pair table, or None where none were written (an older index)."""
    path = details_path(pairs_path)
    return pd.read_parquet(path) if path.is_file() else None
