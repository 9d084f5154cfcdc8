"""What a dataset kind declares. The workflow, the CLI, the config check and extraction ask the
kind of a dataset (`partaware.kinds.get`) instead of branching on its name.

A kind module subclasses `Kind`, fills in the class attributes and the methods its data needs,
and registers an instance with `@register` in `partaware/kinds/__init__.py`'s list.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..extraction.plan import ExtractionPlan


@dataclass(frozen=True)
class Readers:
    """What the tasks reading a store ask of it, resolved above the registries
    (`partaware.roles.store_readers`): `arrays` beyond the kind's own (`Task.arrays`, in reader
    order) and `blocks`, the per-block summaries setting it carries ([] = none)."""
    arrays: tuple = ()
    blocks: str | list = field(default_factory=list)


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
        errors.ConfigError naming `where`."""

    # ---- jobs and their files
    def stores(self, role: str, ds: dict) -> list[str]:
        """The stores (split names) of one of its `roles`, in the order a task reads them:
        `gallery` (one store every row queries), `pair` (train, evaluated), `tokens` (a pair
        holding every token), `maps` (a pair of token maps and label maps), `grid` (patches)."""
        raise NotImplementedError(f"kind {self.name} makes no {role!r} stores")

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

    def store_arrays(self, ds: dict, split: str, readers: Readers = Readers()) -> list[str]:
        """The arrays a store of this split holds; `readers`: what its tasks ask besides."""
        raise NotImplementedError

    def input_size(self, cfg: dict, ds: dict, split: str) -> int:
        """The side the encoder of a split's extraction is built at (its position table)."""
        return ds["size"]

    def generate_demo(self, ds: dict, out: Path) -> None:
        raise NotImplementedError(f"kind {self.name} has no demo generator")

    def build_index(self, ds: dict, outdir: Path, splits: list[str]) -> None:
        raise NotImplementedError(f"kind {self.name} has no part index")

    def plan(self, cfg: dict, dataset: str, split: str, encoder, device, index_path: Path | None,
             shard: int, readers: Readers = Readers()) -> ExtractionPlan:
        """The plan of one store shard; `readers` (`roles.store_readers`): the arrays and per-block
        summaries its tasks ask for."""
        raise NotImplementedError
