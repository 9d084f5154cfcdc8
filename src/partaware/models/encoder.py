"""Frozen ViT encoders built from timm, loaded with random, timm or official weights.

`build_encoder(model_cfg, checkpoint)` is the only entry point the pipeline needs. Config keys:

- `arch` (required): any timm model name, optionally with a pretrained tag (`name.tag`);
  the model must be ViT-like: patch tokens, and a CLS token or a pooling head (SigLIP).
- `weights`: `random` (seeded timm init, key `seed`, default 0) | `timm` (timm's own pretrained
  weights) | `checkpoint` (an official file, converted by `format`) | `file` (a local timm state
  dict, `.safetensors` or `.pth`/`.pt`/`.bin`, for any timm arch; `local_file.py`).
- `format`: converter for `weights: checkpoint`: timm, deit, mocov3, dino, ibot, beit, mae, cae.
- `checkpoint` / `path`: path of the file (the `checkpoint` argument takes precedence);
  `sha256`: expected hash, verified before loading; `trust_pickle`: allow a file whose pickle
  holds more than tensors, numbers and the argparse/numpy values of the official checkpoints (it
  could run code on load; needs `sha256`); `checkpoint_key`: which entry of the file
  holds the weights (e.g. `student` for DINO/iBOT instead of the default `teacher`; for
  `weights: file` also a dotted path ending in a key prefix, e.g. `teacher.backbone`).
- `img_size` (int): input size passed to timm; absolute / relative position tables of the
  checkpoint are resampled to it when it differs from the checkpoint's.
- `timm_kwargs` (dict): extra arguments for `timm.create_model` (e.g. `depth` in tests).
- `ln_eps`: LayerNorm epsilon of the backbone (default: the timm model's, 1e-6 for ViT/BEiT);
  the released retrieval/classification code built CAE with 1e-5.
- `mean`, `std`: the input normalisation the data transforms should use (default ImageNet's).
"""

from __future__ import annotations

import difflib
import logging
from functools import partial
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from .checkpoints import CheckpointError, load_checkpoint_file, verify_checkpoint
from .converters import CONVERTERS, State
from .heads import build_head
from .local_file import drop_classifier, read_file, select_state, timm_filter
from .positions import dino_resample_pos_embed, fit_position_tables, token_grid

__all__ = ["WEIGHTS", "BEIT_FORMATS", "Encoder", "dino_resample_pos_embed", "check_arch", "load_strict",
           "build_encoder", "IMAGENET_MEAN", "IMAGENET_STD"]

log = logging.getLogger(__name__)

WEIGHTS = ("random", "timm", "checkpoint", "file")
BEIT_FORMATS = ("beit", "cae")


