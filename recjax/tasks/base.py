"""What the trainer asks of a task: data, batch schema, model, loss, evaluation, metric selection.

`train/loop.py` runs any `Task` the same way (one loop, one checkpoint/resume path, one results
writer, one progress display) and never branches on the task's or the model's name:

    task = tasks.make_task(config, workdir)          # reads the data, builds the splits
    model, model_cfg, notes = task.build_model()
    params = init_params(model, key, task.init_batch())
    step = train.step.make_step(task.loss_fn(model), tx, key)
    dataset = task.train_dataset()                     # grain, fixed-shape batches, resumable
    evaluate = task.evaluator(model)                   # evaluate(params, split) -> metrics dict

Metrics are a nested dict of floats; `lookup(metrics, "mean.ne")` reads a dotted key, and
`flatten(metrics)` gives the "a/b" scalars written to TensorBoard.
"""
from __future__ import annotations

import abc
import math

import grain


def lookup(metrics: dict, dotted: str) -> float:
  """metrics["a"]["b"] for "a.b"."""
  value = metrics
  for part in dotted.split("."):
    value = value[part]
  return float(value)


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
  """Finite numeric leaves of a nested metrics dict as {"a/b": value} (for TensorBoard: strings,
  lists and NaN, e.g. the NE of a task without positives, are skipped)."""
  out = {}
  for k, v in metrics.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}/"))
    elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
      out[f"{prefix}{k}"] = float(v)
  return out


def is_better(a: float, b: float, higher_is_better: bool) -> bool:
  """a strictly better than b (NaN is never better; anything beats NaN)."""
  if math.isnan(a):
    return False
  if math.isnan(b):
    return True
  return a > b if higher_is_better else a < b


class Task(abc.ABC):
  """One training objective. Subclasses set the class attributes and implement the methods.

  Attributes:
    name: the `config.task` value.
    batch_fields: the training batch's fields (each task's module documents their shapes).
    selection_metric: dotted metrics key that picks the best evaluated epoch.
    higher_is_better: its direction (NE: lower is better).
    epoch_headline / test_headline: dotted keys printed after each evaluation / at the end.
    eval_split: the split evaluated during training ("valid" or "test").
    test_at_each_eval: also evaluate the test split at each evaluation, so the best epoch (selected
      on `eval_split`) reports its test metrics: early stopping without keeping old parameters.
  """
  name: str = ""
  batch_fields: tuple[str, ...] = ()
  selection_metric: str = ""
  higher_is_better: bool = True
  epoch_headline: tuple[str, ...] = ()
  test_headline: tuple[str, ...] = ()
  eval_split: str = "test"
  test_at_each_eval: bool = False

  @abc.abstractmethod
  def build_model(self):
    """-> (flax module, resolved model settings dict, notes for the results file)."""

  @abc.abstractmethod
  def init_batch(self) -> dict:
    """A small batch of the training schema (parameter initialisation)."""

  @abc.abstractmethod
  def train_dataset(self, batch_size: int, num_epochs: int, seed: int,
                    part: tuple[int, int] | None = None) -> grain.MapDataset:
    """Random-access dataset of training batches; item k = batch k % steps_per_epoch of epoch k //
    steps_per_epoch (its iterator state is what checkpoints store). `part` (multi-process runs):
    only the slots [start, stop) of each global batch, this process's (`data/pipeline.local_rows`)."""

  @abc.abstractmethod
  def steps_per_epoch(self, batch_size: int) -> int:
    """Training batches per epoch."""

  @abc.abstractmethod
  def loss_fn(self, model, mesh=None):
    """-> loss(params, batch, key) -> scalar, differentiable in params; `key` is this step's key.
    `mesh`: the run's `jax.sharding.Mesh` when it has more than one device (else None), for a loss
    that places its own collectives (`shard_map`); GSPMD partitions everything else."""

  @abc.abstractmethod
  def evaluator(self, model):
    """-> evaluate(params, split) -> metrics dict of `split` ("valid" | "test")."""

  @abc.abstractmethod
  def dataset_stats(self) -> dict:
    """Sizes of the data and its splits for the results file."""

  def protocol(self) -> str:
    """One sentence on the split protocol for the results file ("" when the config says it all)."""
    return ""

  def flops_extra(self, model_cfg: dict):
    """Optional `scaling.flops.FlopsByShape(extra=...)` hook for work XLA cannot count, or None."""
    del model_cfg
    return None

  def results_extra(self, params) -> dict:
    """Task-specific fields for the results file, given the trained parameters ({} by default)."""
    del params
    return {}

  def examples_in(self, batch: dict) -> int:
    """Examples in a training batch (the unit of FLOPs per example)."""
    return int(next(iter(batch.values())).shape[0])
