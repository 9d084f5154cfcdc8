"""Per-batch device work of extraction: one function per kind of store row (part patch, image)."""
from __future__ import annotations

import torch

from ..blocks import blocks_of, encode
from ..devices import autocast
from .loaders import normalise
from .loop import batch_arrays, done_marker, to_host


def part_step(encoder, device, amp, table, arrays, label_of, layout, image_of=None):
    """One row per image / patch: the pooled features in `arrays`, and the per-block summaries
    (`blocks/<k>/...`) among them from the same forward pass. `label_of` / `image_of` map a row to
    its label / image id (the `label` and `image` arrays; `image` only when given)."""
    table = table.to(device)
    blocks = blocks_of(arrays)

    def step(batch):
        rows, valid, patches, errors = batch
        feats = {}
        if len(patches):
            x = normalise(patches.to(device, non_blocking=True), table)
            with torch.inference_mode(), autocast(device, amp):
                out = encode(encoder, x, blocks)
            feats = to_host({a: out[a] for a in arrays}, layout)
        wait = done_marker(device)

        def finish():
            wait()
            rows_np = rows.numpy()
            known = {"row": rows_np, "label": label_of[rows_np]}
            if image_of is not None:
                known["image"] = image_of[rows_np]
            return batch_arrays(layout, valid.numpy(), known, {k: v.numpy() for k, v in feats.items()}), errors
        return finish
    return step


def seg_step(encoder, device, amp, blocks, layout):
    def step(batch):
        rows, valid, images, labels, errors = batch
        maps = {}
        if len(images):
            with torch.inference_mode(), autocast(device, amp):
                out = encoder.dense(images.to(device, non_blocking=True), blocks)
            maps = to_host({f"layers/{b}": out[b] for b in blocks}, layout)
        wait = done_marker(device)

        def finish():
            wait()
            per_valid = {**{k: v.numpy() for k, v in maps.items()},
                         **{f"labels/{k}": v.numpy() for k, v in labels.items()}}
            return batch_arrays(layout, valid.numpy(), {"row": rows.numpy()}, per_valid), errors
        return finish
    return step
