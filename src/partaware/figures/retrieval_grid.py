"""Retrieval grids: a few query patches and their k nearest neighbours under each encoder.

One block per query; in it one row per (encoder, feature): `mean` ("encoded") for every encoder
and, where the store has it, `proj` ("projected"), so "encoded vs projected" sits in adjacent
rows. A neighbour's frame is green when it has the query's part label, red otherwise. Patches
are re-cropped from the images through the part index, exactly as extraction cut them.

Neighbours come from the project's one search (`evals.neighbours`: exact cosine by FAISS, the
store read in blocks), for the shown queries only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..data.errors import DataError
from ..data.images import crop_patch, load_rgb
from ..data.parts import read_index
from ..store import open_store
from . import tiles as T

FEATURE_TITLES = {"mean": "encoded (mean)", "cls": "encoded (CLS)", "proj": "projected"}
MARGIN, TITLE_W, BORDER, PAD, GAP, BLOCK_GAP = 8, 170, 4, 6, 14, 12


@dataclass
class GridRow:
    """One row of the grid: a (model, feature) and its neighbours of every query."""

    model: str
    feature: str
    rows: np.ndarray    # (n_queries, k) index rows of the neighbours, -1 where fewer exist
    scores: np.ndarray  # (n_queries, k) cosine similarities


# --------------------------------------------------------------------------------- search
def _valid_rows(store) -> np.ndarray:
    """Index rows of the store's usable samples (skipped images have `valid` 0)."""
    rows = store.read("row")
    if "valid" in store.array_names():
        rows = rows[store.read("valid").astype(bool)]
    return rows


def nearest_rows(store, feature: str, query_rows: Sequence[int], k: int,
                 batch_rows: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(scores, index rows), each (n_queries, k): the most cosine-similar valid samples of each
    query, the query itself excluded, from the project's one search (`evals.neighbours`, FAISS;
    the store is read `batch_rows` rows at a time); -1 / -inf where fewer than k exist."""
    from ..evals.neighbours import Chunks, search

    all_rows = store.read("row")
    valid = store.read("valid").astype(bool) if "valid" in store.array_names() else np.ones(len(all_rows), bool)
    kept = np.flatnonzero(valid)  # store positions of the database's rows
    position = np.full(int(all_rows.max(initial=0)) + 1, -1, np.int64)
    position[all_rows[kept]] = np.arange(len(kept))
    at = position[np.asarray(query_rows, np.int64)]  # each query's place in the database (queries are valid)
    database = Chunks.of_store(store, feature, valid, rows_per_chunk=batch_rows)
    queries = (np.concatenate([database.read(int(p), int(p) + 1) for p in at]) if len(at)
               else np.zeros((0, database.dim), np.float32))
    found = search(database, queries, k, exclude=at)
    rows = np.where(found.ids >= 0, all_rows[kept][np.maximum(found.ids, 0)], -1)
    return found.scores, rows


def correctness(labels: np.ndarray, query_rows: Sequence[int], neighbour_rows: np.ndarray) -> np.ndarray:
    """(n_queries, k) bool: does each neighbour have its query's label? (`labels[row]` is the
    label of index row `row`; a missing neighbour, -1, is never correct.)"""
    labels = np.asarray(labels)
    nb = np.asarray(neighbour_rows)
    same = labels[np.where(nb >= 0, nb, 0)] == labels[np.asarray(query_rows)][:, None]
    return same & (nb >= 0)


def same_part_label(correct: np.ndarray, neighbour_rows: np.ndarray) -> str:
    """`2/2 same part`: out of the neighbours that exist (-1 rows: fewer usable samples than k),
    so a short list does not read as misses."""
    return f"{int(np.sum(correct))}/{int(np.sum(np.asarray(neighbour_rows) >= 0))} same part"


def pick_queries(index: pd.DataFrame, usable: np.ndarray, n: int, seed: int,
                 chosen: Sequence[int] | None = None) -> list[int]:
    """The configured query rows, else `n` seeded-random usable rows spread over the part labels
    (round-robin over labels, so every part appears before any repeats)."""
    usable_set = set(int(r) for r in usable)
    if not usable_set:
        raise DataError("no sample is valid in every store (all images skipped?); nothing to show")
    if chosen:
        bad = [int(r) for r in chosen if int(r) not in usable_set]
        if bad:
            raise DataError(f"figures.queries: rows {bad} are not usable samples of the part index "
                            f"(0..{len(index) - 1}, valid in every store); pick other rows")
        return [int(r) for r in chosen]
    rng = np.random.default_rng(seed)
    labels = index.set_index("row").loc[sorted(usable_set), "label"]
    pools = [list(rng.permutation(g.index.to_numpy())) for _, g in labels.groupby(labels)]
    order = rng.permutation(len(pools))
    out = []
    while len(out) < min(n, len(usable_set)):
        for p in order:
            if pools[p] and len(out) < n:
                out.append(int(pools[p].pop()))
    return out


# --------------------------------------------------------------------------------- drawing
def grid_geometry(n_queries: int, n_rows: int, k: int, tile: int) -> dict:
    """Pixel layout shared by the drawing and the tests: canvas size and cell origins."""
    cell = tile + 2 * BORDER
    row_h = cell + T.LINE + PAD
    block_h = T.LINE + 4 + n_rows * row_h

    def origin(q: int, r: int, c: int) -> tuple[int, int]:
        x = MARGIN + TITLE_W + c * (cell + PAD) + (GAP if c else 0)
        y = MARGIN + q * (block_h + BLOCK_GAP) + T.LINE + 4 + r * row_h
        return x, y

    width = 2 * MARGIN + TITLE_W + (k + 1) * cell + k * PAD + GAP
    height = 2 * MARGIN + n_queries * block_h + (n_queries - 1) * BLOCK_GAP
    return {"width": width, "height": height, "cell": cell, "block_h": block_h, "origin": origin}


def _patches(index: pd.DataFrame, rows: set[int], tile: int) -> dict[int, Image.Image]:
    """Each needed row's patch, cut from its image (each image decoded once)."""
    out = {}
    by_row = index.set_index("row")
    need = by_row.loc[sorted(r for r in rows if r >= 0)]
    for path, group in need.groupby("image_path", sort=False):
        try:
            image = load_rgb(path)
        except DataError:
            image = None
        for row, rec in group.iterrows():
            if image is None:
                out[row] = Image.new("RGB", (tile, tile), T.GREY)
            else:
                box = (rec["x0"], rec["y0"], rec["x1"], rec["y1"])
                out[row] = crop_patch(image, box).resize((tile, tile), Image.Resampling.BICUBIC)
    return out


