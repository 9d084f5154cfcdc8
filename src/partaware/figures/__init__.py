"""Figures drawn from the feature cache and the results table (never from an encoder).

- `retrieval_grid`: query patches and their nearest neighbours, one row per encoder/feature.
- `feature_maps`: the first three principal components of a block's token map, as RGB.
- `summary`: bar charts of the table, with the paper's values marked.
- `contrast`: object- vs part-level mIoU per encoder and their rankings (the paper's Figure 6).

Grids are composed with PIL so their pixel layout is exact (tests read the borders back);
the summary uses matplotlib's Agg backend. Every PNG is written by one rename.
"""
from __future__ import annotations

import copy

GRID_KEYS = ("k", "n_queries", "queries", "features", "seed", "tile")
MAPS_KEYS = ("n_images", "seed", "cell")


def figure_settings(cfg: dict, dataset: str | None = None, keys=None) -> dict:
    """The figure settings of one dataset: the config's `figures:` over the schema's defaults,
    with the dataset's own queries.

    `keys` keeps only what one figure uses, so a rule's params (and its reruns) follow those.
    """
    from ..config import fill_defaults, load_schema

    out = fill_defaults(load_schema()["properties"]["figures"], copy.deepcopy(cfg.get("figures") or {}))
    queries = out.pop("queries") or {}
    out["queries"] = list(queries.get(dataset) or []) if dataset else []
    return {k: out[k] for k in keys} if keys else out
