"""The one error type of the data layer.

Every message names the offending file (with its line number, or the offending value) and
says how to fix it, so a failed `prepare` job can be repaired from its log alone.
"""

from __future__ import annotations

import os


class DataError(ValueError):
    """A dataset file or setting that the part index cannot be built from."""


def at(path: str | os.PathLike, line: int | None = None) -> str:
    """`path:line` (or just `path`) for messages; line numbers are 1-based like editors."""
    return f"{os.fspath(path)}:{line}" if line is not None else os.fspath(path)
