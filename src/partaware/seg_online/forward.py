"""The frozen encoder's forward for the heads: block maps of a batch, fast and within device memory.

`block_maps` is one forward (inference mode, autocast) giving the maps of `blocks` concatenated,
written straight into one float32 tensor (no bf16 copy of the 3072-channel maps beside it).
`FrozenForward` runs it for a training batch: in micro-batches of `forward_batch` images when the
whole batch does not fit (`auto` halves on a CUDA out-of-memory error until it fits and keeps that
size), optionally compiled for the fixed crop shape (`compile`). The heads still see the whole
batch, so micro-batching does not change the protocol, only float rounding of the forward.

`lowp_weights` casts the frozen Linear / Conv weights to the autocast dtype once: autocast would
otherwise re-cast them on every forward (144 casts per ViT-B step), with the same values (the
cast is the same rounding). LayerNorm parameters stay float32, as autocast runs layer_norm in float32.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Sequence

import torch
from torch import nn

from ..devices import autocast

log = logging.getLogger(__name__)


def block_maps(encoder, x: torch.Tensor, blocks: Sequence[int], amp, dense=None,
               out: torch.Tensor | None = None) -> torch.Tensor:
    """The frozen forward: block maps of `blocks` concatenated in that order, float32 (a normal
    tensor, usable by autograd), written into `out` when given. `dense` replaces `encoder.dense`
    (e.g. its compiled version)."""
    with torch.inference_mode(), autocast(x.device, amp):
        maps = (dense or encoder.dense)(x, blocks)
    parts = [maps[b] for b in blocks]
    if out is None:
        n, _, h, w = parts[0].shape
        out = torch.empty(n, sum(p.shape[1] for p in parts), h, w, device=x.device, dtype=torch.float32)
    return torch.cat(parts, dim=1, out=out)  # one pass: reads the maps once, writes float32 once


@contextmanager
def lowp_weights(encoder: nn.Module, dtype):
    """Inside: the encoder's Linear and Conv parameters held in `dtype` (None: unchanged);
    restored to the original tensors on exit. Use only under autocast to `dtype`."""
    saved = []
    if dtype is not None:
        for module in encoder.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                for p in module.parameters(recurse=False):
                    if p.is_floating_point() and p.dtype != dtype:
                        saved.append((p, p.data))
                        p.data = p.data.to(dtype)
    try:
        yield encoder
    finally:
        for p, data in saved:
            p.data = data


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


class FrozenForward:
    """`self(x)` -> float32 block maps of the whole batch x (see the module docstring).

    `forward_batch`: None / "auto" (the whole batch, halved on an out-of-memory error) or a
    positive int (micro-batches of that many images). `compile`: torch.compile the encoder's
    dense forward (one graph for the fixed crop shape; the first call compiles)."""

    def __init__(self, encoder, blocks: Sequence[int], amp, forward_batch=None, compile: bool = False):
        if forward_batch not in (None, "auto") and (not isinstance(forward_batch, int) or forward_batch < 1):
            raise ValueError(f"segmentation.forward_batch must be 'auto' or a positive integer, got "
                             f"{forward_batch!r}")
        self.encoder, self.blocks, self.amp = encoder, [int(b) for b in blocks], amp
        self.auto = forward_batch in (None, "auto")
        self.micro = None if self.auto else int(forward_batch)
        self.dense = torch.compile(encoder.dense, dynamic=False) if compile else None
        blocks_ = getattr(getattr(encoder, "backbone", None), "blocks", None)
        attn = getattr(blocks_[0], "attn", None) if blocks_ else None
        if attn is not None and getattr(attn, "fused_attn", True) is False:
            log.warning("seg-online: timm's fused attention is off (TIMM_FUSED_ATTN=0?): attention runs "
                        "unfused, slower; unset it to use scaled_dot_product_attention")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        while True:
            size = min(self.micro or len(x), len(x))
            try:
                return self._run(x, size)
            except RuntimeError as err:  # torch.OutOfMemoryError is one
                if not (self.auto and _is_oom(err) and size > 1):
                    raise
                self.micro = size // 2
                if x.is_cuda:
                    torch.cuda.empty_cache()
                log.info("seg-online: the frozen forward of %d images did not fit on %s; running it in "
                         "micro-batches of %d (the heads still see the whole batch)", size, x.device, self.micro)

    def _run(self, x: torch.Tensor, size: int) -> torch.Tensor:
        if size >= len(x):
            return block_maps(self.encoder, x, self.blocks, self.amp, self.dense)
        first = block_maps(self.encoder, x[:size], self.blocks, self.amp, self.dense)
        out = torch.empty((len(x),) + tuple(first.shape[1:]), device=x.device, dtype=torch.float32)
        out[:size] = first
        del first
        for lo in range(size, len(x), size):
            block_maps(self.encoder, x[lo:lo + size], self.blocks, self.amp, self.dense, out=out[lo:lo + size])
        return out
