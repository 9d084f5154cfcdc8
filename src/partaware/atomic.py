"""Write-to-a-sibling-then-rename, the one way partaware publishes a file.

A reader (or a rerun after a kill) sees either the previous complete file or the new complete
file, never a half-written one; the temporary sibling is removed when the write fails.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df, path: str | os.PathLike) -> None:
    """A pandas DataFrame as CSV without the index."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
