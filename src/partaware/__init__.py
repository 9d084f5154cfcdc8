"""partaware: how well pretrained vision encoders represent object parts (a Snakemake pipeline).

The Python API, loaded on first use so `import partaware` stays cheap (no numpy, zarr or torch):
`partaware.open_features(path)` or `partaware.open_features(results=..., dataset=..., model=...,
split=...)` opens a cached feature store (see `partaware.api`).
"""
from __future__ import annotations

__all__ = ["open_features", "Features", "LazyArray"]


def _version() -> str:
    """pyproject.toml's version, as installed (one source); read on first use, as importlib.metadata
    costs ~50 ms to import."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("partaware")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str):
    if name == "__version__":
        globals()["__version__"] = _version()
        return globals()["__version__"]
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'partaware' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__, "__version__"})
