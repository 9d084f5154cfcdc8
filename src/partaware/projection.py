"""Which configured encoder the encoded-vs-projected figure uses (the paper's Figure 4): a config
question that the patchgrid kind, the patch_retrieval task and the figure rules all ask, kept
low (beside the checkpoint formats) so that none of them imports `figures/` for it.
"""
from __future__ import annotations

from .errors import ConfigError

HEAD_FORMATS = ("mocov3", "dino", "ibot")  # checkpoint formats whose files may hold a projection head


def projected_model(cfg: dict) -> str | None:
    """The encoder of the encoded-vs-projected figure (the paper's Figure 4: MoCo v3):
    `figures.projected_model`, else the first model whose checkpoint format may carry a
    projection head (mocov3, dino, ibot); None when there is none."""
    models = cfg["models"]
    chosen = (cfg.get("figures") or {}).get("projected_model")
    if chosen is None:
        return next((m for m, spec in models.items()
                     if spec["weights"] == "checkpoint" and spec.get("format") in HEAD_FORMATS), None)
    if chosen not in models:
        raise ConfigError(f"config key figures.projected_model: {chosen!r} is not a configured model; use one of "
                          f"{', '.join(models)}")
    spec = models[chosen]
    if spec["weights"] != "checkpoint" or spec.get("format") not in HEAD_FORMATS:
        raise ConfigError(f"config key figures.projected_model: model {chosen!r} cannot have a projection head "
                          f"(weights: {spec['weights']}, format: {spec.get('format')}); name a model with "
                          f"weights: checkpoint and format {', '.join(HEAD_FORMATS)}")
    return chosen
