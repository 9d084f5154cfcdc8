"""Batches on the device before the step needs them.

On CUDA the next batch's host-to-device copy (from the DataLoader's pinned memory, non-blocking)
is issued on a side stream while the GPU still computes the current step; the compute stream waits for that
copy only when it takes the batch. Elsewhere the batches are simply moved.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch


def on_device(batches: Iterable[tuple], device: torch.device) -> Iterator[tuple]:
    """The tuples of tensors of `batches`, moved to `device`, one batch ahead on CUDA."""
    if device.type != "cuda":
        for batch in batches:
            yield tuple(t.to(device) for t in batch)
        return
    side = torch.cuda.Stream(device)
    source = iter(batches)

    def issue():
        batch = next(source, None)
        if batch is None:
            return None
        with torch.cuda.stream(side):
            return tuple(t.to(device, non_blocking=True) for t in batch)

    ahead = issue()
    while ahead is not None:
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(side)
        for t in ahead:
            t.record_stream(compute)  # the caching allocator must not reuse it while the step runs
        yield ahead  # the step's kernels are queued; the GPU is still busy with them when
        ahead = issue()  # the next batch's copy is issued beside them
