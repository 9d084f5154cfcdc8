"""The two on-disk formats behind one small interface: Zarr v3 (crc32c per chunk) and HDF5
(fletcher32 per chunk). `_backend(path, mode)` picks one by the path's suffix; the writer and
the reader only ever talk to that interface (create, write, read, names, info, grid,
chunk_key, missing_chunks, attrs, set_attrs, close).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .errors import StoreError


FORMATS = {"zarr": ".zarr", "hdf5": ".h5"}
# 2: per-chunk checksums, NaN fill for float arrays, every chunk written (none elided as empty).
STORE_FORMAT = 2


def format_of(path: Path) -> str:
    name = Path(path).name.removesuffix(".partial")
    suffix = Path(name).suffix
    for fmt, ext in FORMATS.items():
        if suffix == ext:
            return fmt
    raise StoreError(f"{path}: not a feature store (expected a path ending in .zarr or .h5)")


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


_SNAKEMAKE_STAMP = r"Object at (.*/)?\.snakemake_timestamp is not recognized"


def _quiet_zarr() -> None:
    """Snakemake drops `.snakemake_timestamp` into directory outputs; zarr warns about the
    foreign file on every listing. Ignore exactly that warning, ahead of any other filter."""
    first = warnings.filters[0] if warnings.filters else None
    if not (first and first[0] == "ignore" and first[1] is not None and first[1].pattern == _SNAKEMAKE_STAMP):
        warnings.filterwarnings("ignore", message=_SNAKEMAKE_STAMP, category=UserWarning)


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
