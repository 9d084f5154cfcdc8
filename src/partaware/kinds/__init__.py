"""The registry of dataset kinds: one module per kind (see `base.Kind` for what each declares).

Adding a kind: write `kinds/<name>.py` with a `Kind` subclass, add it to `_MODULES`, and test
it; nothing else branches on kind names.
"""
from __future__ import annotations

from importlib import import_module

from ..data.errors import DataError
from .base import ExtractionPlan, Kind, Readers

_MODULES = ("cub", "coco", "segfolder", "imagefolder", "patchgrid", "spair", "soco", "partimagenet")
KINDS: dict[str, Kind] = {}


def register(cls: type[Kind]) -> type[Kind]:
    KINDS[cls.name] = cls()
    return cls


def _load() -> None:
    for module in _MODULES:
        import_module(f"{__name__}.{module}")


def get(name: str) -> Kind:
    """The kind called `name`, or a DataError (a ValueError) listing the known ones."""
    if not KINDS:
        _load()
    if name not in KINDS:
        raise DataError(f"unknown kind {name!r}; use one of {', '.join(sorted(KINDS))} "
                        "(partaware/kinds/)")
    return KINDS[name]


def names() -> list[str]:
    if not KINDS:
        _load()
    return sorted(KINDS)


def of(ds: dict) -> Kind:
    """The kind of a dataset config."""
    return get(ds["kind"])


def build_part_index(ds: dict):
    """The part index of a dataset config (both splits); see `data.parts`."""
    return of(ds).read_index(ds)


__all__ = ["ExtractionPlan", "Kind", "Readers", "KINDS", "build_part_index", "get", "names", "of", "register"]