def draw_grid(index: pd.DataFrame, query_rows: list[int], grid_rows: list[GridRow], k: int,
              tile: int = 96, title: str = "") -> tuple[Image.Image, list[np.ndarray]]:
    """The grid image and, per grid row, its (n_queries, k) correctness matrix."""
    geo = grid_geometry(len(query_rows), len(grid_rows), k, tile)
    canvas = Image.new("RGB", (geo["width"], geo["height"]), T.WHITE)
    draw = ImageDraw.Draw(canvas)
    small, big = T.font(10), T.font(12)
    by_row = index.set_index("row")
    labels = index.sort_values("row")["label"].to_numpy()
    needed = set(query_rows) | {int(r) for g in grid_rows for r in g.rows.ravel()}
    patch = _patches(index, needed, tile)
    correct = [correctness(labels, query_rows, g.rows) for g in grid_rows]
    if title:
        draw.text((MARGIN, MARGIN), T.fit_text(draw, title, TITLE_W - 4, small), fill=T.GREY, font=small)
    for qi, q in enumerate(query_rows):
        rec = by_row.loc[q]
        x, y = geo["origin"](qi, 0, 0)
        head = f"query {qi + 1}: row {q}, {rec['part_name']} (label {rec['label']}), {Path(rec['image_path']).name}"
        draw.text((x, y - T.LINE - 2), T.fit_text(draw, head, geo["width"] - x - MARGIN, big), fill=T.TEXT, font=big)
        for ri, g in enumerate(grid_rows):
            x, y = geo["origin"](qi, ri, 0)
            label = same_part_label(correct[ri][qi], g.rows[qi])
            for li, line in enumerate([g.model, FEATURE_TITLES.get(g.feature, g.feature), label]):
                draw.text((MARGIN, y + 4 + li * T.LINE), T.fit_text(draw, line, TITLE_W - 8, big),
                          fill=T.TEXT, font=big)
            canvas.paste(T.bordered(patch[q], tile, BORDER, T.BLUE), (x, y))
            draw.text((x, y + geo["cell"] + 1), "query", fill=T.BLUE, font=small)
            for c in range(k):
                nb = int(g.rows[qi, c])
                x, y = geo["origin"](qi, ri, c + 1)
                if nb < 0:
                    continue
                colour = T.GREEN if correct[ri][qi, c] else T.RED
                canvas.paste(T.bordered(patch[nb], tile, BORDER, colour), (x, y))
                text = f"{g.scores[qi, c]:.2f} {by_row.loc[nb, 'part_name']}"
                draw.text((x, y + geo["cell"] + 1), T.fit_text(draw, text, geo["cell"], small),
                          fill=colour, font=small)
    return canvas, correct


# --------------------------------------------------------------------------------- entry point
def retrieval_grid(index_path, stores: Mapping[str, str | Path], out, k: int = 5, n_queries: int = 4,
                   queries: Sequence[int] | None = None, seed: int = 0, tile: int = 96,
                   features: Sequence[str] = ("mean", "proj"), title: str = "") -> dict:
    """Draw the grid of one part dataset; `stores` maps model names (row order) to the paths of
    their `all` stores. Returns the queries, grid rows and correctness matrices it drew."""
    index = read_index(index_path)
    opened = {m: open_store(p) for m, p in stores.items()}
    try:
        usable = None
        for store in opened.values():
            rows = _valid_rows(store)
            usable = rows if usable is None else np.intersect1d(usable, rows)
        query_rows = pick_queries(index, usable, n_queries, seed, queries)
        grid_rows = []
        for model, store in opened.items():
            for feature in features:
                if feature in store.array_names():
                    scores, rows = nearest_rows(store, feature, query_rows, k)
                    grid_rows.append(GridRow(model, feature, rows, scores))
    finally:
        for store in opened.values():
            store.close()
    if not grid_rows:
        raise DataError(f"no store holds any of the features {list(features)}; check figures.features")
    image, correct = draw_grid(index, query_rows, grid_rows, k, tile, title)
    T.save_png(image, out)
    return {"queries": query_rows, "rows": grid_rows, "correct": correct, "size": image.size}
