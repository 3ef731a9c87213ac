"""Tasks: one module per training objective (its batch schema, loss and evaluation).

`config.task` names the task; the trainer (`train/loop.py`) asks it for everything task-specific.
A new task is a file here plus a registry line: no edit to the loop.
"""
from __future__ import annotations


def task_class(name: str):
  """The Task class registered as `name`."""
  # Imported lazily: a retrieval run does not import the ranking code, nor the reverse.
  if name == "retrieval":
    from recjax.tasks.retrieval import RetrievalTask  # pylint: disable=import-outside-toplevel
    return RetrievalTask
  if name == "ranking":
    from recjax.tasks.ranking import RankingTask  # pylint: disable=import-outside-toplevel
    return RankingTask
  if name == "generative":
    from recjax.tasks.generative import GenerativeTask  # pylint: disable=import-outside-toplevel
    return GenerativeTask
  raise ValueError(f"unknown config.task {name!r}; known: {list(TASKS)}")


TASKS = ("retrieval", "ranking", "generative")


def make_task(config, workdir: str):
  """The task `config.task` (default "retrieval") with its data read and split for `config`."""
  return task_class(config.get("task", "retrieval"))(config, workdir)
