"""Tasks by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from audiointerp.errors import ConfigError

if TYPE_CHECKING:
    from audiointerp.train.tasks.base import Task

_TASKS: dict[str, type["Task"]] = {}


def register_task(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task available under `cls.name`."""
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is registered twice")
    _TASKS[cls.name] = cls
    return cls


def _ensure_tasks_imported() -> None:
    import audiointerp.train.tasks.ae_finetune  # noqa: F401
    import audiointerp.train.tasks.classifier  # noqa: F401
    import audiointerp.train.tasks.concepts  # noqa: F401
    import audiointerp.train.tasks.flow  # noqa: F401
    import audiointerp.train.tasks.semantic  # noqa: F401


def available_tasks() -> list[str]:
    _ensure_tasks_imported()
    return sorted(_TASKS)


def task_class(name: str) -> type["Task"]:
    from audiointerp.configs import closest

    _ensure_tasks_imported()
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}{closest(name, _TASKS)}; available: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]
