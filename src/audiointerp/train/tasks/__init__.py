"""Tasks: one small class per method family (see `base.Task`)."""

from audiointerp.evaluation.results import AudioClip, EvalResult, Table
from audiointerp.train.tasks.base import Task, TaskConfig, TaskData, available_tasks, register_task, task_class

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
