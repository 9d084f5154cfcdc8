"""Build one dataset's explorer page from the workflow's stores: pick the images, fit the size
cap, export each encoder's token blocks, PCA tiles and (part datasets) the neighbour panel.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .. import kinds
from ..data.pairs import image_table, read_pairs
from ..store import open_store
from . import export as E
from . import part_neighbours
from .images import data_uri, pca_tiles, pick, view
from .page import write_page
from .plan import Sources

log = logging.getLogger(__name__)

PAGE_BYTES = 40_000       # the script and styles
IMAGE_BYTES = 9_000       # one shown image (JPEG at `explore.tile`), a generous estimate
PCA_BYTES = 600           # one PCA tile (h x w PNG) of one block of one encoder


def image_paths(cfg: dict, src: Sources, results: Path) -> tuple[dict[str, Path], list[dict] | None]:
    """key -> image file of every image the dense store may hold (and the kind's samples, segmentation)."""
    ds = cfg["datasets"][src.dataset]
    if src.kind == "pairs":
        table = image_table(read_pairs(results / "index" / src.dataset / "pairs.parquet"))
        return dict(zip(table["key"].astype(str), map(Path, table["path"]))), None
    samples = kinds.of(ds).samples(ds, src.dense)
    return {str(s["id"]): Path(s["img"]) for s in samples}, samples


def build(cfg: dict, src: Sources, out: Path, results: Path = Path("results")) -> dict:
    """Write `out`; returns what it holds (images, blocks per encoder, notes, bytes)."""
    ex = cfg["explore"]
    models = sorted(cfg["models"])  # the order of the table's columns (a job spec's JSON keys are sorted)
    ds = cfg["datasets"][src.dataset]
    paths, samples = image_paths(cfg, src, results)
    stores = {m: open_store(src.dense_path(results, m)) for m in models}
    try:
        shown = pick(stores, src.kind, paths, ex["images"], samples)
        if len(shown.keys) < 2:
            raise ValueError(f"{src.dense_path(results, models[0])}: {len(shown.keys)} image(s) held by every "
                             f"encoder's store; the page compares at least 2 ({len(shown.left_out)} left out, e.g. "
                             f"{shown.left_out[:1]}); rerun the workflow")
        arrays = {m: E.block_arrays(s.array_names()) for m, s in stores.items()}
        common = [a for a in arrays[models[0]] if all(a in arrays[m] for m in models)]
        shapes = {m: {a: s.info(a)["shape"][1:] for a in common} for m, s in stores.items()}
        per_image = {a: sum(E.block_bytes(h, w, d) + PCA_BYTES for d, h, w in (shapes[m][a] for m in models))
                     for a in common}
        n_q = ex["queries"] if src.parts else 0
        fixed = PAGE_BYTES + part_neighbours.estimate(n_q, ex["k"], len(models))
        fit = E.fit_cap(per_image, IMAGE_BYTES, fixed, len(shown.keys), int(ex["max_mb"] * 2**20))
        shown = shown.first(fit.n_images)
        blocks = {m: [_block(stores[m], a, shown.rows[m]) for a in fit.blocks] for m in models}
    finally:
        for s in stores.values():
            s.close()
    size = int(ds["size"]) if src.kind == "segmentation" else int(cfg["correspondence"]["size"])
    pictures, sizes = zip(*(view(p, src.kind, size, ex["tile"]) for p in shown.paths))
    payload = {
        "dataset": src.dataset, "kind": src.kind, "store": src.dense, "input_size": size,
        "images": [{"key": k, "src": data_uri(im, "JPEG")} for k, im in zip(shown.keys, pictures)],
        "left_out": [{"key": k, "reason": r} for k, r in shown.left_out],
        "notes": fit.notes,
        "models": [{"name": m, "blocks": [b.payload() for b in blocks[m]],
                    "pca": {b.name: pca_tiles(b.tokens, b.h, b.w) for b in blocks[m]}} for m in models],
        "parts": None,
    }
    if src.parts:
        part_stores = {m: src.parts_path(results, m) for m in models}
        payload["parts"] = part_neighbours.neighbours(part_stores, shown.paths, list(sizes), n_q, ex["k"],
                                                      ex["seed"])
        if payload["parts"] is None:
            payload["notes"].append("no part patch of the shown images is valid in every encoder's patch store")
    n_bytes = write_page(payload, out)
    log.info("%s: %d images, %d encoders, blocks %s, %d left out, %.2f MB", out, len(shown.keys), len(models),
             [E.block_label(a) for a in fit.blocks], len(shown.left_out), n_bytes / 2**20)
    return {"images": shown.keys, "blocks": fit.blocks, "left_out": shown.left_out, "notes": payload["notes"],
            "bytes": n_bytes}


def _block(store, array: str, rows: list[int]) -> E.Block:
    maps = np.concatenate([store.read_checked(array, r, r + 1, valid=np.ones(1, bool)) for r in rows])
    _, d, h, w = maps.shape
    return E.Block(array, h, w, d, E.to_f16_tokens(maps))

