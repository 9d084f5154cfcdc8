"""What an evaluation task declares (the registry's contract; see tasks/__init__.py)."""
from __future__ import annotations


class Task:
    name: str = ""                 # CLI --task choice, Snakemake wildcard, the table's `task` column
    section: str | None = None     # the config section it reads
    schema: dict = {}              # JSON-schema of that section (type object, properties with defaults)
    runtime_keys: tuple = ()       # keys of its section that never change results
    protocol: str = ""             # the `protocol` value its rows carry

    def splits(self, kind, ds: dict, cfg: dict) -> list[str]:
        """The stores (split names) it reads from a dataset of this kind, in order; [] = not run there."""
        return []

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        """Config-time checks beyond the schema; raise config.ConfigError (one line: key, value, fix)."""

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        """Result rows (with bootstrap intervals attached) and per-class rows, from published stores."""
        raise NotImplementedError

    def figures(self, cfg) -> list:
        return []
