"""Official checkpoint layouts -> timm state dicts (+ a projection-head state dict).

One pure function per format. Each drops only keys known to be irrelevant for a frozen encoder
(momentum encoders, predictors, decoders, MIM heads, patch-token head branches); every other key
is passed on, so the strict loader reports anything the converter did not expect. Layouts were
read from the official code: facebookresearch/{deit,moco-v3,dino,mae}, bytedance/ibot,
microsoft/unilm (beit) and lxtGH/CAE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .checkpoints import CheckpointError

State = dict[str, Tensor]


@dataclass
class Converted:
    """A backbone state dict in timm names, an optional head, and timm kwargs the layout implies."""

    backbone: State
    head: State | None = None
    head_kind: str | None = None  # "mocov3", "dino" or "ibot"
    model_kwargs: dict = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- helpers

def _is_state(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _unwrap(obj, key: str | None, defaults: tuple[str, ...], fmt: str) -> State:
    """The state dict under `key` (if given, it must exist), else under the first of `defaults`
    present, else `obj` itself when it is a flat state dict."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{fmt} checkpoint: expected a dict, got {type(obj).__name__}")
    if key is not None and key not in obj:
        raise CheckpointError(f"{fmt} checkpoint: no entry {key!r}; the file's top-level keys "
                              f"are {sorted(map(str, obj))[:20]}")
    for k in (key,) if key is not None else defaults:
        if k in obj and isinstance(obj[k], Mapping):
            if not _is_state(obj[k]):
                raise CheckpointError(f"{fmt} checkpoint: entry {k!r} is not a tensor state dict")
            return dict(obj[k])
    if _is_state(obj):
        return dict(obj)
    raise CheckpointError(f"{fmt} checkpoint: no state dict under {list(defaults)}; the file's "
                          f"top-level keys are {sorted(map(str, obj))[:20]}")


