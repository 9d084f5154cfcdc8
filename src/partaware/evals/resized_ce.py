"""Cross entropy of bilinearly resized logits, fused so the resized logits never exist.

The segmentation probe scores the token grid (e.g. 32 x 32) and mmseg's loss compares those
logits, bilinearly resized to the label map (512 x 512), with the labels. At 209 classes the
resized logits of a batch of 16 are 3.5 GB, and the unfused loss reads and writes them a dozen
times, which costs more than the backbone's forward pass it replaces. On a CUDA device with
Triton, two kernels compute the loss and its gradient per input cell instead: the output pixels
between four neighbouring grid points interpolate the same four logit vectors, so the forward
kernel forms each pixel's logits on the fly and keeps only its log-sum-exp, and the backward
kernel sums each pixel's softmax gradient into those four vectors. Elsewhere the same loss runs
as `bilinear_resize` + `F.cross_entropy`; the two agree to float rounding (tests/test_resized_ce.py).
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

from .resize import bilinear_resize, resize_taps

try:
    import triton
    import triton.language as tl
except ImportError:  # the unfused path needs only torch
    triton = None


def resized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                          avg_non_ignore: bool = False, fused: bool | None = None, check: bool = True
                          ) -> torch.Tensor:
    """Cross entropy of `logits` (B, K, h, w) bilinearly resized (align_corners=False) to the
    size of `labels` (B, H, W), summed over the pixels not labelled `ignore_index` and divided
    by the number of all pixels, as mmseg 0.x (the paper's code) does, or with
    `avg_non_ignore=True` by the number of pixels not ignored (mmseg >= 0.23's option).

    `fused=None` takes the Triton kernels for CUDA tensors when Triton is installed, the unfused
    torch ops otherwise; True / False force one (True on CPU tensors needs TRITON_INTERPRET=1).
    `check=False` skips the label range check, which reads a device value (the host waits for the
    device): for labels checked where they were read (the online loader, `load_label`).
    """
    if check:
        check_labels(labels, logits.shape[1], ignore_index)
    if fused is None:
        fused = logits.is_cuda and triton is not None
    if fused and triton is None:
        raise RuntimeError("the fused segmentation loss needs Triton: pip install triton, "
                           "or pass fused=False")
    if fused:
        total = _FusedResizedCE.apply(logits, labels.contiguous(), ignore_index).sum()
    else:
        size = tuple(labels.shape[-2:])
        if size != tuple(logits.shape[-2:]):
            logits = bilinear_resize(logits, size)
        total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / ((labels != ignore_index).sum() if avg_non_ignore else labels.numel())


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """F.cross_entropy would index out of range (a device assert on CUDA); say which value."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"label value {int(labels[bad][0])} out of range: the probe has {num_classes} "
                         f"classes (0..{num_classes - 1}) and ignores {ignore_index}")


@lru_cache(maxsize=16)
def _taps(n_in: int, n_out: int, device: torch.device):
    return resize_taps(n_in, n_out, device)


class _FusedResizedCE(torch.autograd.Function):
    """logits (B, K, h, w), labels (B, H, W) -> per-pixel loss (B, H, W), 0 where ignored."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index):
        B, K, h, w = logits.shape
        H, W = labels.shape[-2:]
        z = logits.detach().float().permute(0, 2, 3, 1).contiguous()  # class vectors contiguous
        rows, cols = _taps(h, H, z.device), _taps(w, W, z.device)
        loss = torch.empty(B, H, W, device=z.device, dtype=torch.float32)
        lse = torch.empty_like(loss)
        _resized_ce_fwd[(B, h, w)](
            z, labels, loss, lse, rows.weight, cols.weight, rows.run_start, cols.run_start,
            h, w, H, W, K, ignore_index, **_blocks(cols.longest_run, K))
        ctx.save_for_backward(z, labels, lse)
        ctx.taps, ctx.ignore_index, ctx.dtype = (rows, cols), ignore_index, logits.dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        z, labels, lse = ctx.saved_tensors
        (rows, cols), (B, h, w, K), (H, W) = ctx.taps, z.shape, labels.shape[-2:]
        corner_grads = torch.empty(B, h, w, 4, K, device=z.device, dtype=torch.float32)
        _resized_ce_bwd[(B, h, w)](
            z, labels, lse, grad_loss.float().contiguous(), corner_grads,
            rows.weight, cols.weight, rows.run_start, cols.run_start,
            h, w, H, W, K, ctx.ignore_index, **_blocks(cols.longest_run, K))
        grad = _sum_corners(corner_grads).permute(0, 3, 1, 2).contiguous().to(ctx.dtype)
        return grad, None, None


def _blocks(longest_run: int, num_classes: int) -> dict:
    """Tile sizes: up to 16 output columns of one run at a time, all classes at once."""
    return dict(BLOCK_C=max(2, min(16, triton.next_power_of_2(longest_run))),
                BLOCK_K=max(16, triton.next_power_of_2(num_classes)), num_warps=4)


def _sum_corners(corner_grads: torch.Tensor) -> torch.Tensor:
    """(B, h, w, 4, K) gradients that cell (a, c) sent to its corners (a, c), (a, c+1),
    (a+1, c), (a+1, c+1) -> (B, h, w, K) gradient of each grid point. Corners past the last
    row or column only ever get weight 0, so dropping them loses nothing."""
    grad = corner_grads[:, :, :, 0].clone()
    grad[:, :, 1:] += corner_grads[:, :, :-1, 1]
    grad[:, 1:, :] += corner_grads[:, :-1, :, 2]
    grad[:, 1:, 1:] += corner_grads[:, :-1, :-1, 3]
    return grad


if triton is not None:
    @triton.jit
    def _this_cell(z_ptr, h, w, K, BLOCK_K: tl.constexpr):
        """This program's image b and grid cell (a, c), the class offsets, and the logit vectors
        at the cell's corners (a, c), (a, c+1), (a+1, c), (a+1, c+1), clamped to the grid."""
        b = tl.program_id(0).to(tl.int64)
        a = tl.program_id(1)
        c = tl.program_id(2)
        ks = tl.arange(0, BLOCK_K)
        kmask = ks < K
        a1 = tl.minimum(a + 1, h - 1)
        c1 = tl.minimum(c + 1, w - 1)
        img = z_ptr + b * h * w * K
        z00 = tl.load(img + (a * w + c) * K + ks, mask=kmask, other=0.0)
        z01 = tl.load(img + (a * w + c1) * K + ks, mask=kmask, other=0.0)
        z10 = tl.load(img + (a1 * w + c) * K + ks, mask=kmask, other=0.0)
        z11 = tl.load(img + (a1 * w + c1) * K + ks, mask=kmask, other=0.0)
        return b, a, c, ks, kmask, z00, z01, z10, z11

    @triton.jit
    def _row_ends(wy_ptr, r, z00, z01, z10, z11):
        """Output row r's weights on the cell's two grid rows and its logits at the cell's left
        and right grid columns."""
        wy0 = tl.load(wy_ptr + 2 * r)
        wy1 = tl.load(wy_ptr + 2 * r + 1)
        return wy0, wy1, wy0 * z00 + wy1 * z10, wy0 * z01 + wy1 * z11

    @triton.jit
    def _chunk_logits(za, zb, wx_ptr, c0, col_hi, kmask, BLOCK_C: tl.constexpr):
        """Logits (BLOCK_C, BLOCK_K) of output columns c0.. (< col_hi) of one row, from the row's
        two column-end vectors za, zb; classes past K are -inf so they drop out of the softmax."""
        cols = c0 + tl.arange(0, BLOCK_C)
        cmask = cols < col_hi
        wx0 = tl.load(wx_ptr + 2 * cols, mask=cmask, other=0.0)
        wx1 = tl.load(wx_ptr + 2 * cols + 1, mask=cmask, other=0.0)
        v = wx0[:, None] * za[None, :] + wx1[:, None] * zb[None, :]
        return cols, cmask, wx0, wx1, tl.where(kmask[None, :], v, float("-inf"))

    @triton.jit
    def _resized_ce_fwd(z_ptr, y_ptr, loss_ptr, lse_ptr, wy_ptr, wx_ptr, row_run_ptr, col_run_ptr,
                        h, w, H, W, K, ignore_index,
                        BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
        """One program per (image, grid cell): loss and log-sum-exp of the cell's pixels."""
        b, a, c, ks, kmask, z00, z01, z10, z11 = _this_cell(z_ptr, h, w, K, BLOCK_K)
        col_lo = tl.load(col_run_ptr + c)
        col_hi = tl.load(col_run_ptr + c + 1)
        for r in range(tl.load(row_run_ptr + a), tl.load(row_run_ptr + a + 1)):
            wy0, wy1, za, zb = _row_ends(wy_ptr, r, z00, z01, z10, z11)
            for c0 in range(col_lo, col_hi, BLOCK_C):
                cols, cmask, wx0, wx1, v = _chunk_logits(za, zb, wx_ptr, c0, col_hi, kmask, BLOCK_C)
                top = tl.max(v, axis=1)
                lse = top + tl.log(tl.sum(tl.exp(v - top[:, None]), axis=1))
                pix = (b * H + r) * W + cols
                y = tl.load(y_ptr + pix, mask=cmask, other=ignore_index)
                target = tl.sum(tl.where(ks[None, :] == y[:, None], v, 0.0), axis=1)
                tl.store(loss_ptr + pix, tl.where(y != ignore_index, lse - target, 0.0), mask=cmask)
                tl.store(lse_ptr + pix, lse, mask=cmask)

    @triton.jit
    def _resized_ce_bwd(z_ptr, y_ptr, lse_ptr, gloss_ptr, gcorner_ptr, wy_ptr, wx_ptr,
                        row_run_ptr, col_run_ptr, h, w, H, W, K, ignore_index,
                        BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
        """One program per (image, grid cell): (softmax - one-hot) * upstream gradient of the
        cell's pixels, weighted by their interpolation weights, summed into its four corners."""
        b, a, c, ks, kmask, z00, z01, z10, z11 = _this_cell(z_ptr, h, w, K, BLOCK_K)
        g00 = tl.zeros([BLOCK_K], dtype=tl.float32)
        g01 = tl.zeros([BLOCK_K], dtype=tl.float32)
        g10 = tl.zeros([BLOCK_K], dtype=tl.float32)
        g11 = tl.zeros([BLOCK_K], dtype=tl.float32)
        col_lo = tl.load(col_run_ptr + c)
        col_hi = tl.load(col_run_ptr + c + 1)
        for r in range(tl.load(row_run_ptr + a), tl.load(row_run_ptr + a + 1)):
            wy0, wy1, za, zb = _row_ends(wy_ptr, r, z00, z01, z10, z11)
            ga = tl.zeros([BLOCK_K], dtype=tl.float32)
            gb = tl.zeros([BLOCK_K], dtype=tl.float32)
            for c0 in range(col_lo, col_hi, BLOCK_C):
                cols, cmask, wx0, wx1, v = _chunk_logits(za, zb, wx_ptr, c0, col_hi, kmask, BLOCK_C)
                pix = (b * H + r) * W + cols
                lse = tl.load(lse_ptr + pix, mask=cmask, other=0.0)
                y = tl.load(y_ptr + pix, mask=cmask, other=ignore_index)
                scale = tl.where(y != ignore_index, tl.load(gloss_ptr + pix, mask=cmask, other=0.0), 0.0)
                g = tl.exp(v - lse[:, None]) - tl.where(ks[None, :] == y[:, None], 1.0, 0.0)
                g = g * scale[:, None]
                ga += tl.sum(wx0[:, None] * g, axis=0)
                gb += tl.sum(wx1[:, None] * g, axis=0)
            g00 += wy0 * ga
            g10 += wy1 * ga
            g01 += wy0 * gb
            g11 += wy1 * gb
        out = gcorner_ptr + ((b * h + a) * w + c) * 4 * K
        tl.store(out + ks, g00, mask=kmask)
        tl.store(out + K + ks, g01, mask=kmask)
        tl.store(out + 2 * K + ks, g10, mask=kmask)
        tl.store(out + 3 * K + ks, g11, mask=kmask)
