"""The feature store: one chunked on-disk cache per (dataset, model, split), Zarr or HDF5.

Both backends share one layout and one API. A store is written beside its final path
(`<path>.partial`) and published by one rename after its `complete` flag is set, so a reader
never sees half a store. Progress lives in a small sidecar (`<path>.progress.json`, replaced
atomically after every flushed chunk) so a killed extraction resumes from its last finished
chunk instead of starting over.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np

FORMATS = {"zarr": ".zarr", "hdf5": ".h5"}


class StoreError(ValueError):
    """A store cannot be used; the message names the path and what to do."""


class IncompleteStoreError(StoreError):
    pass


class StaleStoreError(StoreError):
    pass


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


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# --------------------------------------------------------------------------------- backends
class _ZarrBackend:
    def __init__(self, path: Path, mode: str):
        import zarr

        self.root = zarr.open_group(str(path), mode=mode)

    def create(self, name, shape, chunks, dtype):
        self.root.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)

    def write(self, name, start, data):
        self.root[name][start : start + len(data)] = data

    def read(self, name, start, stop):
        return np.asarray(self.root[name][start:stop])

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
        arr = self.root[name]
        return dict(shape=tuple(arr.shape), dtype=str(arr.dtype), chunks=tuple(arr.chunks),
                    bytes_stored=int(arr.nbytes_stored()))

    def attrs(self):
        return dict(self.root.attrs)

    def set_attrs(self, attrs):
        self.root.attrs.update(attrs)

    def close(self):
        pass


class _H5Backend:
    def __init__(self, path: Path, mode: str):
        import h5py

        self.file = h5py.File(path, {"w": "w", "r": "r", "a": "r+"}[mode])

    def create(self, name, shape, chunks, dtype):
        self.file.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, compression="lzf")

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
class StoreWriter:
    """Writes rows in order; `flush` points are resumable; `publish` makes the store visible.

    `arrays` maps a name to (per-row shape, dtype, rows per chunk). Resuming needs the same
    `config_hash`, layout and `resume_key`; anything else starts the partial store over.
    `resume_key` names inputs the config hash cannot see (the checkpoint file's sha256, the
    part index's content), so a partial store of other weights or rows is never continued.
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
                           "resume_key": resume_key}
        self.rows_done = self._resume_point()
        if self.rows_done == 0:
            self._create(attrs)
        else:
            self.backend = _backend(self.partial, "a")

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
                                "complete": False})
        self._save_progress(0)

    def _save_progress(self, rows_done: int) -> None:
        _write_json_atomic(self.progress_file, {**self._signature, "rows_done": rows_done})

    def write(self, batch: dict[str, np.ndarray]) -> None:
        """Append the next rows (every array of the layout, same length) and mark them done."""
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
        """Set `complete` last, then rename the partial store onto its final path."""
        if self.rows_done != self.n_rows:
            raise StoreError(f"{self.path}: only {self.rows_done} of {self.n_rows} rows written")
        self.backend.set_attrs({**(extra_attrs or {}), "rows_done": self.rows_done, "complete": True})
        self.backend.close()
        _remove(self.path)
        os.replace(self.partial, self.path)
        self.progress_file.unlink(missing_ok=True)
        return self.path


# --------------------------------------------------------------------------------- reader
class FeatureStore:
    """Read access to one published store (or to the union of its shards)."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self.parts = [_backend(p, "r") for p in paths]
        self.attrs = self.parts[0].attrs()
        self.offsets = np.cumsum([0] + [int(p.attrs()["n_rows"]) for p in self.parts])
        self.n_rows = int(self.offsets[-1])

    def array_names(self) -> list[str]:
        return self.parts[0].names()

    def info(self, name: str) -> dict:
        infos = [p.info(name) for p in self.parts]
        out = dict(infos[0])
        out["shape"] = (self.n_rows, *infos[0]["shape"][1:])
        out["bytes_stored"] = sum(i["bytes_stored"] for i in infos)
        return out

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        pieces = []
        for part, lo, hi in zip(self.parts, self.offsets[:-1], self.offsets[1:]):
            a, b = max(start, lo), min(stop, hi)
            if a < b:
                pieces.append(part.read(name, a - lo, b - lo))
        if not pieces:
            return self.parts[0].read(name, 0, 0)
        return np.concatenate(pieces) if len(pieces) > 1 else pieces[0]

    def iter_batches(self, names: list[str], batch_size: int, start: int = 0,
                     stop: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Stream rows in order so memory stays bounded by one batch."""
        stop = self.n_rows if stop is None else stop
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            yield {name: self.read(name, lo, hi) for name in names}

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


def open_store(path: Path | str, expect_hash: str | None = None) -> FeatureStore:
    """Open a published store; refuse incomplete, missing or stale ones with a clear reason.

    `path` is a `.zarr`/`.h5` store or a `.shards.json` manifest listing shard stores.
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
            attrs = _backend(p, "r").attrs()
        except Exception as err:
            raise StoreError(f"{p}: cannot be read as a {format_of(p)} store ({err}); delete it and rerun") from err
        if not attrs.get("complete"):
            raise IncompleteStoreError(f"{p}: store is incomplete (its 'complete' flag is not set); "
                                       "delete it and rerun the extraction")
        if expect_hash is not None and attrs.get("config_hash") != expect_hash:
            raise StaleStoreError(f"{p}: store was built with config hash {attrs.get('config_hash')} "
                                  f"but {expect_hash} is expected (it is stale, or was made for another "
                                  "config); delete it and rerun the workflow to rebuild it")
    return FeatureStore(paths)