class Encoder(nn.Module):
    """A frozen backbone (+ optional projection head) giving the features the pipeline stores.

    Inputs are already normalised images (B, 3, H, W). Pixels past the last whole patch are
    dropped, as a stride-p conv floors (a 512 crop gives a 36 x 36 grid at patch 14, 32 x 32 at
    patch 16). At the built `img_size` the backbone runs as timm builds it. At another grid (a
    slide-inference window smaller than the crop) it runs as the authors' DINO segmentation
    backbone does: the absolute position table is resampled bicubically to the new token grid
    (`dino_resample_pos_embed`); relative position tables (BEiT, CAE) are indexed for the smaller
    grid (`positions.token_grid`); models built with `dynamic_img_size` (EVA-02's rotary
    embeddings) adapt themselves.

    Prefix tokens (CLS, registers, distillation token: timm's `num_prefix_tokens`) never enter
    `mean` or the dense maps. `cls` is the class token where the model has one, else the model's
    pooled output (`forward_head(pre_logits=True)`: SigLIP's attention pooling); `cls_source`
    says which.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, *,
                 mean_std=(IMAGENET_MEAN, IMAGENET_STD), info: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        patch = tuple(backbone.patch_embed.patch_size)
        if patch[0] != patch[1]:
            raise ValueError(f"non-square patches {patch} are not supported")
        self.patch_size = int(patch[0])
        self.num_prefix_tokens = int(backbone.num_prefix_tokens)
        self.embed_dim = int(backbone.embed_dim)
        self.depth = len(backbone.blocks)
        self.has_proj = head is not None
        self.proj_dim = int(head.out_dim) if head is not None else None
        self.mean_std = (tuple(mean_std[0]), tuple(mean_std[1]))
        self.info = dict(info or {})
        self.checkpoint_sha256 = self.info.get("checkpoint_sha256")
        self.cls_source = "token" if getattr(backbone, "cls_token", None) is not None else "pooled"
        self._token_norm = _per_token_norm(backbone)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        """Always eval: the encoder is frozen and its BatchNorms must use running statistics."""
        return super().train(False)

    def forward_all(self, x: Tensor, blocks=(), summaries=()) -> tuple[dict[str, Tensor], dict[int, Tensor]]:
        """One backbone pass giving the pooled features, the dense maps of `blocks` and the
        per-block summaries of `summaries` (1-based): `blocks/<k>/mean` (B, D), the mean of block
        k's raw patch tokens, and `blocks/<k>/cls` (B, D), its raw class token (only for a model
        with one). Raw = the block's output before the final norm, as for the dense maps."""
        wanted, summed = self._check_blocks(blocks), self._check_blocks(summaries)
        taken = sorted(set(wanted) | set(summed))
        p = self.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        if min(grid) < 1:
            raise ValueError(f"input of size {tuple(x.shape[-2:])} is smaller than one {p} x {p} patch")
        x = x[..., :grid[0] * p, :grid[1] * p]  # what a stride-p conv sees: whole patches only
        with_prefix = bool(summed) and self.num_prefix_tokens > 0
        with token_grid(self.backbone, tuple(x.shape[-2:])):
            if taken:
                raw, maps = self.backbone.forward_intermediates(
                    x, indices=[b - 1 for b in taken], norm=False, output_fmt="NCHW",
                    return_prefix_tokens=with_prefix)
            else:
                raw, maps = self.backbone.forward_features(x), []
        prefixes = dict(zip(taken, (m[1] for m in maps))) if with_prefix else {}
        maps = dict(zip(taken, (m[0] for m in maps) if with_prefix else maps))
        final = self._token_norm(raw) if self._token_norm is not None else raw
        cls = final[:, 0] if self.cls_source == "token" else self.backbone.forward_head(raw, pre_logits=True)
        feats = {"cls": cls, "mean": final[:, self.num_prefix_tokens:].mean(dim=1), "tokens": final}
        if self.head is not None:
            feats["proj"] = self.head(final[:, 0])
        for k in summed:
            feats[f"blocks/{k}/mean"] = maps[k].mean(dim=(2, 3))
            if self.cls_source == "token":
                feats[f"blocks/{k}/cls"] = prefixes[k][:, 0]
        return feats, {b: maps[b] for b in wanted}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """`cls` (B, D), `mean` (B, D) of patch tokens, `tokens` (B, T, D), `proj` (B, P) if any.

        `tokens` are all final tokens, prefix tokens first (none for SigLIP)."""
        return self.forward_all(x)[0]

    def dense(self, x: Tensor, blocks) -> dict[int, Tensor]:
        """Raw (pre-final-norm) outputs of 1-based `blocks`, prefix tokens dropped, (B, D, h, w)."""
        return self.forward_all(x, blocks)[1]

    def _check_blocks(self, blocks) -> list[int]:
        wanted = sorted({int(b) for b in blocks})
        bad = [b for b in wanted if not 1 <= b <= self.depth]
        if bad:
            raise ValueError(f"blocks {bad} out of range: this encoder has blocks 1..{self.depth}")
        return wanted


def _per_token_norm(backbone: nn.Module) -> nn.Module | None:
    """The final norm to apply per token when timm put it after pooling (`fc_norm` models).

    For the usual layout (`norm` on all tokens) forward_features already applied it.
    """
    norm = getattr(backbone, "norm", None)
    fc_norm = getattr(backbone, "fc_norm", None)
    if (norm is None or isinstance(norm, nn.Identity)) and isinstance(fc_norm, nn.Module) \
            and not isinstance(fc_norm, nn.Identity):
        return fc_norm
    return None


# ---------------------------------------------------------------------------------- building

def check_arch(name: str) -> str:
    """Fail early, with a hint, on a model name timm does not know."""
    base = name.split(".", 1)[0]
    if timm.is_model(base):
        return name
    close = difflib.get_close_matches(base, timm.list_models(), n=3)
    pattern = base.split("_")[0] or base
    hint = f"; close names: {close}" if close else ""
    raise ValueError(f"unknown timm model {name!r}{hint}. List the known names with "
                     f"timm.list_models('*{pattern}*')")


def _check_vit_like(model: nn.Module, arch: str) -> None:
    """Patch tokens after `num_prefix_tokens` prefix tokens, and a CLS token or a pooling head."""
    pooled = getattr(model, "global_pool", "") not in ("", "token", None) and hasattr(model, "forward_head")
    ok = (hasattr(model, "patch_embed") and hasattr(model, "blocks")
          and hasattr(model, "forward_intermediates")
          and isinstance(getattr(model, "num_prefix_tokens", None), int)
          and (getattr(model, "cls_token", None) is not None or pooled))
    if not ok:
        raise ValueError(f"{arch!r} is not a ViT-style model with patch tokens and a CLS token (or a "
                         f"pooling head, as SigLIP's), which every partaware feature needs (cls, mean "
                         f"of patches, dense maps)")


def _create(arch: str, kwargs: dict, pretrained: bool = False, seed: int = 0) -> nn.Module:
    """timm.create_model with a seeded init that leaves the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=pretrained, **kwargs)
    _check_vit_like(model, arch)
    return model


def _listing(keys: list[str], limit: int = 25) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_strict(module: nn.Module, sd: State, source: str, what: str = "backbone") -> None:
    """load_state_dict(strict=True), with errors that name the file, the keys and the shapes."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: the {what} weights do not match the model "
            f"({type(module).__name__}): missing keys [{_listing(missing)}]; "
            f"unexpected keys [{_listing(unexpected)}]")
    bad = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if tuple(sd[k].shape) != tuple(v.shape)]
    if bad:
        raise CheckpointError(f"{source}: wrong {what} tensor shapes: {_listing(bad, 10)}")
    module.load_state_dict(sd, strict=True)


