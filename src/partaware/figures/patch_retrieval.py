"""The paper's patch-retrieval figures (Figures 2 and 4) from `kind: patchgrid` stores.

Each block is one query patch; in it one row per (encoder, feature): the query's image view with
the patch boxed in red, the query patch (blue frame), then its `k` most cosine-similar patches
of the whole set, the query itself excluded (as the released script: the top hit, itself, is
dropped; other patches of the query's image stay and get an orange frame, the grid's patches
overlap by half). `patch_retrieval` has one row per encoder (Figure 2: DeiT, MoCo v3, CAE);
`patch_retrieval_projected` compares one encoder's `mean` ("encoded") and `proj` ("projected")
features (Figure 4: MoCo v3). The pixels are re-cut from the images with `data.patchgrid.Grid`,
the code extraction cut them with; no encoder runs here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..data.errors import DataError
from ..data.patchgrid import Grid
from ..projection import HEAD_FORMATS, projected_model  # noqa: F401 (re-exported)
from . import tiles as T

PATCH_KEYS = ("patch_k", "n_queries", "patch_queries", "patch_features", "seed", "patch_tile")
FEATURE_TITLES = {"mean": "encoded (mean)", "cls": "encoded (CLS)", "proj": "projected"}
ORANGE = (235, 130, 0)    # a neighbour cut from the query's own image
FRAME = (190, 190, 190)   # a neighbour from another image
COLUMNS = 12              # neighbours per line; more wrap onto further lines
MARGIN, TITLE_W, BORDER, PAD, GAP, BLOCK_GAP = 8, 170, 3, 4, 12, 14


@dataclass
class PatchRow:
    """One row of a block: a (model, feature) and the neighbours of every query."""

    model: str
    feature: str
    rows: np.ndarray | None    # (n_queries, k) store rows, -1 where fewer exist; None: not drawn
    scores: np.ndarray | None  # (n_queries, k) cosine similarities
    note: str = ""             # drawn instead of the tiles when `rows` is None


def patch_settings(cfg: dict, dataset: str) -> dict:
    """The `figures:` settings these figures use, with `patch_queries` narrowed to the dataset's list
    (so a rule's params, and its reruns, follow only them)."""
    from . import figure_settings

    out = figure_settings(cfg, dataset, PATCH_KEYS)
    out["patch_queries"] = list((out["patch_queries"] or {}).get(dataset) or [])
    return out


# --------------------------------------------------------------------------------- queries
def resolve_queries(chosen: Sequence, images: Sequence[str], grid: Grid, usable: np.ndarray,
                    n: int, seed: int) -> list[int]:
    """Store rows of the queries: the configured ones (rows, or 'file stem:patch index'), else `n`
    seeded-random usable rows from distinct images."""
    usable_set = set(int(r) for r in usable)
    if not usable_set:
        raise DataError("no patch is valid in every store (all images skipped?); nothing to show")
    per = grid.n_patches
    if not chosen:
        rng = np.random.default_rng(seed)
        out, seen = [], set()
        for row in rng.permutation(np.asarray(sorted(usable_set))):
            if int(row) // per not in seen:
                seen.add(int(row) // per)
                out.append(int(row))
            if len(out) == n:
                break
        return out
    stems: dict[str, list[int]] = {}
    for i, path in enumerate(images):
        stems.setdefault(Path(path).stem, []).append(i)
    out = []
    for q in chosen:
        if isinstance(q, str):
            stem, _, patch = q.rpartition(":")
            found = stems.get(stem, [])
            if len(found) != 1 or int(patch) >= per:
                why = (f"patch {patch} is not below {per}" if len(found) == 1 else
                       "no image of the set has that file stem" if not found else
                       f"{len(found)} images have that file stem; give the row instead")
                raise DataError(f"figures.patch_queries: {q!r}: {why} (the set: {len(images)} images x {per} "
                                "patches; see `max_images`)")
            q = found[0] * per + int(patch)
        if int(q) not in usable_set:
            raise DataError(f"figures.patch_queries: row {q} is not a usable patch (rows 0..{len(images) * per - 1}, "
                            "valid in every store); pick another")
        out.append(int(q))
    return out


# --------------------------------------------------------------------------------- pixels
def _cut(images: Sequence[str], grid: Grid, rows: set[int], tile: int) -> tuple[dict, dict]:
    """(row -> its patch at full size, image index -> its view at tile size), each image decoded
    once; an unreadable image gives grey tiles."""
    from ..data.images import load_rgb

    boxes, per = grid.boxes(), grid.n_patches
    patches, views = {}, {}
    for img in sorted({r // per for r in rows if r >= 0}):
        try:
            view = grid.view(load_rgb(images[img]))
        except DataError:
            view = Image.new("RGB", (grid.side, grid.side), T.GREY)
        views[img] = view.resize((tile, tile), Image.Resampling.BICUBIC)
        for r in (r for r in rows if r >= 0 and r // per == img):
            patches[r] = view.crop(boxes[r % per])
    return patches, views


def _context(view: Image.Image, grid: Grid, patch: int, tile: int) -> Image.Image:
    """The image view at tile size with the query patch boxed in red (the released figure's query)."""
    out = view.copy()
    scale = tile / grid.side
    left, top, right, bottom = (round(v * scale) for v in grid.boxes()[patch])
    ImageDraw.Draw(out).rectangle([left, top, right - 1, bottom - 1], outline=T.RED, width=2)
    return out


# --------------------------------------------------------------------------------- drawing
def patch_geometry(n_queries: int, n_rows: int, k: int, tile: int) -> dict:
    """Pixel layout shared by the drawing and the tests. `origin(q, r, c)`: the top-left of a
    framed tile of block q, row r; c = -2 the image view, -1 the query, 0..k-1 the neighbours
    (COLUMNS per line)."""
    cell = tile + 2 * BORDER
    cols = min(k, COLUMNS)
    lines = math.ceil(k / cols)
    line_h = cell + T.LINE
    row_h = lines * line_h + PAD
    block_h = T.LINE + 4 + n_rows * row_h
    lead = 2 * (cell + PAD) + GAP

    def origin(q: int, r: int, c: int) -> tuple[int, int]:
        y = MARGIN + q * (block_h + BLOCK_GAP) + T.LINE + 4 + r * row_h
        x = MARGIN + TITLE_W
        if c < 0:
            return x + (c + 2) * (cell + PAD), y
        return x + lead + (c % cols) * (cell + PAD), y + (c // cols) * line_h

    width = 2 * MARGIN + TITLE_W + lead + cols * cell + (cols - 1) * PAD
    height = 2 * MARGIN + n_queries * block_h + (n_queries - 1) * BLOCK_GAP
    return {"width": width, "height": height, "cell": cell, "block_h": block_h, "origin": origin}


def draw_patch_grid(images: Sequence[str], grid: Grid, query_rows: list[int], rows: list[PatchRow], k: int,
                    tile: int = 64, title: str = "") -> tuple[Image.Image, list[np.ndarray | None]]:
    """The figure and, per row, its (n_queries, k) matrix: is the neighbour from the query's image?"""
    per = grid.n_patches
    geo = patch_geometry(len(query_rows), len(rows), k, tile)
    canvas = Image.new("RGB", (geo["width"], geo["height"]), T.WHITE)
    draw = ImageDraw.Draw(canvas)
    small, big = T.font(10), T.font(12)
    needed = set(query_rows) | {int(r) for g in rows if g.rows is not None for r in g.rows.ravel()}
    patch, views = _cut(images, grid, needed, tile)
    query_img = np.asarray(query_rows) // per
    same = [None if g.rows is None else (g.rows >= 0) & (g.rows // per == query_img[:, None]) for g in rows]
    if title:
        draw.text((MARGIN, MARGIN), T.fit_text(draw, title, TITLE_W - 4, small), fill=T.GREY, font=small)
    for qi, q in enumerate(query_rows):
        x, y = geo["origin"](qi, 0, -2)
        head = f"query {qi + 1}: {Path(images[q // per]).name}, patch {q % per} (row {q})"
        if qi == 0:
            head += "  (frames: orange = the query's own image, grey = other images)"
        draw.text((x, y - T.LINE - 2), T.fit_text(draw, head, geo["width"] - x - MARGIN, big), fill=T.TEXT, font=big)
        context = _context(views[q // per], grid, q % per, tile)
        for ri, g in enumerate(rows):
            x, y = geo["origin"](qi, ri, -2)
            lines = [g.model, FEATURE_TITLES.get(g.feature, g.feature)]
            if g.rows is not None:
                lines.append(f"{int(same[ri][qi].sum())}/{k} from its image")
            for li, line in enumerate(lines):
                draw.text((MARGIN, y + 4 + li * T.LINE), T.fit_text(draw, line, TITLE_W - 8, big),
                          fill=T.TEXT, font=big)
            canvas.paste(T.bordered(context, tile, BORDER, T.GREY), (x, y))
            x, y = geo["origin"](qi, ri, -1)
            canvas.paste(T.bordered(patch[q], tile, BORDER, T.BLUE), (x, y))
            draw.text((x, y + geo["cell"] + 1), "query", fill=T.BLUE, font=small)
            if g.rows is None:
                x, y = geo["origin"](qi, ri, 0)
                draw.text((x, y + 4), T.fit_text(draw, g.note, geo["width"] - x - MARGIN, big), fill=T.RED, font=big)
                continue
            for c in range(k):
                nb = int(g.rows[qi, c])
                if nb < 0:
                    continue
                x, y = geo["origin"](qi, ri, c)
                colour = ORANGE if same[ri][qi, c] else FRAME
                canvas.paste(T.bordered(patch[nb], tile, BORDER, colour), (x, y))
                draw.text((x, y + geo["cell"] + 1), f"{g.scores[qi, c]:.2f}", fill=T.TEXT, font=small)
    return canvas, same


# --------------------------------------------------------------------------------- entry points
def _open(stores: Mapping[str, str | Path], images: Sequence[str], grid: Grid) -> dict:
    """The stores, each checked against the image list and grid the figure re-cuts pixels with."""
    from ..store import open_store

    opened = {}
    try:
        for model, path in stores.items():
            store = opened[model] = open_store(path)
            want = len(images) * grid.n_patches
            kept = store.attrs.get("patch_grid") or {}
            geometry = {"size": grid.size, "resize": grid.resize, "grid": grid.grid, "stride": grid.step}
            if store.n_rows != want or any(kept.get(key) != v for key, v in geometry.items()):
                raise DataError(f"{path}: the store holds {store.n_rows} rows of grid {kept or '?'}, but the dataset "
                                f"gives {len(images)} images x {grid.n_patches} patches of grid {geometry}; the image "
                                "folder or the grid changed since extraction: rerun the workflow")
    except BaseException:
        for store in opened.values():
            store.close()
        raise
    return opened


def _usable(opened: dict) -> np.ndarray:
    usable = None
    for store in opened.values():
        rows = store.read("row")
        if "valid" in store.array_names():
            rows = rows[store.read("valid").astype(bool)]
        usable = rows if usable is None else np.intersect1d(usable, rows)
    return usable


def _draw(images, grid, opened, wanted: list[tuple[str, str, str]], out, k, n_queries, queries, seed, tile, title):
    """Search each wanted (model, feature, note if absent) for the queries, draw, save."""
    from .retrieval_grid import nearest_rows

    try:
        query_rows = resolve_queries(queries or [], images, grid, _usable(opened), n_queries, seed)
        rows = []
        for model, feature, note in wanted:
            store = opened[model]
            if feature in store.array_names():
                scores, found = nearest_rows(store, feature, query_rows, k)
                rows.append(PatchRow(model, feature, found, scores))
            else:
                rows.append(PatchRow(model, feature, None, None, note.format(model=model, feature=feature)))
    finally:
        for store in opened.values():
            store.close()
    image, same = draw_patch_grid(images, grid, query_rows, rows, k, tile, title)
    T.save_png(image, out)
    return {"queries": query_rows, "rows": rows, "same_image": same, "size": image.size}


def patch_retrieval(images: Sequence[str], grid: Grid, stores: Mapping[str, str | Path], out, k: int = 24,
                    n_queries: int = 4, queries: Sequence | None = None, seed: int = 0, tile: int = 64,
                    features: Sequence[str] = ("mean",), title: str = "") -> dict:
    """Figure 2: one row per encoder (and feature) of `stores` (model -> its `patches` store, in
    row order). Returns the queries, rows, same-image matrices and the image size."""
    opened = _open(stores, images, grid)
    wanted = [(m, f, "no {feature} in {model}'s store") for m in stores for f in features]
    return _draw(images, grid, opened, wanted, out, k, n_queries, queries, seed, tile, title)


def patch_retrieval_projected(images: Sequence[str], grid: Grid, model: str, store: str | Path, out, k: int = 24,
                              n_queries: int = 4, queries: Sequence | None = None, seed: int = 0,
                              tile: int = 64, title: str = "") -> dict:
    """Figure 4: one encoder's `mean` (encoded) and `proj` (projected) neighbours, adjacent rows.
    A store without `proj` (a checkpoint without its head, or one above the dataset's
    `proj_max_dim`) gets a row saying so instead."""
    opened = _open({model: store}, images, grid)
    note = ("no projected features: {model}'s store has no `proj` (its checkpoint holds no projection head, "
            "or its output has more dimensions than the dataset's proj_max_dim)")
    return _draw(images, grid, opened, [(model, "mean", ""), (model, "proj", note)], out, k, n_queries, queries,
                 seed, tile, title)
