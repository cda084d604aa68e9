"""Tasks: what is learned, forgotten and scored (the arithmetic testbed; text corpora). See `base.Task`."""

from __future__ import annotations

import argparse

from unlearn.tasks.arithmetic_task import ArithmeticTask
from unlearn.tasks.base import Task
from unlearn.tasks.text import TextTask

TASKS: dict[str, type[Task]] = {"arithmetic": ArithmeticTask, "text": TextTask}
DEFAULT_TASK = "arithmetic"


def add_task_args(p: argparse.ArgumentParser, stage: str, argv=None) -> type[Task]:
    """Add --task and the chosen task's flags for `stage` to `p`; returns the task class."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--task", default=DEFAULT_TASK)
    known, _ = first.parse_known_args(argv)
    if known.task not in TASKS:
        p.error(f"--task {known.task!r}: expected one of {', '.join(TASKS)}")
    p.add_argument("--task", default=DEFAULT_TASK, choices=list(TASKS),
                   help="arithmetic (the paper's synthetic setting, built in) or text (your own model and corpora)")
    cls = TASKS[known.task]
    cls.add_args(p, stage)
    return cls
