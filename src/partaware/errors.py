"""The errors the core shares, at the bottom of the layers (docs/design.md, "Layers"): the kinds,
the tasks, `config` and the CLI raise them without importing each other.

`DataError` (a dataset file or setting a part index cannot be built from) stays the data layer's
own (`partaware.data.errors`) and is re-exported here for the core.
"""
from __future__ import annotations

from .data.errors import DataError


class ConfigError(ValueError):
    """One line: where in the config, what is wrong, how to fix it."""


def seg_protocols(cfg: dict) -> list[str]:
    """The segmentation protocols to run (`segmentation.protocol`: one or a list). Here, beside the
    errors, because the segfolder kind's check and the segmentation task both read it."""
    protocol = cfg["segmentation"]["protocol"]
    return [protocol] if isinstance(protocol, str) else list(protocol)


__all__ = ["ConfigError", "DataError", "seg_protocols"]
