"""The evaluation-task registry: one module per task, listed in `_MODULES`."""
from __future__ import annotations

import importlib

from .base import Task

_MODULES = ("correspondence",)
_TASKS: dict[str, Task] = {}


def register(cls):
    """Class decorator: register one instance of a Task subclass under its `name`."""
    _TASKS[cls.name] = cls()
    return cls


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def get(name: str) -> Task:
    _load()
    if name not in _TASKS:
        from ..config import ConfigError

        raise ConfigError(f"task {name!r} is unknown; known tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def names() -> list[str]:
    _load()
    return sorted(_TASKS)
