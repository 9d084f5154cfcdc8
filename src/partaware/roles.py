"""Where the two registries meet: a kind offers roles (`Kind.roles`, the kinds of store it can
build), a task reads one role (`Task.role`). Neither imports the other; this module, above both
and below `config`, joins them by those role names.

Every question that needs a kind and its tasks together is answered here: which tasks a kind
feeds, which stores a dataset's configured tasks need, which tasks read a store (and so which
arrays and per-block summaries it holds).
"""
from __future__ import annotations

from . import blocks, kinds, tasks
from .kinds.base import Kind, Readers


def tasks_of(kind: Kind) -> tuple[str, ...]:
    """The evaluation tasks this kind feeds: those reading a role it offers."""
    return tuple(n for n in tasks.names() if tasks.get(n).role in kind.roles)


def splits(kind: Kind, ds: dict, cfg: dict) -> list[str]:
    """The stores (splits) the dataset's configured tasks need, each once."""
    return list(dict.fromkeys(s for t in ds["tasks"] for s in tasks.get(t).splits(kind, ds, cfg)))


def eval_names(kind: Kind, ds: dict, cfg: dict) -> list[str]:
    """The result files its tasks write (results/evals/<dataset>/<model>/<name>.csv)."""
    return [name for t in ds["tasks"] for name in tasks.get(t).outputs(ds, cfg)]


def task_splits(kind: Kind, ds: dict, task: str, cfg: dict | None = None) -> list[str]:
    """The stores one task reads, in the order the evaluation takes them."""
    return tasks.get(task).splits(kind, ds, cfg)


def readers(kind: Kind, ds: dict, split: str) -> list:
    """The dataset's tasks that read a store of this split."""
    return [t for t in map(tasks.get, ds["tasks"]) if split in t.splits(kind, ds, None)]


def carries_block_summaries(kind: Kind, ds: dict, split: str) -> bool:
    """Whether a store of this split holds per-block summaries (`extract.blocks_summary`): where a
    task that evaluates them (`Task.block_summaries`) reads it."""
    return any(t.block_summaries for t in readers(kind, ds, split))


def blocks_carried(cfg: dict, ds: dict, split: str) -> str | list[int]:
    """`blocks.setting(cfg)` for a store whose readers evaluate per-block summaries, else []."""
    kind = kinds.of(ds)
    return blocks.setting(cfg) if carries_block_summaries(kind, ds, split) else []


def store_readers(cfg: dict | None, ds: dict, split: str) -> Readers:
    """What the tasks reading a store ask of it (`kinds.base.Readers`), for `Kind.store_arrays`
    and `Kind.plan`; `cfg` None: the arrays only."""
    kind = kinds.of(ds)
    arrays = tuple(a for t in readers(kind, ds, split) for a in t.arrays)
    return Readers(arrays=arrays, blocks=blocks_carried(cfg, ds, split) if cfg is not None else [])


def store_arrays(ds: dict, split: str) -> list[str]:
    """The arrays a store of this split holds (part of its signature)."""
    return kinds.of(ds).store_arrays(ds, split, store_readers(None, ds, split))
