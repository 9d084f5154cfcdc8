"""Position embeddings at sizes other than the one a backbone was built or saved for.

Two cases: a checkpoint saved for another input size is fitted to the model at load time
(`fit_position_tables`: timm's resampling of the absolute table and of the relative bias
tables); a built encoder run on a smaller input (a slide-inference window) swaps in, for that
call only, the DINO-style resampled absolute table and the exact sub-grid of its relative
position indices (`token_grid`).
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table
from torch import Tensor, nn

from .converters import State

log = logging.getLogger(__name__)


def dino_resample_pos_embed(pos: Tensor, built: tuple[int, int], grid: tuple[int, int],
                            num_prefix: int) -> Tensor:
    """The released DINO backbone's `interpolate_pos_encoding`, for any built grid: the patch part
    of `pos` (1, prefix + gh * gw, D) resized bicubically (align_corners=False, no antialias) with
    scale factors (h + 0.1) / gh, (w + 0.1) / gw, which give exactly (h, w) outputs; prefix rows kept."""
    (gh, gw), (h, w) = built, grid
    prefix, patch = pos[:, :num_prefix], pos[:, num_prefix:]
    dim = pos.shape[-1]
    patch = patch.reshape(1, gh, gw, dim).permute(0, 3, 1, 2).float()
    patch = F.interpolate(patch, scale_factor=((h + 0.1) / gh, (w + 0.1) / gw), mode="bicubic",
                          align_corners=False)
    if tuple(patch.shape[-2:]) != (h, w):  # the +0.1 guards against exactly this
        raise RuntimeError(f"position table resampled to {tuple(patch.shape[-2:])}, expected {(h, w)}")
    patch = patch.permute(0, 2, 3, 1).reshape(1, h * w, dim).to(pos.dtype)
    return torch.cat([prefix, patch], dim=1)


def sub_grid_index(index: Tensor, built: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Rows / columns of a (1 + gh * gw)^2 relative position index for the tokens of the top-left
    h x w sub-grid (plus the CLS row and column). A bias depends only on the offset between two
    tokens, so this is the exact table of an h x w grid: no entry is interpolated."""
    (_, gw), (h, w) = built, grid
    rows = torch.arange(h, device=index.device)[:, None] * gw
    cols = torch.arange(w, device=index.device)[None, :]
    keep = torch.cat([torch.zeros(1, dtype=torch.long, device=index.device), 1 + (rows + cols).flatten()])
    return index[keep][:, keep].contiguous()


@contextmanager
def token_grid(backbone: nn.Module, size: tuple[int, int]):
    """Run `backbone` (built for `patch_embed.img_size`) on inputs of `size` (whole patches): relax
    the patch embedding's size check and, for another token grid, swap in a resampled absolute
    position table and sub-grid relative position indices; all is put back on exit. At the built
    size nothing changes."""
    pe = backbone.patch_embed
    if getattr(pe, "img_size", None) is None or tuple(size) == tuple(pe.img_size) \
            or getattr(backbone, "dynamic_img_size", False):
        yield
        return
    built = tuple(int(g) for g in pe.grid_size)
    grid = (size[0] // int(pe.patch_size[0]), size[1] // int(pe.patch_size[1]))
    rel = [m for m in backbone.modules()
           if isinstance(getattr(m, "relative_position_index", None), Tensor)
           and getattr(m, "window_size", None) is not None]
    if grid != built and getattr(backbone, "rope", None) is not None:
        raise ValueError(f"{type(backbone).__name__} uses rotary position embeddings made for its "
                         f"{built[0]} x {built[1]} token grid, not {grid[0]} x {grid[1]}; build it with "
                         f"timm_kwargs: {{dynamic_img_size: true}} to run it at other input sizes")
    if rel and (grid[0] > built[0] or grid[1] > built[1]):
        raise ValueError(f"a {grid[0]} x {grid[1]} token grid is larger than the {built[0]} x {built[1]} "
                         f"grid this encoder's relative position tables cover; build it with a larger "
                         f"img_size (at least {max(grid) * int(pe.patch_size[0])})")
    saved: list[tuple[object, str, object]] = []

    def swap(obj, name, value):
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    try:
        swap(pe, "strict_img_size", False)
        if grid == built:
            yield
            return
        pos = getattr(backbone, "pos_embed", None)
        if isinstance(pos, nn.Parameter):
            prefix = 0 if getattr(backbone, "no_embed_class", False) else backbone.num_prefix_tokens
            swap(backbone, "pos_embed", nn.Parameter(
                dino_resample_pos_embed(pos.detach(), built, grid, prefix), requires_grad=False))
        for m in rel:
            swap(m, "relative_position_index", sub_grid_index(m.relative_position_index, built, grid))
            swap(m, "window_size", tuple(grid))
            if hasattr(m, "window_area"):
                swap(m, "window_area", grid[0] * grid[1])
        yield
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)


def fit_position_tables(sd: State, model: nn.Module) -> State:
    """Resample `pos_embed` / relative position tables saved for another input size."""
    target = model.state_dict()
    out = dict(sd)
    pos = out.get("pos_embed")
    want = target.get("pos_embed")
    if pos is not None and want is not None and pos.shape != want.shape and pos.dim() == 3 \
            and pos.shape[-1] == want.shape[-1]:
        # registers / DeiT III / SigLIP: no position rows for (some) prefix tokens
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        n = pos.shape[1] - prefix
        if math.isqrt(n) ** 2 == n:
            log.warning("resampling pos_embed %s -> %s", tuple(pos.shape), tuple(want.shape))
            out["pos_embed"] = resample_abs_pos_embed(
                pos, new_size=list(model.patch_embed.grid_size), num_prefix_tokens=prefix, verbose=False)
    for key, table in sd.items():
        if key.endswith("relative_position_bias_table") and key in target \
                and table.shape != target[key].shape and table.dim() == 2:
            window = model.get_submodule(key.rsplit(".", 1)[0]).window_size
            log.warning("resizing %s %s -> %s", key, tuple(table.shape), tuple(target[key].shape))
            out[key] = resize_rel_pos_bias_table(table, new_window_size=window,
                                                 new_bias_shape=target[key].shape)
    return out
