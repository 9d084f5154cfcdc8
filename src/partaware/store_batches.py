"""Per-sample shuffled batches of a feature store's valid rows, in memory or streamed.

The released probes draw individual samples in a fresh random order every epoch (PROTOCOL 4);
stores are sorted by image (CUB by species), so shuffling whole stored batches would give every
batch the same few classes, and its BatchNorm statistics the same skew, every epoch.

`StoreBatches` keeps the valid rows of one array in memory when they fit in `memory_mb`, else
reads each batch's samples from the store (token rows are chunked one per sample): sorted,
adjacent rows read in one call, the calls spread over a few threads, then put back in the
shuffled order. The next batch is prepared in a background thread while the device works on
the current one. Both paths serve the same batches for a seed.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from .evals.batching import batch_bounds, epoch_permutation
from .store import FeatureStore
from .store.errors import StoreError

Batches = Callable[[], Iterable[tuple]]


def _runs(sorted_rows: np.ndarray) -> list[tuple[int, int]]:
    """Positions [a, b) of maximal runs of consecutive row numbers in a sorted array."""
    breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
    edges = np.concatenate([[0], breaks, [len(sorted_rows)]])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _prefetched(items: Iterator, depth: int = 1) -> Iterator:
    """Iterate `items` in a background thread, `depth` items ahead; errors reach the caller,
    and a consumer that stops early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(msg) -> bool:
        while not stop.is_set():
            try:
                q.put(msg, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def work():
        try:
            for item in items:
                if not put(("item", item)):
                    return
            put(("end", None))
        except BaseException as err:  # handed to the consumer
            put(("error", err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=work, name="store-batches-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


class StoreBatches:
    """(x, labels) torch batches of the valid rows of `store[name]`.

    `epochs(seed)` returns a callable; each call is the next epoch, in the per-sample order
    `epoch_permutation(n_valid, seed, epoch)`, or in stored order when seed is None. Batches
    follow `batch_bounds` (a last batch of one joins the previous one). `memory_mb` bounds the
    bytes kept in memory; above it, samples are read from the store batch by batch with
    `workers` threads. `pin_memory` pins batches (for asynchronous copies to a GPU).
    """

    def __init__(self, store: FeatureStore, name: str, batch_size: int, memory_mb: float = 4096,
                 label: str = "label", workers: int = 4, pin_memory: bool = False):
        if name not in store.array_names():
            raise StoreError(f"{store.paths[0]}: no array {name!r} in this store "
                             f"(it has {store.array_names()}); re-extract with it enabled")
        self.store, self.name, self.batch_size = store, name, int(batch_size)
        self.workers, self.pin_memory = max(1, int(workers)), pin_memory
        batch_bounds(1, self.batch_size)  # validates batch_size
        valid = store.read("valid").astype(bool) if "valid" in store.array_names() \
            else np.ones(store.n_rows, bool)
        self.rows = np.flatnonzero(valid)
        self.labels = np.asarray(store.read(label))[self.rows]
        info = store.info(name)
        self.row_shape, self.dtype = tuple(info["shape"][1:]), np.dtype(info["dtype"])
        self.nbytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize * len(self.rows)
        self.in_memory = self.nbytes <= memory_mb * 2**20
        self.cache = self._read_all() if self.in_memory else None

    def __len__(self) -> int:
        return len(self.rows)

    def _read_all(self) -> np.ndarray:
        """All valid rows, read in ~64 MiB blocks into one array (no full-store copy)."""
        out = np.empty((len(self.rows), *self.row_shape), self.dtype)
        row_bytes = max(1, self.nbytes // max(len(self.rows), 1))
        block = max(1, (64 << 20) // row_bytes)
        filled = 0
        for lo in range(0, self.store.n_rows, block):
            hi = min(lo + block, self.store.n_rows)
            keep = self.rows[(self.rows >= lo) & (self.rows < hi)] - lo
            if len(keep):
                mask = np.zeros(hi - lo, bool)
                mask[keep] = True  # NaN/Inf in a valid row (a lost chunk) is refused, naming the store
                out[filled:filled + len(keep)] = self.store.read_checked(self.name, lo, hi, valid=mask)[keep]
                filled += len(keep)
        return out

    def order(self, seed: int | None, epoch: int) -> np.ndarray:
        """Positions into the valid rows, in the order they are served in `epoch`."""
        if seed is None:
            return np.arange(len(self.rows))
        return epoch_permutation(len(self.rows), seed, epoch)

    def _load(self, positions: np.ndarray, pool: ThreadPoolExecutor | None) -> np.ndarray:
        if self.cache is not None:
            return self.cache[positions]
        rows = self.rows[positions]
        sort = np.argsort(rows, kind="stable")
        sorted_rows = rows[sort]
        out = np.empty((len(rows), *self.row_shape), self.dtype)

        def fill(run):
            a, b = run
            lo, hi = int(sorted_rows[a]), int(sorted_rows[b - 1]) + 1  # a run holds valid rows only
            out[sort[a:b]] = self.store.read_checked(self.name, lo, hi, valid=np.ones(hi - lo, bool))

        runs = _runs(sorted_rows)
        if pool is None or len(runs) == 1:
            for run in runs:
                fill(run)
        else:
            list(pool.map(fill, runs))
        return out

    def _epoch(self, seed: int | None, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(seed, epoch)
        pool = None if self.cache is not None or self.workers == 1 else ThreadPoolExecutor(self.workers)
        try:
            for lo, hi in batch_bounds(len(order), self.batch_size):
                pos = order[lo:hi]
                x, y = torch.from_numpy(self._load(pos, pool)), torch.from_numpy(self.labels[pos])
                if self.pin_memory:
                    x, y = x.pin_memory(), y.pin_memory()
                yield x, y
        finally:
            if pool is not None:
                pool.shutdown()

    def epochs(self, seed: int | None = None, prefetch: bool = True) -> Batches:
        """A `Batches` callable: call k (from 0) serves epoch k, prepared one batch ahead."""
        counter = iter(range(2**62))

        def batches():
            it = self._epoch(seed, next(counter))
            return _prefetched(it) if prefetch else it

        return batches
