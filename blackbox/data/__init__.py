"""Datasets, task definitions (templates, label words), few-shot sampling and metrics."""

from blackbox.data.datasets import Example, load_split
from blackbox.data.tasks import TASKS, Task, get_task

__all__ = ["TASKS", "Example", "Task", "get_task", "load_split"]
