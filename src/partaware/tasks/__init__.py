"""The evaluation-task registry (minimal copy of the registry's; its own version wins on merge):
one module per task, listed in `_MODULES`, each registering a `base.Task` subclass."""
from __future__ import annotations

from importlib import import_module

from .base import Task

_MODULES = ("knn",)
TASKS: dict[str, Task] = {}


def register(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls()
    return cls


def _load() -> None:
    for module in _MODULES:
        import_module(f"{__name__}.{module}")


def get(name: str) -> Task:
    """The task called `name`, or one config error listing the known ones."""
    from ..config import ConfigError

    if not TASKS:
        _load()
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; use one of {', '.join(names())} (partaware/tasks/)")
    return TASKS[name]


def names() -> list[str]:
    if not TASKS:
        _load()
    return sorted(TASKS)
