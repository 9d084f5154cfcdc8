"""The part panel of a part dataset's page: query patches cut from the shown images and, for each
encoder, their top-k neighbours among all the dataset's part patches, each marked same part or not.

The neighbours come from the project's one search (`figures.retrieval_grid.nearest_rows`:
exact cosine by FAISS over the `mean` feature, the query itself left out), precomputed here for
a bounded set of queries (`explore.queries`, spread over the parts); the page only shows them.
Patches are cut from their images through the part index, as extraction cut them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..api import Features
from ..data.errors import DataError
from ..data.images import crop_patch, load_rgb
from ..figures.retrieval_grid import correctness, nearest_rows, pick_queries
from .images import data_uri

FEATURE = "mean"
THUMB = 48
THUMB_BYTES = 2400  # a 48 px JPEG patch in base64, a generous estimate for the size cap


def estimate(n_queries: int, k: int, n_models: int) -> int:
    """Page bytes of the panel at most (every neighbour a different patch)."""
    return n_queries * (1 + k * n_models) * (THUMB_BYTES + 120)


def _norm(path) -> str:
    return os.path.normpath(os.path.abspath(str(path)))


def neighbours(stores: dict[str, Path], shown_paths: list[Path], sizes: list[tuple[int, int]], n_queries: int,
               k: int, seed: int) -> dict | None:
    """The panel's payload, or None when no part patch of the shown images is valid in every store."""
    opened = {m: Features(p) for m, p in stores.items()}
    try:
        first = next(iter(opened.values()))
        if first.index_path is None:
            raise DataError(f"{first.path}: no part index beside it (results/index/<dataset>/<split>.parquet); "
                            "rerun the workflow")
        index = first.index
        usable = np.ones(len(index), bool)
        for f in opened.values():
            if "valid" in f.arrays:
                usable &= f.read("valid").astype(bool)
        at = {_norm(p): i for i, p in enumerate(shown_paths)}
        on_shown = index["image"].map(lambda p: _norm(p) in at).to_numpy()
        candidates = index["row"].to_numpy()[usable & on_shown]
        if not len(candidates):
            return None
        queries = pick_queries(index, candidates, n_queries, seed)
        labels = index.set_index("row")["label"].sort_index().to_numpy()
        found = {}
        for model, f in opened.items():
            scores, rows = nearest_rows(f.store, FEATURE, queries, k)
            found[model] = (scores, rows, correctness(labels, queries, rows))
    finally:
        for f in opened.values():
            f.close()
    by_row = index.set_index("row")
    thumbs, thumb_of = [], {}
    needed = set(queries) | {int(r) for _, rows, _ in found.values() for r in rows.ravel() if r >= 0}
    for path, group in by_row.loc[sorted(needed)].groupby("image", sort=False):
        try:
            image = load_rgb(path)
        except DataError:  # unreadable since extraction: a grey patch, as the retrieval grid draws it
            image = None
        for row, rec in group.iterrows():
            patch = (Image.new("RGB", (THUMB, THUMB), (160, 160, 160)) if image is None else
                     crop_patch(image, rec["box"]).resize((THUMB, THUMB), Image.Resampling.BICUBIC))
            thumb_of[int(row)] = len(thumbs)
            thumbs.append(data_uri(patch, "JPEG"))
    out = []
    for qi, row in enumerate(queries):
        rec = by_row.loc[row]
        image = at[_norm(rec["image"])]
        w, h = sizes[image]
        x0, y0, x1, y1 = rec["box"]
        nbs = {}
        for model, (scores, rows, same) in found.items():
            nbs[model] = [[thumb_of[int(r)], str(by_row.loc[int(r), "part"]), bool(s), round(float(c), 4), int(r)]
                          for r, s, c in zip(rows[qi], same[qi], scores[qi]) if r >= 0]
        out.append({"row": int(row), "image": image, "part": str(rec["part"]), "thumb": thumb_of[int(row)],
                    "box": [x0 / w, y0 / h, x1 / w, y1 / h], "neighbours": nbs})
    return {"feature": FEATURE, "k": k, "n_database": int(usable.sum()), "queries": out, "thumbs": thumbs}
