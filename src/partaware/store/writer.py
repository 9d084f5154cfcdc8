"""Writing a store: `StoreWriter` fills `<path>.partial` in row order, records resumable
progress in `<path>.progress.json`, holds `<path>.lock` (see `lock.py`) for its whole life and
publishes the finished store by one rename.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import weakref
from pathlib import Path

import numpy as np

from ..atomic import write_text
from .backends import STORE_FORMAT, _backend, _partial
from .errors import StoreError, StoreLockedError
from .lock import LockHeldError, StoreLock

log = logging.getLogger(__name__)


# A writer whose Snakemake was killed exits within seconds (`watchdog.py`); a rerun started at
# once waits this long for its lock before refusing with the owner's name.
LOCK_WAIT_S = 20.0


def _progress(path: Path) -> Path:
    return path.with_name(path.name + ".progress.json")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data))


def _release_if_holder(lock: StoreLock, token: object) -> None:
    """A dropped writer frees its lock, unless a newer writer of this process took it over."""
    if lock.token is token:
        lock.release()


class StoreWriter:
    """Writes rows in order; `flush` points are resumable; `publish` makes the store visible.

    `arrays` maps a name to (per-row shape, dtype, rows per chunk). Resuming needs the same
    `config_hash`, layout and `resume_key`; anything else starts the partial store over.
    `resume_key` names inputs the config hash cannot see (the checkpoint file's sha256, the
    part index's content), so a partial store of other weights or rows is never continued.

    The writer holds `<path>.lock` from construction until `publish` or `close` (or its
    process's death): a second writer of the same store, in another process, is refused with
    the owner's host and pid. A newer writer in the same process replaces an abandoned one
    (a crashed call), which can then no longer write. Use it as a context manager to release
    the lock when writing fails.
    """

    def __init__(self, path: Path, n_rows: int, arrays: dict[str, tuple[tuple, str, int]],
                 attrs: dict, config_hash: str, resume_key: str | None = None):
        self.path = Path(path)
        self.n_rows = int(n_rows)
        self.arrays = arrays
        self.config_hash = config_hash
        self.partial = _partial(self.path)
        self.progress_file = _progress(self.path)
        layout = {k: [list(v[0]), v[1], v[2]] for k, v in arrays.items()}
        self._signature = {"config_hash": config_hash, "n_rows": self.n_rows, "layout": layout,
                           "resume_key": resume_key, "store_format": STORE_FORMAT}
        self._lock = None
        self._take_lock()
        try:
            self.elided: dict[str, list[int]] = {}  # chunks of skipped rows left unwritten
            self.rows_done = self._resume_point()
            if self.rows_done == 0:
                self._create(attrs)
            else:
                self.backend = _backend(self.partial, "a")
        except BaseException:
            self._release()
            raise

    def _take_lock(self) -> None:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                lock = StoreLock.acquire(_lock_path(self.path), str(self.partial))
                break
            except LockHeldError as err:
                if time.monotonic() >= deadline:
                    raise StoreLockedError(str(err)) from None
                time.sleep(0.5)
        previous = lock.writer() if lock.writer is not None else None
        if previous is not None and previous is not self:
            log.info("%s: a newer writer in this process replaces an unfinished one", self.partial)
            previous._abandon()
        lock.token, lock.writer = object(), weakref.ref(self)
        self._lock = lock
        self._finalizer = weakref.finalize(self, _release_if_holder, lock, lock.token)

    def _abandon(self) -> None:
        """Stop writing (a newer writer of this process took the lock); close the files."""
        self._lock = None
        self._finalizer.detach()
        if hasattr(self, "backend"):
            try:
                self.backend.close()
            except Exception:  # already closed, or half-open after a crash
                pass

    def _release(self) -> None:
        if self._lock is not None:
            self._finalizer.detach()
            _release_if_holder(self._lock, self._lock.token)
            self._lock = None

    def _check_holder(self) -> None:
        if self._lock is None:
            raise StoreError(f"{self.path}: this writer was closed, or replaced by a newer writer of "
                             "the same store in this process; it can no longer write")

    def _resume_point(self) -> int:
        if not (self.partial.exists() and self.progress_file.exists()):
            return 0
        try:
            progress = json.loads(self.progress_file.read_text())
            if {k: progress.get(k) for k in self._signature} != self._signature:
                return 0
            _backend(self.partial, "r").close()
            self.elided = {k: list(v) for k, v in progress.get("elided", {}).items()}
            return int(progress["rows_done"])
        except Exception:  # an unreadable leftover is simply rewritten
            return 0

    def _create(self, attrs: dict) -> None:
        _remove(self.partial)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.backend = _backend(self.partial, "w")
        for name, (tail, dtype, chunk_rows) in self.arrays.items():
            chunk = max(1, min(chunk_rows, self.n_rows))
            self.backend.create(name, (self.n_rows, *tail), (chunk, *tail), dtype)
        self.backend.set_attrs({**attrs, "config_hash": self.config_hash, "n_rows": self.n_rows,
                                "store_format": STORE_FORMAT, "complete": False})
        self._save_progress(0)

    def _save_progress(self, rows_done: int) -> None:
        _write_json_atomic(self.progress_file, {**self._signature, "rows_done": rows_done, "elided": self.elided})

    def write(self, batch: dict[str, np.ndarray]) -> None:
        """Append the next rows (every array of the layout, same length) and mark them done."""
        self._check_holder()
        missing = set(self.arrays) - set(batch)
        if missing:
            raise StoreError(f"{self.path}: batch lacks arrays {sorted(missing)}")
        n = len(next(iter(batch.values())))
        if self.rows_done + n > self.n_rows:
            raise StoreError(f"{self.path}: writing past the declared {self.n_rows} rows")
        valid = np.asarray(batch["valid"]).astype(bool) if "valid" in batch else None
        for name, data in batch.items():
            dtype = self.arrays[name][1]
            data = np.asarray(data).astype(dtype, copy=False)
            if valid is not None and not valid.all() and name != "valid" and np.dtype(dtype).kind == "f":
                self._write_sparse(name, data, valid)
            else:
                self.backend.write(name, self.rows_done, data)
        self.rows_done += n
        self._save_progress(self.rows_done)

    def _write_sparse(self, name: str, data: np.ndarray, valid: np.ndarray) -> None:
        """Write a float array's rows, leaving out every chunk this batch covers whole whose rows
        are all skipped (`valid` 0): such a chunk would only hold fill, yet cost a file (zarr)
        or its bytes. Elided chunks read as NaN and are listed in the `elided_chunks` attribute,
        so `open_store` tells them from lost ones."""
        start, chunk = self.rows_done, max(1, min(self.arrays[name][2], self.n_rows))
        run = None  # first row of the pending run of rows to write
        for k in range(start // chunk, (start + len(data) - 1) // chunk + 1):
            lo, hi = max(start, k * chunk), min(start + len(data), (k + 1) * chunk, self.n_rows)
            whole = lo == k * chunk and hi == min((k + 1) * chunk, self.n_rows)
            if whole and not valid[lo - start:hi - start].any():
                if run is not None:
                    self.backend.write(name, run, data[run - start:lo - start])
                    run = None
                self.elided.setdefault(name, []).append(k)
            elif run is None:
                run = lo
        if run is not None:
            self.backend.write(name, run, data[run - start:])

    def publish(self, extra_attrs: dict | None = None) -> Path:
        """Set `complete` last, then rename the partial store onto its final path; unlock."""
        self._check_holder()
        if self.rows_done != self.n_rows:
            raise StoreError(f"{self.path}: only {self.rows_done} of {self.n_rows} rows written")
        elided = {"elided_chunks": self.elided} if self.elided else {}
        self.backend.set_attrs({**(extra_attrs or {}), **elided, "rows_done": self.rows_done, "complete": True})
        self.backend.close()
        _remove(self.path)
        os.replace(self.partial, self.path)
        self.progress_file.unlink(missing_ok=True)
        self._release()
        return self.path

    def close(self) -> None:
        """Stop without publishing: the partial store stays to be resumed; the lock is freed."""
        if self._lock is not None:
            try:
                self.backend.close()
            finally:
                self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
