"""Bilinear resizing (align_corners=False, as F.interpolate and mmseg) in two exact forms.

`bilinear_resize` is the dense form: two matrix products. `resize_taps` is the sparse form the
fused loss kernel needs: every output row (column) reads at most two neighbouring input rows
(columns), so output pixels fall into runs that share the same four input corners.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def interp_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(n_out, n_in) weights of 1-D linear resizing, align_corners=False, as F.interpolate does."""
    eye = torch.eye(n_in, device=device, dtype=dtype)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


def bilinear_resize(x: torch.Tensor, size) -> torch.Tensor:
    """F.interpolate(x, size, mode='bilinear', align_corners=False) as two matrix products.

    Bilinear resizing is separable, so rows then columns give the same linear map (equal to
    float rounding); written as matmuls its backward pass is a matmul too, which on a GPU is an
    order of magnitude faster than upsample_bilinear2d's scatter-add backward at 512 x 512 x 209.
    """
    (h, w), (H, W) = x.shape[-2:], tuple(size)
    rows = interp_matrix(h, H, x.device, x.dtype)
    cols = interp_matrix(w, W, x.device, x.dtype)
    return rows @ (x @ cols.T)


class Taps(NamedTuple):
    """1-D resize as two taps per output index o: out[o] = weight[o, 0] * in[i] +
    weight[o, 1] * in[i + 1] for the one input i with run_start[i] <= o < run_start[i + 1]
    (outputs reading the same first input are contiguous); `longest_run` bounds those runs."""

    weight: torch.Tensor      # (n_out, 2) float32; weight[o, 1] is 0 where the first tap is the last input
    run_start: torch.Tensor   # (n_in + 1,) int64
    longest_run: int


def resize_taps(n_in: int, n_out: int, device=None) -> Taps:
    """The two-tap form of `interp_matrix(n_in, n_out)`, read off the matrix itself so both
    forms give the same numbers."""
    m = interp_matrix(n_in, n_out, dtype=torch.float64)
    nonzero = m != 0
    first = nonzero.to(torch.int8).argmax(dim=1)
    second = torch.clamp(first + 1, max=n_in - 1)
    weight = torch.stack([m.gather(1, first[:, None])[:, 0],
                          torch.where(first + 1 < n_in, m.gather(1, second[:, None])[:, 0], 0.0)], 1)
    taps_used = nonzero.sum(dim=1)
    if bool((taps_used > 2).any()) or bool((first.diff() < 0).any()):
        raise AssertionError(f"resizing {n_in} -> {n_out} is not a monotone two-tap map")
    run_start = torch.searchsorted(first, torch.arange(n_in + 1))
    longest = int(run_start.diff().max()) if n_in else 0
    return Taps(weight.float().to(device), run_start.to(device), longest)
