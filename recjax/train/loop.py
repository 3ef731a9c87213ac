"""train_and_evaluate(config, workdir): task data -> model -> checkpointed training -> the task's metrics.

One loop for every task (`recjax/tasks/`): the task reads and splits the data, builds the model,
owns the batch schema, the loss and the evaluation, and says which metric selects the best epoch;
the loop trains, evaluates, checkpoints, logs and summarises without knowing which task it runs.

Resuming: run the same command with the same --workdir. The latest checkpoint restores the train
state, the input pipeline's position and the per-epoch history, and the step's randomness is
fold_in(seed key, step), so the resumed run ends exactly where an uninterrupted one would.

MFU (`train.count_flops`): the step's FLOPs are counted once per batch shape (XLA's cost analysis of
the compiled step, `scaling.flops.FlopsByShape`: one extra compile per shape, cached), and the
steps between two log points (both after a host sync) give the achieved FLOP/s; MFU against a
matmul peak measured on this device (and the datasheet peak where one exists) goes to TensorBoard
at each log point and into the summary. The summary's `train_flops` sums the counted FLOPs of every
training step (each step at its own batch shape), with the examples and steps it covers. A model on
the C++ attention kernel (`model.attention_impl`) is counted as the same step on the XLA attention
path, which XLA can see into: the counts do not depend on which path trained the run.

Mesh (`config.mesh`, train/mesh.py): on more than one device the fast paths that cannot partition
are turned off before the task builds its model and loss (`resolve_fast_paths`, noted in the
results), the state is placed by the sharding rules (tables row-sharded, dense replicated or FSDP),
a checkpoint restores straight onto this run's mesh whatever mesh wrote it, and each global batch
is split over `data`. The one-device mesh (the default) skips all of it: the same step as before.
Evaluation is not sharded: on one process it runs on the parameters where they lie; under
`jax.distributed` each process all-gathers them first (`mesh.gather_for_evaluation`) and evaluates
the whole split itself (the same numbers everywhere; only process 0 prints, logs and writes results).
Each process's pipeline builds only its rows of every global batch (`mesh.process_rows`).
"""
from __future__ import annotations

import math
import os
import time

from absl import logging
import jax
import jax.numpy as jnp

from recjax import cpu_allocator
from recjax import tasks as tasks_lib
from recjax.models import init_params
from recjax.tasks.base import flatten, is_better, lookup
from recjax.tasks.retrieval import evaluate, make_eval_step, resolve_model_config  # noqa: F401  (re-exports)
from recjax.train import config_check
from recjax.train import mesh as mesh_lib
from recjax.train.checkpoint import Checkpointer
from recjax.train.progress import Progress
from recjax.train.results import git_commit
from recjax.train.state import TrainState, make_optimizer
from recjax.train.step import make_step
from recjax.data import pipeline


class NonFiniteLossError(FloatingPointError):
  pass