def _strip(sd: State, prefix: str) -> State:
    """Remove `prefix` from every key that has it (e.g. DistributedDataParallel's `module.`)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _split(sd: State, prefix: str) -> tuple[State, State]:
    """(keys under `prefix` with it removed, all other keys)."""
    inside = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    outside = {k: v for k, v in sd.items() if not k.startswith(prefix)}
    return inside, outside


def _drop(sd: State, pred: Callable[[str], bool]) -> tuple[State, list[str]]:
    kept = {k: v for k, v in sd.items() if not pred(k)}
    return kept, sorted(k for k in sd if pred(k))


def _starts(*prefixes: str) -> Callable[[str], bool]:
    return lambda k: k.startswith(prefixes)


def fold_weight_norm(sd: State, name: str) -> State:
    """Replace a weight-normed layer's (g, v) by the one weight it computes: W = g * v / ||v||.

    The norm is taken per output row (torch's weight_norm with dim=0). Handles both the old
    `weight_g`/`weight_v` names and the parametrization names `original0`/`original1`.
    """
    for g_key, v_key in ((f"{name}.weight_g", f"{name}.weight_v"),
                         (f"{name}.parametrizations.weight.original0",
                          f"{name}.parametrizations.weight.original1")):
        if g_key in sd and v_key in sd:
            out = {k: v for k, v in sd.items() if k not in (g_key, v_key)}
            g, v = sd[g_key].float(), sd[v_key].float()
            norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
            out[f"{name}.weight"] = g * v / norm
            return out
    return sd


def _backbone_and_head(sd: State) -> tuple[State, State]:
    """Split a DINO/iBOT state dict: `backbone.*`/`head.*` (full checkpoint) or flat + `head.*`."""
    if any(k.startswith("backbone.") for k in sd):
        backbone, rest = _split(sd, "backbone.")
        head, rest = _split(rest, "head.")
        backbone.update(rest)  # anything else is unexpected: let the strict loader name it
        return backbone, head
    head, backbone = _split(sd, "head.")
    return backbone, head


def _check_rel_pos_index(index: Tensor, key: str) -> None:
    """The official BEiT stores its (persistent) relative position index; timm recomputes it.

    They must agree, or the bias table would be read in a different order.
    """
    from timm.models.beit import gen_relative_position_index

    side = math.isqrt(index.shape[0] - 1)
    if side * side != index.shape[0] - 1:
        return  # non-square window: nothing simple to compare against
    expected = gen_relative_position_index((side, side))
    if index.shape != expected.shape or not torch.equal(index.long(), expected):
        raise CheckpointError(f"{key} in the checkpoint differs from timm's relative position "
                              f"index for a {side}x{side} grid; the layout is not BEiT's")


def _beit_kwargs(sd: State) -> dict:
    """timm Beit constructor arguments implied by which keys a BEiT-style state dict has."""
    return dict(
        global_pool="",  # keeps the final LayerNorm on every token (`norm`, not `fc_norm`)
        use_abs_pos_emb="pos_embed" in sd,
        use_shared_rel_pos_bias="rel_pos_bias.relative_position_bias_table" in sd,
        use_rel_pos_bias=any(k.endswith("attn.relative_position_bias_table") for k in sd),
        init_values=0.1 if any(k.endswith("gamma_1") for k in sd) else None,
        qkv_bias=any(k.endswith("attn.q_bias") for k in sd),
    )


# ------------------------------------------------------------------------------- converters

def convert_timm(obj, key: str | None = None) -> Converted:
    """A plain timm state dict, maybe wrapped in `model`/`state_dict`; the classifier is dropped."""
    sd = _strip(_unwrap(obj, key, ("model", "state_dict"), "timm"), "module.")
    sd, dropped = _drop(sd, lambda k: k in ("head.weight", "head.bias")
                        or k.startswith("head_dist."))
    return Converted(sd, dropped=dropped)


def convert_deit(obj, key: str | None = None) -> Converted:
    """DeiT: `["model"]` in timm ViT names; the ImageNet classifier `head.*` is dropped."""
    sd = _unwrap(obj, key, ("model",), "deit")
    sd, dropped = _drop(sd, _starts("head.", "head_dist."))
    return Converted(sd, dropped=dropped)


def convert_mocov3(obj, key: str | None = None) -> Converted:
    """MoCo v3: `["state_dict"]`, `module.base_encoder.*` = ViT + 3-layer BN projector `head.*`.

    The momentum encoder and the predictor are training-only and dropped. The fixed sin-cos
    `pos_embed` is an ordinary tensor of the dict.
    """
    sd = _strip(_unwrap(obj, key, ("state_dict",), "mocov3"), "module.")
    base, rest = _split(sd, "base_encoder.")
    if not base:
        raise CheckpointError("mocov3 checkpoint: no `module.base_encoder.*` keys; keys start "
                              f"with {sorted({k.split('.')[0] for k in sd})}")
    rest, dropped = _drop(rest, _starts("momentum_encoder.", "predictor."))
    head, backbone = _split(base, "head.")
    backbone.update(rest)
    return Converted(backbone, head or None, "mocov3" if head else None, dropped=dropped)


def convert_dino(obj, key: str | None = None) -> Converted:
    """DINO: full checkpoint `["teacher"]` (`backbone.*`, `head.*`; `["student"]` has `module.`)
    or the flat backbone-only file. The head's weight-normed last layer is folded."""
    sd = _strip(_unwrap(obj, key, ("teacher", "student", "state_dict", "model"), "dino"), "module.")
    backbone, head = _backbone_and_head(sd)
    head = fold_weight_norm(head, "last_layer") if head else None
    return Converted(backbone, head, "dino" if head else None)


def convert_ibot(obj, key: str | None = None) -> Converted:
    """iBOT: like DINO; `masked_embed` (MIM only) is dropped, and of the iBOT head only the CLS
    branch (`mlp`, `last_layer`) is kept: `last_layer2`/`last_norm2`/`mlp2` serve patch tokens.
    The backbone-only release is `{"state_dict": ...}` (extract_backbone_weights.py)."""
    sd = _strip(_unwrap(obj, key, ("teacher", "student", "state_dict", "model"), "ibot"), "module.")
    backbone, head = _backbone_and_head(sd)
    backbone, dropped = _drop(backbone, lambda k: k == "masked_embed")
    head, dropped_head = _drop(head, _starts("last_layer2.", "last_norm2.", "mlp2."))
    head = fold_weight_norm(head, "last_layer") if head else None
    return Converted(backbone, head, "ibot" if head else None,
                     dropped=dropped + ["head." + k for k in dropped_head])


def convert_beit(obj, key: str | None = None) -> Converted:
    """BEiT pre-training: `["model"]`, one shared relative position table, q/v biases, gamma_1/2.

    `mask_token`, `lm_head.*` (visual-token classifier) and `cls_pt_layers.*` (BEiT v2) are
    dropped; the persistent relative position index is checked against timm's and dropped.
    """
    sd = _unwrap(obj, key, ("model", "module", "state_dict"), "beit")
    for k in [k for k in sd if k.endswith("relative_position_index")]:
        _check_rel_pos_index(sd[k], k)
    sd, dropped = _drop(sd, lambda k: k == "mask_token" or k.endswith("relative_position_index")
                        or k.startswith(("lm_head.", "cls_pt_layers.")))
    return Converted(sd, model_kwargs=_beit_kwargs(sd), dropped=dropped)


def convert_mae(obj, key: str | None = None) -> Converted:
    """MAE: `["model"]` encoder keys in timm ViT names with a fixed sin-cos `pos_embed`.

    The released pretrain file has only the encoder; if decoder keys are present (the
    visualisation checkpoints) they are dropped with `mask_token`.
    """
    sd = _unwrap(obj, key, ("model",), "mae")
    sd, dropped = _drop(sd, lambda k: k == "mask_token" or k.startswith("decoder_"))
    return Converted(sd, dropped=dropped)


def convert_cae(obj, key: str | None = None) -> Converted:
    """CAE: `["model"]`, the encoder is `encoder.*` (BEiT-style blocks with q/v biases and
    gamma_1/2, fixed sin-cos `pos_embed`, no relative position bias); the alignment teacher,
    regressor and decoder are dropped. A `pos_embed` without its CLS slot gets a zero one,
    which is what CAE's own construction puts there."""
    sd = _unwrap(obj, key, ("model", "state_dict"), "cae")
    encoder, rest = _split(sd, "encoder.")
    if not encoder:
        raise CheckpointError("cae checkpoint: no `encoder.*` keys; keys start with "
                              f"{sorted({k.split('.')[0] for k in sd})}")
    encoder, dropped = _drop(encoder, lambda k: k == "mask_token")
    pos = encoder.get("pos_embed")
    if pos is not None and pos.dim() == 3 and math.isqrt(pos.shape[1]) ** 2 == pos.shape[1]:
        encoder["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)
    kwargs = _beit_kwargs(encoder)
    kwargs["use_abs_pos_emb"] = True  # a missing pos_embed must be reported, not built away
    return Converted(encoder, model_kwargs=kwargs, dropped=dropped + sorted(rest))


CONVERTERS: dict[str, Callable[..., Converted]] = {
    "timm": convert_timm,
    "deit": convert_deit,
    "mocov3": convert_mocov3,
    "dino": convert_dino,
    "ibot": convert_ibot,
    "beit": convert_beit,
    "mae": convert_mae,
    "cae": convert_cae,
}


def convert(fmt: str, obj, key: str | None = None) -> Converted:
    """Apply the converter of `fmt` to a loaded checkpoint object."""
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {sorted(CONVERTERS)}")
    return CONVERTERS[fmt](obj, key=key)