def _load_official(arch: str, kwargs: dict, cfg: dict,
                   path: Path) -> tuple[nn.Module, nn.Module | None, str]:
    """Convert, check and load an official file; returns (backbone, head or None, sha256)."""
    fmt = cfg.get("format")
    if fmt not in CONVERTERS:
        raise ValueError(f"weights: checkpoint needs `format` in {sorted(CONVERTERS)}, got {fmt!r}")
    digest = verify_checkpoint(path, cfg.get("sha256"))
    obj = load_checkpoint_file(path, trust_pickle=bool(cfg.get("trust_pickle")), sha256=cfg.get("sha256"))
    conv = CONVERTERS[fmt](obj, key=cfg.get("checkpoint_key"))
    if conv.dropped:
        log.info("%s: ignored %d training-only keys (%s)", path, len(conv.dropped),
                 _listing(conv.dropped, 8))
    try:
        backbone = _create(arch, {**kwargs, **conv.model_kwargs}, seed=int(cfg.get("seed", 0)))
    except TypeError as err:
        if fmt in BEIT_FORMATS:
            raise ValueError(f"format {fmt!r} maps onto timm's Beit class; use a Beit arch such "
                             f"as beit_base_patch16_224, not {arch!r}") from err
        raise
    if fmt in BEIT_FORMATS and type(backbone).__name__ != "Beit":
        raise ValueError(f"format {fmt!r} needs a timm Beit arch (e.g. beit_base_patch16_224), "
                         f"got {arch!r} ({type(backbone).__name__})")
    load_strict(backbone, fit_position_tables(conv.backbone, backbone), str(path))
    head = None
    if conv.head:
        head = build_head(conv.head_kind, conv.head)
        load_strict(head, conv.head, str(path), what="projection head")
    return backbone, head, digest


def _load_file(arch: str, kwargs: dict, cfg: dict, path: Path) -> tuple[nn.Module, str]:
    """`weights: file`: a local timm state dict loaded strictly into `arch`; (backbone, sha256)."""
    digest = verify_checkpoint(path, cfg.get("sha256"))
    source = str(path)
    backbone = _create(arch, kwargs, seed=int(cfg.get("seed", 0)))
    obj = read_file(path, trust_pickle=bool(cfg.get("trust_pickle")), sha256=cfg.get("sha256"))
    sd = select_state(obj, cfg.get("checkpoint_key"), source)
    sd, dropped = drop_classifier(timm_filter(sd, backbone, source), backbone)
    if dropped:
        log.info("%s: dropped %d classifier keys (%s)", path, len(dropped), _listing(dropped, 8))
    load_strict(backbone, fit_position_tables(sd, backbone), source)
    return backbone, digest


def build_encoder(model_cfg: dict, checkpoint: Path | None = None) -> Encoder:
    """Build the frozen encoder described by `model_cfg` (keys in the module docstring)."""
    cfg = dict(model_cfg)
    if "arch" not in cfg:
        raise ValueError("model config needs `arch` (a timm model name)")
    arch = check_arch(str(cfg["arch"]))
    weights = cfg.get("weights", "random")
    if weights not in WEIGHTS:
        raise ValueError(f"`weights` must be one of {WEIGHTS}, got {weights!r}")
    kwargs = {**dict(cfg.get("timm_kwargs") or {}), "num_classes": 0}
    if cfg.get("img_size") is not None:
        kwargs["img_size"] = int(cfg["img_size"])
    if cfg.get("ln_eps") is not None:  # e.g. CAE as the released classification code built it (1e-5)
        kwargs["norm_layer"] = partial(nn.LayerNorm, eps=float(cfg["ln_eps"]))
    head, digest = None, None
    if weights == "checkpoint":
        path = checkpoint or cfg.get("checkpoint")
        if not path:
            raise ValueError(f"{arch}: weights: checkpoint needs a checkpoint path")
        backbone, head, digest = _load_official(arch, kwargs, cfg, Path(path))
    elif weights == "file":
        path = checkpoint or cfg.get("path")
        if not path:
            raise ValueError(f"{arch}: weights: file needs `path` (a local .safetensors or .pth file)")
        backbone, digest = _load_file(arch, kwargs, cfg, Path(path))
    elif weights == "timm":
        backbone = _create(arch, kwargs, pretrained=True)
    else:
        backbone = _create(arch, kwargs, seed=int(cfg.get("seed", 0)))
    mean = tuple(cfg.get("mean") or IMAGENET_MEAN)
    std = tuple(cfg.get("std") or IMAGENET_STD)
    info = {"arch": arch, "weights": weights, "format": cfg.get("format"),
            "checkpoint_sha256": digest, "timm_version": timm.__version__}
    return Encoder(backbone, head, mean_std=(mean, std), info=info)