class _FlopMeter:
  """FLOPs per step by batch shape and MFU between log points (see the module docstring)."""

  def __init__(self, step_fn, task, model_cfg: dict):
    from recjax.scaling import flops as flops_lib  # pylint: disable=import-outside-toplevel
    self._count = flops_lib.FlopsByShape(step_fn, extra=task.flops_extra(model_cfg), examples=task.examples_in)
    self._meter = None
    self._pending = 0.0          # FLOPs of the steps since the last log point
    self._steps = 0
    self._t_last = None
    # The whole run's count (`train_flops`): carried through checkpoints, so a resumed run counts all steps.
    self.train = {"flops": 0.0, "examples": 0, "steps": 0}

  def before_step(self, state, batch) -> None:
    counted = self._count(state, batch)   # cached per shape: no compile after the first
    self._pending += counted.total
    self._steps += 1
    self.train = {"flops": self.train["flops"] + counted.total, "examples": self.train["examples"] + counted.examples,
                  "steps": self.train["steps"] + 1}

  def at_log_point(self) -> dict:
    """After a host sync: the interval's MFU scalars ({} for the first interval, which compiles)."""
    seconds = time.perf_counter() - self._t_last if self._t_last is not None else 0.0
    out = {}
    if seconds > 0 and self._steps:
      per_step = self._pending / self._steps
      if self._meter is None:   # the peak is measured once, outside the timed intervals
        from recjax.scaling import mfu as mfu_lib  # pylint: disable=import-outside-toplevel
        self._meter = mfu_lib.MfuMeter.for_current_device(per_step)
      self._meter.update(self._steps, seconds, per_step)
      achieved = per_step * self._steps / seconds
      out = {"perf/flops_per_step": per_step, "perf/achieved_flops_per_s": achieved}
      for name, peak in (("mfu_measured", self._meter.measured_peak), ("mfu_datasheet", self._meter.datasheet_peak)):
        if peak:
          out[f"perf/{name}"] = achieved / (self._meter.num_devices * peak)
    self._pending, self._steps, self._t_last = 0.0, 0, time.perf_counter()
    return out

  def summary(self) -> dict:
    """{"flops": one StepFlops summary per batch shape seen, "mfu": MfuMeter report or None}."""
    return {"flops": [c.summary() for c in self._count.counted()],
            "train_flops": {**self.train, "per_example": self.train["flops"] / max(self.train["examples"], 1)},
            "mfu": self._meter.report() if self._meter is not None and self._meter.steps else None}


def _without_unpartitionable_paths(config, spec):
  """A copy of `config` with `mesh_lib.resolve_fast_paths` applied (loss.impl, model.attention_tiling,
  model.attention_impl)
  -> (copy, notes). The caller's config, the one checkpoints record and resumes compare, is unchanged."""
  loss_cfg, model_cfg, notes = mesh_lib.resolve_fast_paths(config.loss, dict(config.model), spec)
  run_config = config.copy_and_resolve_references()
  with run_config.unlocked():
    run_config.loss = loss_cfg
    if "attention_tiling" in run_config.model:   # rankers have no such setting
      run_config.model.attention_tiling = "off" if model_cfg["attention_tiling"] is False else model_cfg["attention_tiling"]
    if "attention_impl" in model_cfg:   # set here where the config left the model's default
      run_config.model.attention_impl = model_cfg["attention_impl"]
  return run_config, notes


