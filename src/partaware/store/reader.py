"""Reading published stores: `open_store` checks a store (or a `.shards.json` manifest of
shard stores) is complete, current and has every chunk, and returns a `FeatureStore` that reads
rows across shards, refusing damaged chunks and NaN/Inf in valid rows.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from .backends import _backend, _n_chunks, _partial, format_of
from .errors import (DamagedStoreError, IncompleteStoreError, NonFiniteError, StaleStoreError, StoreError,
                     describe_read_error)


def _rows(lo: int, hi: int) -> str:
    """Rows [lo, hi) as people count them."""
    return f"row {lo}" if hi - lo == 1 else f"rows {lo}-{hi - 1}"


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
        self._check_holds(name)
        infos = [p.info(name) for p in self.parts]
        out = dict(infos[0])
        out["shape"] = (self.n_rows, *infos[0]["shape"][1:])
        out["bytes_stored"] = sum(i["bytes_stored"] for i in infos)
        return out

    def path_of_row(self, row: int) -> Path:
        """The store (shard) file that holds a row."""
        return self.paths[int(np.searchsorted(self.offsets, row, side="right")) - 1]

    def _check_holds(self, name: str) -> None:
        if name not in self.array_names():
            raise StoreError(f"{self.paths[0]}: no array {name!r} in this store (it has {self.array_names()}); "
                             "it was extracted by another partaware or for another task: delete it and rerun")

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of one array; a chunk that fails its checksum or cannot be decoded
        raises DamagedStoreError naming the store, the array and the rows; an array the store
        does not hold, a StoreError naming what it holds."""
        self._check_holds(name)
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
        Meaningful from store format 2 on (format 1 left all-zero chunks unwritten); chunks the
        writer left out on purpose (`elided_chunks`: every row skipped) are not missing."""
        out = []
        for i, (part, offset) in enumerate(zip(self.parts, self.offsets[:-1])):
            n, rows = part.grid(name)
            elided = set((part.attrs().get("elided_chunks") or {}).get(name, []))  # skipped rows only
            for k in part.missing_chunks(name):
                if k in elided:
                    continue
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
