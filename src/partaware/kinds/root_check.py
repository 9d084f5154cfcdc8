"""A dataset root checked at config time against the files its first job reads, so a root one
folder off is one line naming the key and the fix, not the workflow's missing-input error."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def check_root(where: str, ds: dict, needed: list[str], fix: str) -> None:
    """Raise a ConfigError naming `<where>.root`, the first of `needed` (paths under the root)
    that is absent, and `fix`. Demo datasets (generated) and an absent root (the config's path
    check says so) pass."""
    root = Path(ds.get("root", ""))
    if "demo" in ds or not root.is_dir():
        return
    missing = [p for p in needed if not Path(p).exists()]
    if missing:
        raise ConfigError(f"config key {where}.root: {root} holds no {Path(missing[0]).relative_to(root)}; {fix}")
