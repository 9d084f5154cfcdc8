"""Reading the feature cache from Python: `open_features` gives a store's arrays, read lazily per
slice, and its rows as a pandas DataFrame joined with the part index.

Built on the store reader (`store.open_store`: Zarr, HDF5 and `.shards.json` manifests alike, the
same refusals of partial, damaged or missing stores) and on `inspect_store.find_index` (the part
index beside a store in the workflow's layout).
"""
from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path

import numpy as np

from .store import FeatureStore, IncompleteStoreError, StoreError, open_store

_SUFFIXES = (".zarr", ".h5", ".shards.json")


def store_path(results: str | Path, dataset: str, model: str, split: str) -> Path:
    """The one store the workflow wrote for (dataset, model, split) under `results`."""
    folder = Path(results) / "features" / dataset / model
    found = [folder / f"{split}{s}" for s in _SUFFIXES if (folder / f"{split}{s}").exists()]
    if len(found) == 1:
        return found[0]
    if found:
        raise StoreError(f"{folder}: several stores for split {split!r} ({', '.join(p.name for p in found)}); "
                         "pass the one you mean as open_features(path)")
    names = ", ".join(sorted(p.name for p in folder.iterdir())) if folder.is_dir() else ""
    raise IncompleteStoreError(
        f"{folder / split}{{{','.join(_SUFFIXES)}}}: no store for dataset {dataset!r}, model {model!r}, "
        f"split {split!r}" + (f" (the folder holds: {names})" if names else "")
        + "; check the names, or run the workflow to extract it")


class LazyArray:
    """One array of a store; indexing reads only the rows asked for (`x[10:20]`, `x[[3, 7]]`,
    `x[mask]`, `x[5, :, 0]`), `np.asarray(x)` reads it whole."""

    def __init__(self, store: FeatureStore, name: str):
        self._store, self.name = store, name
        info = store.info(name)
        self.shape, self.dtype = tuple(info["shape"]), np.dtype(info["dtype"])
        self.chunks = tuple(info["chunks"])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<LazyArray {self.name!r} shape={self.shape} dtype={self.dtype} chunks={self.chunks}>"

    def __array__(self, dtype=None, copy=None):
        values = self._store.read(self.name)
        return values if dtype is None else values.astype(dtype)

    def __getitem__(self, key):
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if rows is Ellipsis:
            return np.asarray(self)[key]
        n = len(self)
        if isinstance(rows, (int, np.integer)):
            i = int(rows) + n if rows < 0 else int(rows)
            if not 0 <= i < n:
                raise IndexError(f"{self.name}: row {rows} out of range for {n} rows")
            return self._store.read(self.name, i, i + 1)[0][rest]
        if isinstance(rows, slice):
            start, stop, step = rows.indices(n)
            if step > 0:
                values = self._store.read(self.name, start, max(start, stop))[::step]
            else:
                values = self._store.read(self.name, stop + 1, start + 1)[::-1][::-step]
            return values[(slice(None), *rest)]
        return self._take(np.asarray(rows))[(slice(None), *rest)]

    def _take(self, rows: np.ndarray) -> np.ndarray:
        """Rows by a boolean mask or integer positions, reading spans no wider than needed: rows
        less than a chunk apart share one read."""
        n = len(self)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"{self.name}: boolean mask of shape {rows.shape} for {n} rows")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64).ravel()
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"{self.name}: row index out of range for {n} rows")
        wanted = np.unique(rows)
        out = np.empty((len(wanted), *self.shape[1:]), self.dtype)
        gap = max(1, self.chunks[0] if self.chunks else 1)
        breaks = np.flatnonzero(np.diff(wanted) > gap) + 1
        for span in np.split(wanted, breaks) if len(wanted) else []:
            lo = int(span[0])
            block = self._store.read(self.name, lo, int(span[-1]) + 1)
            out[np.searchsorted(wanted, span)] = block[span - lo]
        return out[np.searchsorted(wanted, rows)]


