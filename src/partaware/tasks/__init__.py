"""The registry of evaluation tasks: one module per task (see `base.Task` for what each declares).

Adding a task: write `tasks/<name>.py` with a `Task` subclass decorated with `@register`, add
the module to `_MODULES`, and test it (`tests/test_tasks_<name>.py`); the config schema, the
CLI's `--task`, the workflow's rules, the kinds' stores and the bootstrap ask the registry.
A task kept outside the package registers the same way from a module named in
$PARTAWARE_TASKS (comma-separated importable modules, read by every job).
"""
from __future__ import annotations

import os
from importlib import import_module

from ..errors import ConfigError
from .base import Task

_MODULES = ("retrieval", "linear", "attentive", "logistic", "segmentation", "patch_retrieval", "knn",
            "correspondence", "part_discovery", "part_discovery_pixels")
TASKS: dict[str, Task] = {}
_loaded = False


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make the task known by its `name`."""
    TASKS[cls.name] = cls()
    return cls


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _MODULES:
            import_module(f"{__name__}.{module}")
        for module in filter(None, os.environ.get("PARTAWARE_TASKS", "").split(",")):
            try:
                import_module(module.strip())
            except ImportError as err:
                raise ConfigError(f"$PARTAWARE_TASKS: cannot import the task module {module.strip()!r} ({err}); "
                                  "put it on PYTHONPATH or unset the variable") from None


def get(name: str) -> Task:
    """The task called `name`, or one config error listing the known ones."""
    _load()
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; use one of {', '.join(names())} (partaware/tasks/)")
    return TASKS[name]


def names() -> list[str]:
    """Every task, in registration order."""
    _load()
    return list(TASKS)


def evaluated() -> list[str]:
    """The tasks `partaware evaluate` runs (those that compute rows from stores)."""
    return [n for n in names() if TASKS[n].runs_from_stores]


def statistic_of(metric: str) -> str | None:
    """The bootstrap statistic a task declared for a metric name of its rows, or None."""
    _load()
    for task in TASKS.values():
        if metric in task.metrics:
            return task.metrics[metric]
    return None


__all__ = ["TASKS", "Task", "evaluated", "get", "names", "register", "statistic_of"]
