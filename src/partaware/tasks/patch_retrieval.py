"""Patch retrieval figures (the paper's Figures 2 and 4): neighbours of query patches among all
patches of a patch grid. Figures only: no result rows (rules/figures.smk draws them from the
`patches` store)."""
from __future__ import annotations

from ..projection import projected_model
from . import register
from .base import Task


@register
class PatchRetrieval(Task):
    name = "patch_retrieval"
    role = "grid"
    protocol = "exact"
    runs_from_stores = False

    def figures(self, cfg, dataset):
        """Neighbours of query patches; with a projection-head encoder and `proj_max_dim`, also
        encoded vs projected (the paper's Figure 4)."""
        projected = projected_model(cfg) and cfg["datasets"][dataset]["proj_max_dim"]
        return ["patch_retrieval"] + (["patch_retrieval_projected"] if projected else [])
