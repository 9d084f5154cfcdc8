"""The pipelined extraction loop: batch k+1 is queued on the device before batch k is read back,
and a writer thread lands whole chunks in the resumable store in row order.

A chunk counts as done (the resume point) only once it has landed (see `store/writer.py`).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..progress import Waited, note_work, progress_line
from ..store import StoreWriter

log = logging.getLogger("partaware.extract")

TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}
_WRITE_QUEUE = 2  # batches waiting for the writer thread


class _Buffer:
    """Accumulates batch outputs and hands out whole chunks, so each store chunk is written once."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            self.parts.setdefault(k, []).append(v)

    def __len__(self):
        return sum(len(v) for v in next(iter(self.parts.values()), []))

    def take(self, n: int) -> dict[str, np.ndarray]:
        whole = {k: np.concatenate(v) for k, v in self.parts.items()}
        self.parts = {k: [v[n:]] for k, v in whole.items()}
        return {k: v[:n] for k, v in whole.items()}


class BackgroundWriter:
    """Hands batches to a thread that writes them to `writer` in order, in whole chunks.

    `put` blocks only while `depth` batches already wait, so the store's pace never stalls the
    device for longer. `writer.rows_done` (the resume point) moves only after a chunk lands.
    Leaving the `with` block writes what is queued, then joins the thread; a write error is
    raised in the caller, at the next `put` or on leaving.
    """

    def __init__(self, writer: StoreWriter, chunk_rows: int, depth: int = _WRITE_QUEUE):
        self.writer, self.chunk_rows = writer, chunk_rows
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="store-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def put(self, arrays: dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(arrays)

    def _loop(self):
        buffer, writer = _Buffer(), self.writer
        while (arrays := self.queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining so `put` never blocks on a dead thread
            try:
                buffer.add(arrays)
                while len(buffer) >= self.chunk_rows or (
                        len(buffer) and writer.rows_done + len(buffer) == writer.n_rows):
                    writer.write(buffer.take(min(self.chunk_rows, len(buffer))))
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                self.error = err

    def __exit__(self, exc_type, exc, tb):
        self.queue.put(None)
        self.thread.join()
        if exc_type is None and self.error is not None:
            raise self.error


@dataclass
class LoopTimes:
    """Where the loop's wall time went, so a slow extraction says what it waited on: the loader
    (workers decoding), the step (the host queueing device work; on a CPU, the forward itself),
    the device (a batch's work and its copy back) or the store (the writer thread's queue)."""
    loader_s: float = 0.0
    step_s: float = 0.0
    device_s: float = 0.0
    store_s: float = 0.0
    computed: int = 0  # rows whose image was read and encoded (not those of skipped images)

    def line(self) -> str:
        return (f"waited on the loader {self.loader_s:.2f} s, the step {self.step_s:.2f} s, the device "
                f"{self.device_s:.2f} s, the store {self.store_s:.2f} s")


def run_batches(loader, step, writer: StoreWriter, chunk_rows: int, log_every=30.0, times: LoopTimes | None = None):
    """Feed every batch through `step`, one batch ahead, and hand the results to a writer thread.

    `step(batch)` queues the batch's device work and returns `finish`; `finish()` waits for it
    and returns (store arrays, error messages). A batch is finished after the next one is queued.
    `times`, when given, adds up where the wall time went.
    """
    skipped, times = [], times if times is not None else LoopTimes()
    t0, last_log, done0 = time.time(), time.time(), writer.rows_done
    computed = [0]  # rows whose image was read and encoded (the rate counts these, not skipped rows)
    clock = time.perf_counter
    with BackgroundWriter(writer, chunk_rows) as background:
        def hand_over(finish):
            t = clock()
            arrays, errors = finish()
            t_done = clock()
            skipped.extend(errors)
            computed[0] += int(np.count_nonzero(arrays["valid"]))
            background.put(arrays)
            times.device_s += t_done - t
            times.store_s += clock() - t_done

        pending, batches = None, Waited(loader)
        for batch in batches:
            t = clock()
            queued = step(batch)
            times.step_s += clock() - t
            if pending is not None:
                hand_over(pending)
            pending = queued
            if time.time() - last_log > log_every:
                log.info("%s", progress_line(writer.rows_done - done0, writer.n_rows - done0,
                                             time.time() - t0, "rows"))
                last_log = time.time()
        if pending is not None:
            hand_over(pending)
        times.loader_s += batches.seconds
        t_flush = clock()
    times.store_s += clock() - t_flush  # the last chunks landing
    times.computed += computed[0]
    empty = writer.rows_done - done0 - computed[0]
    note_work(computed[0], "rows computed", len(skipped),  # for the job's closing line
              f"{empty} rows of skipped images left empty" if empty else "")
    return skipped


def batch_arrays(layout: dict, valid: np.ndarray, known: dict, per_valid: dict) -> dict:
    """One batch's store arrays: `known` cover every row, `per_valid` only the valid ones (the
    other rows stay zero; when all are valid they are used as they are, without a copy)."""
    out = {**known, "valid": valid.astype(np.uint8)}
    for name, (tail, dtype, _) in layout.items():
        if name in out:
            continue
        if name in per_valid and valid.all():
            out[name] = per_valid[name]
            continue
        out[name] = np.zeros((len(valid), *tail), dtype=dtype)
        if name in per_valid:
            out[name][valid] = per_valid[name]
    return out


def to_host(tensors: dict, layout: dict) -> dict:
    """Cast features to their store dtype on the device and queue their copy to the host."""
    return {k: v.float().to(TORCH_DTYPES[layout[k][1]]).to("cpu", non_blocking=True)
            for k, v in tensors.items()}


def done_marker(device):
    """Waits (when called) for everything queued on the device so far."""
    if device.type != "cuda":
        return lambda: None
    event = torch.cuda.Event()
    event.record()
    return event.synchronize
