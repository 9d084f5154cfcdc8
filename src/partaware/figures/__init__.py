"""Figures drawn from the feature cache and the results table (never from an encoder).

- `retrieval_grid`: query patches and their nearest neighbours, one row per encoder/feature.
- `feature_maps`: the first three principal components of a block's token map, as RGB.
- `summary`: bar charts of the table, with the paper's values marked.

Grids are composed with PIL so their pixel layout is exact (tests read the borders back);
the summary uses matplotlib's Agg backend. Every PNG is written by one rename.
"""
from __future__ import annotations

import copy

# The `figures:` config section (optional; these are its defaults).
DEFAULTS = {
    "k": 5,                     # neighbours per query in the retrieval grid (query excluded)
    "n_queries": 4,             # seeded-random queries, spread over the part labels ...
    "queries": {},              # ... unless rows are chosen per dataset: {cub: [12, 345]}
    "features": ["mean", "proj"],  # grid rows per encoder: encoded, and projected where cached
    "n_images": 4,              # images in the feature-map figure
    "seed": 0,
    "tile": 96,                 # grid patch side in pixels
    "cell": 128,                # feature-map tile side in pixels
}


GRID_KEYS = ("k", "n_queries", "queries", "features", "seed", "tile")
MAPS_KEYS = ("n_images", "seed", "cell")


def figure_settings(cfg: dict, dataset: str | None = None, keys=None) -> dict:
    """The figure settings of one dataset: defaults, the config's `figures:`, its own queries.

    `keys` keeps only what one figure uses, so a rule's params (and its reruns) follow those.
    """
    out = copy.deepcopy(DEFAULTS)
    out.update(copy.deepcopy(cfg.get("figures") or {}))
    queries = out.pop("queries") or {}
    out["queries"] = list(queries.get(dataset) or []) if dataset else []
    return {k: out[k] for k in keys} if keys else out