class Features:
    """An open store: `arrays` (names), `features[name]` (a LazyArray), `index` (one DataFrame row
    per store row, in store order), `attrs` (model, checkpoint, transform, ...). Close it, or use
    it in a `with` block."""

    def __init__(self, path: str | Path, index: str | Path | None = None):
        from .inspect_store import find_index

        self.path = Path(path)
        self.store = open_store(self.path)
        self.attrs: dict = dict(self.store.attrs)
        self.index_path = Path(index) if index is not None else find_index(self.path, self.attrs)

    @property
    def arrays(self) -> list[str]:
        return self.store.array_names()

    def __len__(self) -> int:
        return self.store.n_rows

    def __contains__(self, name: str) -> bool:
        return name in self.arrays

    def __getitem__(self, name: str) -> LazyArray:
        if name not in self.arrays:
            raise KeyError(f"{self.path}: no array {name!r}; it holds {', '.join(self.arrays)}")
        return LazyArray(self.store, name)

    def read(self, name: str) -> np.ndarray:
        """A whole array in memory (fine for `cls`, `mean`, `label`; use slices for `tokens`)."""
        return np.asarray(self[name])

    @cached_property
    def index(self):
        """Per store row: `row`, `label`, `valid`, `split`, and through the part index (where the
        dataset has one) `image`, `part`, `box` (x0, y0, x1, y1) and the index's other columns;
        stores of one row per image without a part index (dense, segmentation) join `image` (its
        path) and `image_key` from their attrs."""
        import pandas as pd

        names = self.arrays
        table = pd.DataFrame({k: self.store.read(k) for k in ("row", "label") if k in names})
        if "valid" in names:
            table["valid"] = self.store.read("valid").astype(bool)
        classes = self.attrs.get("classes")
        if classes and "label" in table:
            table["class"] = np.asarray(classes, dtype=object)[table["label"].to_numpy()]
        table["split"] = self.attrs.get("split")
        if self.index_path is None or "row" not in table:
            return with_image_keys(table, self.attrs)
        from .data.parts import read_index

        parts = read_index(self.index_path)
        if len(parts) != len(table):
            warnings.warn(f"{self.index_path}: {len(parts)} rows, the store {self.path} {len(table)}; "
                          "one of them is stale (rerun the workflow)", stacklevel=2)
        joined = parts.set_index("row").reindex(table["row"]).reset_index(drop=True)
        table["image"] = joined["image_path"]
        table["part"] = joined["part_name"]
        table["box"] = [None if pd.isna(x0) else (int(x0), int(y0), int(x1), int(y1))
                        for x0, y0, x1, y1 in joined[["x0", "y0", "x1", "y1"]].itertuples(index=False)]
        table["split"] = joined["split"].fillna(table["split"])
        rest = [c for c in joined.columns if c not in ("image_path", "part_name", "label", "split")]
        table = pd.concat([table, joined[rest]], axis=1)
        first = ["row", "image", "part", "box", "split", "label", "valid"]
        return table[[c for c in first if c in table] + [c for c in table if c not in first]]

    def __repr__(self) -> str:
        return f"<Features {self.path} rows={len(self)} arrays={self.arrays}>"

    def close(self) -> None:
        self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_features(path: str | Path | None = None, *, results: str | Path = "results", dataset: str | None = None,
                  model: str | None = None, split: str | None = None,
                  index: str | Path | None = None) -> Features:
    """Open a published store by `path` (`.zarr`, `.h5` or `.shards.json`), or by `dataset`,
    `model` and `split` under the `results` folder. `index` overrides the part index found beside
    it. Refuses partial, damaged and missing stores with the store reader's one-line errors."""
    if path is None:
        missing = [k for k, v in (("dataset", dataset), ("model", model), ("split", split)) if v is None]
        if missing:
            raise TypeError(f"open_features: give a store path, or dataset, model and split (missing: "
                            f"{', '.join(missing)})")
        path = store_path(results, dataset, model, split)
    elif any(v is not None for v in (dataset, model, split)):
        raise TypeError("open_features: give either a store path or dataset/model/split, not both")
    return Features(path, index)


def with_image_keys(table, attrs: dict):
    """`table` (one row per store row, with `row` where the store has it) joined with the image
    of each row that a store without a part index records: `image` (path, `image_paths`) and
    `image_key` (`image_keys`: the pair table's key of a dense store)."""
    rows = table["row"].to_numpy() if "row" in table else np.arange(len(table))
    for column, attr in (("image", "image_paths"), ("image_key", "image_keys")):
        listed = attrs.get(attr)
        if listed is not None and len(rows) and int(rows.max()) < len(listed):
            table.insert(min(1, len(table.columns)), column, np.asarray(listed, dtype=object)[rows])
    return table
