"""Tasks: one small class per method family (see `base.Task`)."""

from audiointerp.train.tasks.base import AudioClip, EvalResult, Table, Task, TaskConfig, TaskData
from audiointerp.train.tasks.registry import available_tasks, register_task, task_class

__all__ = [
    "AudioClip",
    "EvalResult",
    "Table",
    "Task",
    "TaskConfig",
    "TaskData",
    "available_tasks",
    "register_task",
    "task_class",
]
