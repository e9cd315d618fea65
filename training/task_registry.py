"""The tasks `aft eval --task` and the rewards know by name: the two toy tasks (training/tasks.py) and
word problems for a real chat model (training/word_problems.py). A module of its own so that
training/tasks.py, which word_problems builds on, stays the leaf of training/."""

from __future__ import annotations

from training.tasks import MultiplicationTask, ReversalTask, Task
from training.word_problems import WordProblemTask

TASKS = ("multiplication", "reversal", "word")
"""The names `make_task` knows (`aft eval --task`): the two toy tasks, and word problems for a real
chat model (training/word_problems.py)."""


def make_task(name: str, *, digits: int | None = None) -> Task:
    """The task called `name` (`digits`: the number multiplied, or the sequence reversed; default the
    task's own; word problems ignore it); ValueError names the known ones."""
    if name == "multiplication":
        return MultiplicationTask(digits or MultiplicationTask.digits)
    if name == "reversal":
        return ReversalTask(digits or ReversalTask.length)
    if name == "word":
        return WordProblemTask()
    raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