def flop_counting_step(train_step, model, task, mesh, tx, step_key):
  """The step whose XLA cost the FLOP meter reads: `train_step` itself, or, when the model runs the C++
  attention kernel (a custom call XLA cannot see into), the same step with attention on the XLA path.
  Counting only lowers and compiles it, never runs it; the counts then match runs made without the kernel."""
  if getattr(model, "attention_impl", "xla") == "xla" or mesh is not None:   # a mesh already forces "xla"
    return train_step
  return make_step(task.loss_fn(model.clone(attention_impl="xla"), mesh=mesh), tx, step_key)


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the run summary.

  A resume checks `config` against the one stored in the checkpoint (train/config_check.py) and
  raises ConfigMismatchError naming the differing keys, unless `allow_config_change`."""
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  tc = config.train
  spec = mesh_lib.mesh_spec(config.get("mesh") or {})
  mesh = None
  run_config, mesh_notes = config, []
  if spec.num_devices > 1:
    mesh_lib.check_batch(spec, tc.batch_size)
    mesh = mesh_lib.make_mesh(spec)
    run_config, mesh_notes = _without_unpartitionable_paths(config, spec)
  task = tasks_lib.make_task(run_config, workdir)
  model, model_cfg, notes = task.build_model()
  notes = list(notes) + mesh_notes
  tx = make_optimizer(tc)
  base_key = jax.random.key(config.seed, impl=tc.prng_impl)
  init_key, step_key = jax.random.split(base_key)   # init and per-step keys never overlap
  params = init_params(model, init_key, task.init_batch())
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  num_params = int(sum(x.size for x in jax.tree.leaves(params)))
  state_sh = batch_sh = None
  if mesh is not None:
    state_sh = mesh_lib.tree_shardings(state, mesh, spec)
    state = mesh_lib.place(state, state_sh)
    batch_sh = mesh_lib.batch_shardings(task.init_batch(), mesh)   # the rule reads names and ranks only
    for t in mesh_lib.unsharded_tables(state.params, spec):
      notes.append(f"mesh {spec.shape}: table {t} replicated (no mesh axis divides its rows)")

  steps_per_epoch = task.steps_per_epoch(tc.batch_size)
  total_steps = steps_per_epoch * tc.num_epochs
  if tc.get("max_steps", -1) > 0:
    total_steps = min(total_steps, tc.max_steps)
  part = mesh_lib.process_rows(batch_sh, tc.batch_size) if mesh is not None else None
  if part is not None:
    print(f"process {jax.process_index()}/{jax.process_count()}: reads rows [{part[0]}, {part[1]}) "
          f"of each batch of {tc.batch_size}", flush=True)
  it = pipeline.TrainIterator(task.train_dataset(tc.batch_size, tc.num_epochs, config.seed, part=part))

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  history, wall_before, start_step, segments, config_changes = [], 0.0, 0, [], {}
  restored_train_flops = None
  latest = ckpt.latest_step()
  if latest is not None:
    # Checked before the state is restored: a changed model would fail there with a shape error.
    config_changes = config_check.check_resume(ckpt.restore_meta(latest).get("config"), config,
                                               allow_change=allow_config_change,
                                               where=f"the checkpoint at step {latest} in {workdir}")
    state, meta = ckpt.restore(latest, state, shardings=state_sh)   # onto this run's mesh
    it.set_state(meta["loader_state"])
    history, wall_before, start_step = meta["history"], meta["wall_clock_s"], meta["step"]
    segments = meta.get("segments", [])
    restored_train_flops = meta.get("train_flops")
    logging.info("resumed from %s at step %d", ckpt, start_step)
    if jax.process_index() == 0:
      print(f"resumed from checkpoint at step {start_step}", flush=True)

  # Each (re)start is a segment: a run resumed under newer code says so in its results.
  segments.append({"start_step": start_step, "commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
  if config_changes:   # what this segment runs differently from the checkpoint's config
    segments[-1]["config_changes"] = {k: list(v) for k, v in config_changes.items()}
  # An allowed change of the evaluation protocol (e.g. `eval.exclude_history`: a finished run
  # re-evaluated under another protocol) makes the carried per-epoch history incomparable with
  # what this segment measures: kept aside, never used to select the reported epoch.
  stale_history = []
  if any(config_check.changes_evaluation(k) for k in config_changes) and history:
    stale_history, history = history, []
  train_step = make_step(task.loss_fn(model, mesh=mesh), tx, step_key)
  # One device: the batch copied in before the call, so the step runs inline and frees its scratch
  # before it returns where tune() made dispatch synchronous (cpu_allocator.py); else as it is.
  place_batch = cpu_allocator.on_device
  if mesh is not None:
    train_step = mesh_lib.make_sharded_train_step(train_step, mesh, state_sh, batch_sh)
    # Several processes: each holds its rows only (`part`), assembled into the global batch here.
    place_batch = lambda b: mesh_lib.place_batch(b, batch_sh, tc.batch_size if part else None)   # noqa: E731
  evaluate_params = task.evaluator(model)

  def evaluate_split(params, split):
    return evaluate_params(mesh_lib.gather_for_evaluation(params), split)

  flop_meter = None
  if tc.get("count_flops", True):
    flop_meter = _FlopMeter(flop_counting_step(train_step, model, task, mesh, tx, step_key), task, model_cfg)
  if flop_meter is not None and latest is not None:
    # A checkpoint without the count (older code, or counting off) leaves steps < the run's steps.
    flop_meter.train = dict(restored_train_flops or flop_meter.train)
  progress = Progress(workdir, total_steps, start_step, quiet=jax.process_index() != 0)
  eval_every = tc.eval_every_epochs
  eval_split = task.eval_split
  t_resume = time.time()

  def wall():
    return wall_before + (time.time() - t_resume)

  def meta(step):
    return {"step": step, "loader_state": it.get_state(), "history": history, "wall_clock_s": wall(),
            "segments": segments, "config": config_check.config_record(config),
            **({"train_flops": flop_meter.train} if flop_meter is not None else {})}

  def headline(metrics, keys):
    return " ".join(f"{k} {lookup(metrics, k):.4f}" for k in keys)

  step = start_step
  losses_since_log = []
  while step < total_steps:
    batch = place_batch(next(it))
    if flop_meter is not None:
      flop_meter.before_step(state, batch)   # before the step: its state buffers are donated
    state, loss = train_step(state, batch)
    step += 1
    losses_since_log.append(loss)
    epoch_done = step % steps_per_epoch == 0
    if step % tc.log_every_steps == 0 or step == total_steps or epoch_done:
      mean_loss = float(jnp.mean(jnp.stack(losses_since_log)))   # the host sync MFU timing relies on
      losses_since_log = []
      if not math.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"loss became {mean_loss} by step {step} (epoch {step // steps_per_epoch}); the last good "
            f"checkpoint in {workdir}/checkpoints is kept. Lower train.learning_rate or check the data.")
      progress.step(step, mean_loss, step // steps_per_epoch)
      if flop_meter is not None:
        progress.scalars(step, flop_meter.at_log_point())
    epoch = step // steps_per_epoch
    if epoch_done and eval_every > 0 and (epoch % eval_every == 0 or step == total_steps):
      m = evaluate_split(state.params, eval_split)
      entry = {"epoch": epoch, "step": step, "split": eval_split, **m}
      progress.scalars(step, flatten(m, f"{eval_split}/"))
      if task.test_at_each_eval and eval_split != "test":
        entry["test"] = evaluate_split(state.params, "test")
        progress.scalars(step, flatten(entry["test"], "test/"))
      history.append(entry)
      if jax.process_index() == 0:
        print(f"epoch {epoch} {eval_split}: {headline(m, task.epoch_headline)}", flush=True)
    if step % tc.checkpoint_every_steps == 0 or epoch_done or step == total_steps:
      ckpt.save(step, state, meta(step))

  test = evaluate_split(state.params, "test")
  progress.scalars(step, flatten(test, "final_test/"))
  progress.close()
  ckpt.close()
  summary = {
      "task": task.name,
      "metrics": {"test": test, "per_epoch": history},
      "num_params": num_params,
      "steps": step,
      "steps_per_epoch": steps_per_epoch,
      "epochs": step / steps_per_epoch,
      "train_wall_clock_s": wall(),
      "run_wall_clock_s_this_process": time.time() - t_start,
      "dataset_stats": task.dataset_stats(),
      "model_config": model_cfg,
      "notes": notes,
      "segments": segments,
      "headline": {"epoch": list(task.epoch_headline), "test": list(task.test_headline)},
  }
  if task.protocol():
    summary["protocol"] = task.protocol()
  if stale_history:
    summary["metrics"]["per_epoch_before_eval_change"] = stale_history
    summary["notes"] = list(summary["notes"] or []) + [
        "the evaluation protocol changed on resume (segments' config_changes): the per-epoch history "
        "measured before it is under metrics.per_epoch_before_eval_change and selects nothing"]
  summary.update(task.results_extra(mesh_lib.gather_for_evaluation(state.params)))
  if flop_meter is not None:
    summary.update(flop_meter.summary())
  if history:
    key = task.selection_metric
    best = history[0]
    for h in history[1:]:
      if is_better(lookup(h, key), lookup(best, key), task.higher_is_better):
        best = h
    summary["metrics"]["best_epoch"] = {
        "selected_by": f"{eval_split} {key}", "higher_is_better": task.higher_is_better,
        "caveat": ("selected on the test set, as the reference code's per-epoch logging allows: "
                   "optimistic") if eval_split == "test" else "selected on validation",
        **best}
    if "test" in best:   # early stopping: the test split at the epoch selected on validation
      summary["metrics"]["final_test"] = test
      summary["metrics"]["test"] = best["test"]
      summary["metrics"]["test_is"] = f"epoch {best['epoch']} (selected by {eval_split} {key}); final_test: step {step}"
  return summary
