"""Dense token maps of whole images for the correspondence task: one store row per image.

Each image is resized to `size` x `size` (bicubic, no crop: the paper's eval resize, so a
keypoint maps to the input by a per-axis scale) and normalised with the encoder's mean / std.
A row holds `dense_final` (D, h, w): the final, LayerNorm-ed patch tokens as a map (prefix
tokens dropped), `dense/<k>` (D, h, w): the raw output of block k for each requested block, and
`size` (2,) int64: the image's original (width, height), which maps predictions back to its
pixels. `row` joins the image table (`data.pairs.image_table`: its `key` in row order).

A kind wires this in with `dense_plan(...)` from its `plan` (stores per (dataset, model, split,
size)); the stores are read by `tasks.correspondence`.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.images import describe_transform, patch_transform
from ..devices import autocast
from .loaders import WholeImages, decode_or_skip, normalise, split_transform
from .dense_names import FINAL, STORE_PREFIX, block_array, is_dense_store, store_name  # noqa: F401 (re-exported)
from .loop import batch_arrays, done_marker, to_host
from .plan import ExtractionPlan, shard_range


class DenseImages(WholeImages):
    """One item per image: (rows (1,), [uint8 (S, S, RGB) view] or [None], [(W, H)], reasons); the
    original size travels with the view, which `WholeImages` does not carry."""

    def __getitem__(self, i):
        rows = self.rows[i:i + 1]
        image, skipped = decode_or_skip(self.paths[i], rows, self.on_bad_image)
        if skipped:
            return rows, [None], [(0, 0)], skipped[2]
        return rows, [np.asarray(self.pil_steps(image))], [image.size], []


def collate_dense(items):
    """-> (rows (n,), valid (n,) bool, views (n_valid, S, S, RGB) uint8, sizes (n, 2) int64, errors)."""
    rows = torch.from_numpy(np.concatenate([r for r, _, _, _ in items]))
    valid = torch.tensor([v[0] is not None for _, v, _, _ in items], dtype=torch.bool)
    good = [v[0] for _, v, _, _ in items if v[0] is not None]
    views = torch.from_numpy(np.stack(good)) if good else torch.zeros((0, 1, 1, 3), dtype=torch.uint8)
    sizes = torch.tensor([s[0] for _, _, s, _ in items], dtype=torch.int64).reshape(-1, 2)
    return rows, valid, views, sizes, [e for _, _, _, errs in items for e in errs]


def dense_maps(encoder, x: torch.Tensor, blocks=()) -> dict[str, torch.Tensor]:
    """{`dense_final`: (B, D, h, w) final tokens as a map, `dense/<k>`: raw block k maps} of one pass."""
    feats, maps = encoder.forward_all(x, blocks)
    p = encoder.patch_size
    h, w = x.shape[-2] // p, x.shape[-1] // p
    tokens = feats["tokens"][:, encoder.num_prefix_tokens:]
    out = {FINAL: tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)}
    out.update({block_array(b): maps[b] for b in blocks})
    return out


def dense_step(encoder, device, amp, table, blocks, layout):
    """The per-batch device function: maps of the valid views, `row` and `size` for all rows."""
    table = table.to(device)

    def step(batch):
        rows, valid, views, sizes, errors = batch
        maps = {}
        if len(views):
            x = normalise(views.to(device, non_blocking=True), table)
            with torch.inference_mode(), autocast(device, amp):
                maps = to_host(dense_maps(encoder, x, blocks), layout)
        wait = done_marker(device)

        def finish():
            wait()
            known = {"row": rows.numpy(), "size": sizes.numpy()}
            return batch_arrays(layout, valid.numpy(), known, {k: v.numpy() for k, v in maps.items()}), errors
        return finish
    return step


def dense_plan(cfg: dict, images, encoder, device, size: int, blocks, shard: int):
    """The ExtractionPlan of the dense maps of `images` (a `data.pairs.image_table`: `key`,
    `path`, one store row each, in that order) at input `size`, with the raw maps of `blocks`."""
    blocks = sorted({int(b) for b in blocks})
    lo, hi = shard_range(len(images), shard, cfg["extract"]["shards"])
    paths = images["path"].tolist()[lo:hi]
    mean, std = encoder.mean_std
    with torch.inference_mode():
        probe = dense_maps(encoder, torch.zeros(1, 3, size, size, device=device), blocks)
    dtype = cfg["cache"]["dtype"]
    layout = {name: (tuple(t.shape[1:]), dtype, 1) for name, t in probe.items()}
    layout["size"] = ((2,), "int64", cfg["cache"]["chunk_rows"])
    pil_steps, table = split_transform(patch_transform("eval", size, size, mean, std))
    on_bad = cfg["data"]["on_bad_image"]
    view = describe_transform("eval", size, size, mean, std).replace("crop box (PIL, zero fill)", "whole image")
    return ExtractionPlan(
        n_rows=hi - lo, layout=layout, transform=view, images=paths,
        resume_rows=images["key"].tolist()[lo:hi], rows=(lo, hi),
        loader_data=lambda start: DenseImages(paths[start:], np.arange(lo + start, hi), pil_steps, on_bad),
        collate=collate_dense,
        make_step=lambda enc, dev, amp: dense_step(enc, dev, amp, table, blocks, layout),
        images_per_batch=max(1, cfg["extract"]["batch_size"] // 4),
        attrs={"image_keys": images["key"].tolist(), "image_paths": images["path"].astype(str).tolist(),
               "input_size": int(size), "patch_size": int(encoder.patch_size),
               "protocol_note": f"whole image resized to {size} x {size} (bicubic), dense final tokens"})
