"""What a dataset kind declares. The workflow, the CLI, the config check and extraction ask the
kind of a dataset (`partaware.kinds.get`) instead of branching on its name.

A kind module subclasses `Kind`, fills in the class attributes and the methods its data needs,
and registers an instance with `@register` in `partaware/kinds/__init__.py`'s list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class ExtractionPlan:
    """Everything extraction needs to fill one store of a (dataset, split[, shard]).

    `layout` maps array name -> (per-row shape, dtype, chunk rows); `images` and `resume_rows`
    name the rows exactly (the resume key: a resumed store must hold the same rows);
    `loader_data(start)` is the Dataset of the rows from `start` on; `make_step(encoder,
    device, amp)` returns the per-batch device function of `extraction.steps`.
    """
    n_rows: int
    layout: dict
    transform: str
    images: list[str]
    resume_rows: list
    rows: tuple[int, int]
    loader_data: Callable[[int], Any]
    collate: Callable
    make_step: Callable
    images_per_batch: int
    attrs: dict = field(default_factory=dict)


class Kind:
    """Base of the dataset kinds; see the module docstring."""

    name: str = ""
    roles: tuple[str, ...] = ()          # the kinds of store it makes (`stores`): the tasks reading one run on it
    schema: dict = {}                    # JSON-schema properties of its own config keys
    required: tuple[str, ...] = ()       # its required keys (unless the dataset is a demo)
    has_index: bool = False              # a part index (results/index/<dataset>/) is built first
    example: str = ""                    # a config line shown in errors

    # ---- config
    def paths(self, ds: dict) -> list[str]:
        """Files and folders that must exist before any job runs."""
        return [ds["root"]] if "root" in ds else []

    def check(self, where: str, ds: dict, cfg: dict) -> None:
        """Semantic checks beyond the schema (`cfg`: the whole validated config); raise
        config.ConfigError naming `where`."""

    @property
    def tasks(self) -> tuple[str, ...]:
        """The evaluation tasks this kind feeds: those reading a kind of store it makes."""
        from .. import tasks

        return tuple(n for n in tasks.names() if tasks.get(n).role in self.roles)

    # ---- jobs and their files
    def stores(self, role: str, ds: dict) -> list[str]:
        """The stores (split names) of one of its `roles`, in the order a task reads them:
        `gallery` (one store every row queries), `pair` (train, evaluated), `tokens` (a pair
        holding every token), `maps` (a pair of token maps and label maps), `grid` (patches)."""
        raise NotImplementedError(f"kind {self.name} makes no {role!r} stores")

    def splits(self, ds: dict, cfg: dict) -> list[str]:
        """The stores (splits) the configured tasks need, each once."""
        from .. import tasks

        return list(dict.fromkeys(s for t in ds["tasks"] for s in tasks.get(t).splits(self, ds, cfg)))

    def eval_names(self, ds: dict, cfg: dict) -> list[str]:
        """The result files its tasks write (results/evals/<dataset>/<model>/<name>.csv)."""
        from .. import tasks

        return [name for t in ds["tasks"] for name in tasks.get(t).outputs(ds, cfg)]

    def task_splits(self, ds: dict, task: str, cfg: dict | None = None) -> list[str]:
        """The stores one task reads, in the order the evaluation takes them."""
        from .. import tasks

        return tasks.get(task).splits(self, ds, cfg)

    def view_of(self, split: str) -> str:
        """The name of the view a split's store is extracted at (part of the store's signature):
        by default the paper's probe rule, `train` for the train split and `eval` for the others
        (kept so that existing stores keep their hash)."""
        return "train" if split == "train" else "eval"

    def index_inputs(self, ds: dict) -> list[str]:
        """Files the part index depends on (a change rebuilds it)."""
        return []

    def extract_inputs(self, ds: dict, split: str) -> list[str]:
        """Files an extraction job reads besides the checkpoint."""
        return []

    def store_arrays(self, ds: dict, split: str) -> list[str]:
        raise NotImplementedError

    def input_size(self, cfg: dict, ds: dict, split: str) -> int:
        """The side the encoder of a split's extraction is built at (its position table)."""
        return ds["size"]

    def readers(self, ds: dict, split: str) -> list:
        """The dataset's tasks that read a store of this split."""
        from .. import tasks

        return [t for t in map(tasks.get, ds["tasks"]) if split in t.splits(self, ds, None)]

    def carries_block_summaries(self, ds: dict, split: str) -> bool:
        """Whether a store of this split holds per-block summaries (`extract.blocks_summary`):
        where a task that evaluates them (`Task.block_summaries`) reads it."""
        return any(t.block_summaries for t in self.readers(ds, split))

    def generate_demo(self, ds: dict, out: Path) -> None:
        raise NotImplementedError(f"kind {self.name} has no demo generator")

    def build_index(self, ds: dict, outdir: Path, splits: list[str]) -> None:
        raise NotImplementedError(f"kind {self.name} has no part index")

    def plan(self, cfg: dict, dataset: str, split: str, encoder, device, index_path: Path | None,
             shard: int) -> ExtractionPlan:
        raise NotImplementedError
