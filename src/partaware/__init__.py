"""partaware: how well pretrained vision encoders represent object parts (a Snakemake pipeline).

The Python API, loaded on first use so `import partaware` stays cheap (no numpy, zarr or torch):
`partaware.open_features(path)` or `partaware.open_features(results=..., dataset=..., model=...,
split=...)` opens a cached feature store (see `partaware.api`).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("partaware")  # pyproject.toml's version, as installed: one source
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["open_features", "Features", "LazyArray"]


def __getattr__(name: str):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'partaware' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
