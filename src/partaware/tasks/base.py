"""What an evaluation task declares. The config schema, the CLI, the workflow's rules, the kinds'
store requests, the bootstrap and the summary figure ask the task (`partaware.tasks.get`)
instead of branching on its name.

A task module subclasses `Task`, fills in the class attributes and `rows`, and registers an
instance with `@register`; its module is listed in `partaware/tasks/__init__.py`'s `_MODULES`.
"""
from __future__ import annotations


class Task:
    """Base of the evaluation tasks; see the module docstring."""

    name: str = ""                 # CLI --task choice, Snakemake wildcard, the table's `task` column
    section: str | None = None     # the config section it reads (its part of the job spec)
    schema: dict = {}              # JSON-schema of that section, merged into the config schema under `section`
    runtime_keys: tuple = ()       # keys of its section that never change results (left out of job specs)
    protocol: str = ""             # the `protocol` value (results.PROTOCOLS) its rows carry by default
    role: str = ""                 # the kind of store it reads (`Kind.roles`): which kinds feed it
    metrics: dict = {}             # metric name of its rows -> bootstrap statistic (evals.bootstrap.STATISTICS)
    headline: dict = {}            # metric -> (summary panel family, bar group template) in figures/summary.py
    runs_from_stores: bool = True  # `partaware evaluate --task <name>` computes rows (False: figures only)
    arrays: tuple = ()             # store arrays it needs beyond a kind's own (e.g. `tokens`)
    block_summaries: bool = False  # it evaluates per-block summaries (`extract.blocks_summary`) of its stores
    detail: str = "per_class"      # its detail rows go to <name>_<detail>.csv beside its result CSV

    def splits(self, kind, ds: dict, cfg: dict | None) -> list[str]:
        """The stores (split names) it reads from a dataset of this kind, in order; [] = not run there.
        `cfg` None asks which stores it reads when it runs from stores."""
        return kind.stores(self.role, ds)

    def outputs(self, ds: dict, cfg: dict) -> list[str]:
        """Its result files results/evals/<dataset>/<model>/<name>.csv on this dataset."""
        return [self.name] if self.runs_from_stores else []

    def store_settings(self, cfg: dict, kind, ds: dict) -> dict:
        """Settings of its section that shape the stores it reads (e.g. their input size): they enter
        those stores' signature and their extract job's spec. {} (the default): none do."""
        return {}

    def sections(self) -> tuple[str, ...]:
        """The config sections its evaluate job depends on: its own and the bootstrap's `stats`."""
        return ((self.section,) if self.section else ()) + ("stats",)

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        """Config-time checks beyond the schema; raise config.ConfigError (one line: key, value, fix)."""

    def rows(self, cfg: dict, ctx: dict, stores: list) -> tuple[list[dict], list[dict]]:
        """Result rows (results.result_row, with bootstrap intervals attached) and per-class rows,
        computed from published stores (store.FeatureStore) in the order of `splits`."""
        raise NotImplementedError(f"task {self.name} computes no rows (figures only)")

    def figures(self, cfg: dict, dataset: str) -> list[str]:
        """Its figures of this dataset, results/figures/<dataset>/<name>.png (rules/figures.smk
        draws them; `all` asks for them); none by default."""
        return []
