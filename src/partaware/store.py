"""The feature store: one chunked on-disk cache per (dataset, model, split), Zarr or HDF5.

Both backends share one layout and one API. A store is written beside its final path
(`<path>.partial`) and published by one rename after its `complete` flag is set, so a reader
never sees half a store. Progress lives in a small sidecar (`<path>.progress.json`, replaced
atomically after every flushed chunk) so a killed extraction resumes from its last finished
chunk instead of starting over.

Integrity: every chunk carries a checksum (Zarr crc32c, HDF5 fletcher32), so a changed or cut
byte is an error on read, never a silently different number; a missing chunk of a float array
reads as NaN (never as plausible zeros) and `open_store` refuses a store with missing chunks;
`FeatureStore.read_checked` refuses NaN/Inf in valid rows. One writer per store: `StoreWriter`
holds `<store>.lock` (see `store_lock.py`) from its start until it publishes or closes.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np

from .store_lock import LockHeldError, StoreLock

log = logging.getLogger(__name__)

FORMATS = {"zarr": ".zarr", "hdf5": ".h5"}
# 2: per-chunk checksums, NaN fill for float arrays, every chunk written (none elided as empty).
STORE_FORMAT = 2


# A writer whose Snakemake was killed exits within seconds (`watchdog.py`); a rerun started at
# once waits this long for its lock before refusing with the owner's name.
LOCK_WAIT_S = 20.0


class StoreError(ValueError):
    """A store cannot be used; the message names the path and what to do."""


class IncompleteStoreError(StoreError):
    pass


class StaleStoreError(StoreError):
    pass


class DamagedStoreError(StoreError):
    """Chunks are missing, fail their checksum or cannot be decoded."""


class NonFiniteError(StoreError):
    """NaN or Inf in rows that would be scored."""


class StoreLockedError(StoreError):
    """Another live writer holds the store."""


def format_of(path: Path) -> str:
    name = Path(path).name.removesuffix(".partial")
    suffix = Path(name).suffix
    for fmt, ext in FORMATS.items():
        if suffix == ext:
            return fmt
    raise StoreError(f"{path}: not a feature store (expected a path ending in .zarr or .h5)")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _progress(path: Path) -> Path:
    return path.with_name(path.name + ".progress.json")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _rows(lo: int, hi: int) -> str:
    """Rows [lo, hi) as people count them."""
    return f"row {lo}" if hi - lo == 1 else f"rows {lo}-{hi - 1}"


def describe_read_error(err: Exception) -> str:
    """Why a chunk could not be read, in words (the checksum codecs' own messages are terse)."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "checksum" in text.lower():
        return f"checksum mismatch: its bytes were changed or cut short ({text[:120]})"
    if "filter returned failure" in text:  # HDF5: fletcher32 (or lzf) refused the chunk
        return ("fails its fletcher32 checksum or cannot be decoded: its bytes were changed or cut "
                f"short ({text[:120]})")
    return f"cannot be decoded, truncated or corrupted ({type(err).__name__}: {text[:120]})"


_SNAKEMAKE_STAMP = r"Object at (.*/)?\.snakemake_timestamp is not recognized"


def _quiet_zarr() -> None:
    """Snakemake drops `.snakemake_timestamp` into directory outputs; zarr warns about the
    foreign file on every listing. Ignore exactly that warning, ahead of any other filter."""
    first = warnings.filters[0] if warnings.filters else None
    if not (first and first[0] == "ignore" and first[1] is not None and first[1].pattern == _SNAKEMAKE_STAMP):
        warnings.filterwarnings("ignore", message=_SNAKEMAKE_STAMP, category=UserWarning)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------- backends
def _n_chunks(n_rows: int, chunk_rows: int) -> int:
    return -(-n_rows // max(1, chunk_rows))


class _ZarrBackend:
    def __init__(self, path: Path, mode: str):
        import zarr

        _quiet_zarr()
        self.path = Path(path)
        self.root = zarr.open_group(str(path), mode=mode)
        self._arrays = {}

    def create(self, name, shape, chunks, dtype):
        from zarr.codecs import Crc32cCodec, ZstdCodec

        floating = np.dtype(dtype).kind == "f"
        self.root.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                               fill_value=np.nan if floating else 0,
                               compressors=[ZstdCodec(level=0), Crc32cCodec()],
                               config={"write_empty_chunks": True})

    def _array(self, name):
        if name not in self._arrays:  # all-zero chunks are written too, or they would look missing
            self._arrays[name] = self.root[name].with_config({"write_empty_chunks": True})
        return self._arrays[name]

    def write(self, name, start, data):
        self._array(name)[start : start + len(data)] = data

    def read(self, name, start, stop):
        return np.asarray(self._array(name)[start:stop])

    def names(self):
        out = []

        def walk(group, prefix):
            for key in sorted(group.array_keys()):
                out.append(prefix + key)
            for key, sub in sorted(group.groups()):
                walk(sub, prefix + key + "/")

        walk(self.root, "")
        return out

    def info(self, name):
        arr = self._array(name)
        return dict(shape=tuple(arr.shape), dtype=str(arr.dtype), chunks=tuple(arr.chunks),
                    bytes_stored=int(arr.nbytes_stored()))

    def grid(self, name):
        """(rows, rows per chunk) of an array, without listing its chunks."""
        arr = self._array(name)
        return int(arr.shape[0]), int(arr.chunks[0])

    def _chunk_file(self, name, k):
        """The file of the `k`-th chunk of rows, relative to the store."""
        arr = self._array(name)
        return f"{name}/{arr.metadata.encode_chunk_key((k,) + (0,) * (arr.ndim - 1))}"

    def chunk_key(self, name, k):
        """The `k`-th chunk of rows, as messages name it."""
        return f"file {self._chunk_file(name, k)}"

    def missing_chunks(self, name):
        arr = self._array(name)
        return [k for k in range(_n_chunks(arr.shape[0], arr.chunks[0]))
                if not (self.path / self._chunk_file(name, k)).is_file()]

    def attrs(self):
        return dict(self.root.attrs)

    def set_attrs(self, attrs):
        self.root.attrs.update(attrs)

    def close(self):
        pass


class _H5Backend:
    def __init__(self, path: Path, mode: str):
        import h5py

        self.path = Path(path)
        self.file = h5py.File(path, {"w": "w", "r": "r", "a": "r+"}[mode])

    def create(self, name, shape, chunks, dtype):
        fill = {"fillvalue": np.nan} if np.dtype(dtype).kind == "f" else {}
        self.file.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, compression="lzf",
                                 fletcher32=True, **fill)

    def write(self, name, start, data):
        self.file[name][start : start + len(data)] = data
        self.file.flush()

    def read(self, name, start, stop):
        return self.file[name][start:stop]

    def names(self):
        import h5py

        out = []
        self.file.visititems(lambda key, obj: out.append(key) if isinstance(obj, h5py.Dataset) else None)
        return sorted(out)

    def info(self, name):
        ds = self.file[name]
        return dict(shape=tuple(ds.shape), dtype=str(ds.dtype), chunks=tuple(ds.chunks or ()),
                    bytes_stored=int(ds.id.get_storage_size()))

    def grid(self, name):
        ds = self.file[name]
        return int(ds.shape[0]), int(ds.chunks[0]) if ds.chunks else max(1, int(ds.shape[0]))

    def chunk_key(self, name, k):
        return f"#{k}"

    def missing_chunks(self, name):
        ds = self.file[name]
        if not ds.chunks:
            return []
        rows, total, stored = ds.chunks[0], _n_chunks(ds.shape[0], ds.chunks[0]), ds.id.get_num_chunks()
        if stored >= total:
            return []
        present = {ds.id.get_chunk_info(i).chunk_offset[0] // rows for i in range(stored)}
        return [k for k in range(total) if k not in present]

    def attrs(self):
        return {k: _from_h5(v) for k, v in self.file.attrs.items()}

    def set_attrs(self, attrs):
        for key, value in attrs.items():
            self.file.attrs[key] = json.dumps(value)
        self.file.flush()

    def close(self):
        self.file.close()


def _from_h5(value):
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return value


def _backend(path: Path, mode: str):
    return (_ZarrBackend if format_of(path) == "zarr" else _H5Backend)(path, mode)


# --------------------------------------------------------------------------------- writer
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
        _write_json_atomic(self.progress_file, {**self._signature, "rows_done": rows_done})

    def write(self, batch: dict[str, np.ndarray]) -> None:
        """Append the next rows (every array of the layout, same length) and mark them done."""
        self._check_holder()
        missing = set(self.arrays) - set(batch)
        if missing:
            raise StoreError(f"{self.path}: batch lacks arrays {sorted(missing)}")
        n = len(next(iter(batch.values())))
        if self.rows_done + n > self.n_rows:
            raise StoreError(f"{self.path}: writing past the declared {self.n_rows} rows")
        for name, data in batch.items():
            dtype = self.arrays[name][1]
            self.backend.write(name, self.rows_done, np.asarray(data).astype(dtype, copy=False))
        self.rows_done += n
        self._save_progress(self.rows_done)

    def publish(self, extra_attrs: dict | None = None) -> Path:
        """Set `complete` last, then rename the partial store onto its final path; unlock."""
        self._check_holder()
        if self.rows_done != self.n_rows:
            raise StoreError(f"{self.path}: only {self.rows_done} of {self.n_rows} rows written")
        self.backend.set_attrs({**(extra_attrs or {}), "rows_done": self.rows_done, "complete": True})
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


# --------------------------------------------------------------------------------- reader
class FeatureStore:
    """Read access to one published store (or to the union of its shards)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.parts = [_backend(p, "r") for p in paths]
        self.attrs = self.parts[0].attrs()
        part_attrs = [p.attrs() for p in self.parts]
        self.offsets = np.cumsum([0] + [int(a["n_rows"]) for a in part_attrs])
        self.n_rows = int(self.offsets[-1])
        # 1: written before checksums; its lost chunks read as zeros and cannot be told from empty ones
        self.format = min(int(a.get("store_format", 1)) for a in part_attrs)
        self._names = None

    def array_names(self) -> list[str]:
        if self._names is None:
            self._names = self.parts[0].names()
        return list(self._names)

    def info(self, name: str) -> dict:
        infos = [p.info(name) for p in self.parts]
        out = dict(infos[0])
        out["shape"] = (self.n_rows, *infos[0]["shape"][1:])
        out["bytes_stored"] = sum(i["bytes_stored"] for i in infos)
        return out

    def path_of_row(self, row: int) -> Path:
        """The store (shard) file that holds a row."""
        return self.paths[int(np.searchsorted(self.offsets, row, side="right")) - 1]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of one array; a chunk that fails its checksum or cannot be decoded
        raises DamagedStoreError naming the store, the array and the rows."""
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        pieces = []
        for path, part, lo, hi in zip(self.paths, self.parts, self.offsets[:-1], self.offsets[1:]):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                try:
                    pieces.append(part.read(name, a - lo, b - lo))
                except KeyError:
                    raise
                except Exception as err:
                    raise DamagedStoreError(
                        f"{path}: array '{name}' {_rows(int(a), int(b))}: a chunk is damaged ({describe_read_error(err)}); "
                        f"`partaware inspect --verify {path}` lists every damaged chunk; delete the store "
                        "and rerun the workflow") from err
        if not pieces:
            return self.parts[0].read(name, 0, 0)
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def read_checked(self, name: str, start: int = 0, stop: int | None = None,
                     valid: np.ndarray | None = None) -> np.ndarray:
        """`read`, refusing NaN or Inf in valid rows of a float array (what evaluations score).

        `valid` is the mask of rows [start, stop) to check (default: the store's `valid` array,
        or every row). A lost chunk of a float array reads as NaN, so it cannot be scored.
        """
        values = self.read(name, start, stop)
        if values.dtype.kind != "f" or not len(values):
            return values
        if valid is None:
            valid = (self.read("valid", start, start + len(values)).astype(bool)
                     if "valid" in self.array_names() else np.ones(len(values), bool))
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != (len(values),):
            raise ValueError(f"read_checked: valid has shape {valid.shape}, the rows read {len(values)}")
        flat = values.reshape(len(values), -1)
        step = max(1, 2**22 // max(1, flat.shape[1]))  # bounded scratch memory for large arrays
        bad = np.concatenate([np.flatnonzero(valid[i : i + step] & ~np.isfinite(flat[i : i + step]).all(axis=1))
                              + i for i in range(0, len(flat), step)]) + start
        if len(bad):
            path = self.path_of_row(bad[0])
            first = ", ".join(str(r) for r in bad[:5])
            raise NonFiniteError(
                f"{path}: array '{name}' holds NaN or Inf in {len(bad)} valid row(s) (first: {first}); "
                "they come from a lost chunk (read as NaN) or an encoder overflow and cannot be scored; "
                f"`partaware inspect --verify {path}` shows the damage; delete the store and rerun the workflow")
        return values

    def iter_batches(self, names: list[str], batch_size: int, start: int = 0,
                     stop: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Stream rows in order so memory stays bounded by one batch."""
        stop = self.n_rows if stop is None else stop
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield {name: self.read(name, lo, hi) for name in names}

    def chunks(self, name: str) -> Iterator[tuple[int, int, int, str]]:
        """Every chunk of an array: (part, global first row, global end row, chunk name)."""
        for i, (part, offset) in enumerate(zip(self.parts, self.offsets[:-1])):
            n, rows = part.grid(name)
            for k in range(_n_chunks(n, rows)):
                yield i, int(offset + k * rows), int(offset + min(n, (k + 1) * rows)), self._chunk_key(i, name, k)

    def missing_chunks(self, name: str) -> list[tuple[int, int, str]]:
        """Chunks of an array absent from disk: (global first row, global end row, chunk name).
        Meaningful from store format 2 on (format 1 left all-zero chunks unwritten)."""
        out = []
        for i, (part, offset) in enumerate(zip(self.parts, self.offsets[:-1])):
            n, rows = part.grid(name)
            for k in part.missing_chunks(name):
                lo, hi = int(offset + k * rows), int(offset + min(n, (k + 1) * rows))
                out.append((lo, hi, self._chunk_key(i, name, k)))
        return out

    def _chunk_key(self, part: int, name: str, k: int) -> str:
        key = self.parts[part].chunk_key(name, k)
        return f"{key} of {self.paths[part].name}" if len(self.parts) > 1 else key

    def close(self) -> None:
        for part in self.parts:
            part.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _shard_paths(manifest: Path) -> list[Path]:
    try:
        data = json.loads(manifest.read_text())
        return [manifest.parent / p for p in data["shards"]]
    except (OSError, ValueError, KeyError) as err:
        raise StoreError(f"{manifest}: unreadable shard manifest ({err}); rerun the workflow") from err


def open_store(path: Path | str, expect_hash: str | None = None,
               check_chunks: bool = True) -> FeatureStore:
    """Open a published store; refuse incomplete, missing, stale or damaged ones with a clear reason.

    `path` is a `.zarr`/`.h5` store or a `.shards.json` manifest listing shard stores.
    `check_chunks` refuses a store whose arrays lack chunks on disk (a listing, no decoding);
    `partaware inspect` turns it off to describe and verify damaged stores.
    """
    path = Path(path)
    if path.name.endswith(".shards.json"):
        paths = _shard_paths(path)
    else:
        paths = [path]
    for p in paths:
        format_of(p)
        if not p.exists():
            hint = " (an interrupted write is still partial; rerun the workflow to finish it)" \
                if _partial(p).exists() else ""
            raise IncompleteStoreError(f"{p}: no published store here{hint}")
        try:
            backend = _backend(p, "r")
            attrs = backend.attrs()
            backend.close()
        except Exception as err:
            raise StoreError(f"{p}: cannot be read as a {format_of(p)} store ({err}); delete it and rerun") from err
        if not attrs.get("complete"):
            raise IncompleteStoreError(f"{p}: store is incomplete (its 'complete' flag is not set); "
                                       "delete it and rerun the extraction")
        if expect_hash is not None and attrs.get("config_hash") != expect_hash:
            raise StaleStoreError(f"{p}: store was built with config hash {attrs.get('config_hash')} "
                                  f"but {expect_hash} is expected (it is stale, or was made for another "
                                  "config); delete it and rerun the workflow to rebuild it")
    store = FeatureStore(paths)
    if check_chunks and store.format >= 2:
        missing = [(name, m) for name in store.array_names() for m in store.missing_chunks(name)]
        if missing:
            store.close()
            name, (lo, hi, key) = missing[0]
            where = store.path_of_row(lo)
            raise DamagedStoreError(
                f"{where}: {len(missing)} chunk(s) missing, first {key} ({name} {_rows(lo, hi)}): the "
                f"store is damaged (a lost or deleted chunk file), not stale; `partaware inspect --verify "
                f"{path}` lists them; delete the store and rerun the workflow")
    return store
