"""train_and_evaluate(config, workdir): data -> model -> checkpointed training -> full-catalogue metrics.

Resuming: run the same command with the same --workdir. The latest checkpoint restores the train
state, the input pipeline's position and the per-epoch history, and the step's randomness is
fold_in(seed key, step), so the resumed run ends exactly where an uninterrupted one would.
"""
from __future__ import annotations

import math
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from recjax.data import pipeline, registry, splits
from recjax.metrics.retrieval import metrics_from_ranks
from recjax.models import build_model, init_params, model_class
from recjax.train import config_check
from recjax.train.checkpoint import Checkpointer
from recjax.train.progress import Progress
from recjax.train.results import git_commit
from recjax.train.state import TrainState, make_optimizer
from recjax.train.step import make_eval_step, make_train_step


class NonFiniteLossError(FloatingPointError):
  pass


def resolve_model_config(config, seqs):
  """config.model resolved (references, then data-dependent settings through the model class's
  `resolve_config` hook, if it has one) -> (model settings dict, notes for the results file)."""
  model_cfg = dict(config.model.copy_and_resolve_references())
  hook = getattr(model_class(model_cfg["name"]), "resolve_config", None)
  return hook(model_cfg, seqs) if hook is not None else (model_cfg, [])


def evaluate(eval_step, params, examples: splits.EvalExamples, batch_size: int, ks) -> dict:
  ranks = []
  for batch, n in pipeline.eval_batches(examples, batch_size):
    ranks.append(np.asarray(eval_step(params, batch))[:n])
  return metrics_from_ranks(np.concatenate(ranks), ks)


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns the run summary.

  A resume checks `config` against the one stored in the checkpoint (train/config_check.py) and
  raises ConfigMismatchError naming the differing keys, unless `allow_config_change`."""
  t_start = time.time()
  os.makedirs(workdir, exist_ok=True)
  seqs = registry.load_dataset(config.data, cache_dir=os.path.join(workdir, "data"))
  logging.info("dataset %s: %d users, %d events, %d item rows, timestamps: %s", seqs.source,
               seqs.num_users, len(seqs.items), seqs.num_items, seqs.has_timestamps)
  max_len, protocol = config.data.max_len, config.data.protocol
  train_ex = splits.train_examples(seqs, max_len, protocol)
  eval_split = "valid" if protocol == "last_two" else "test"
  eval_ex = splits.eval_examples(seqs, max_len, eval_split, protocol)
  test_ex = eval_ex if eval_split == "test" else splits.eval_examples(seqs, max_len, "test", protocol)
  catalogue = seqs.catalogue()

  model_cfg, notes = resolve_model_config(config, seqs)
  model = build_model(model_cfg, seqs.num_items)
  tc = config.train
  tx = make_optimizer(tc)
  base_key = jax.random.key(config.seed, impl=tc.prng_impl)
  init_batch = pipeline.make_train_batch(train_ex, np.arange(min(2, len(train_ex))), 2, 0)
  init_key, step_key = jax.random.split(base_key)   # init and per-step keys never overlap
  params = init_params(model, init_key, init_batch)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  num_params = int(sum(x.size for x in jax.tree.leaves(params)))

  steps_per_epoch = pipeline.steps_per_epoch(train_ex, tc.batch_size)
  total_steps = steps_per_epoch * tc.num_epochs
  if tc.get("max_steps", -1) > 0:
    total_steps = min(total_steps, tc.max_steps)
  dataset = pipeline.train_dataset(train_ex, batch_size=tc.batch_size, num_epochs=tc.num_epochs,
                                   seed=config.seed, token_bucket=config.loss.token_bucket)
  it = pipeline.TrainIterator(dataset)

  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
  history, wall_before, start_step, segments, config_changes = [], 0.0, 0, [], {}
  latest = ckpt.latest_step()
  if latest is not None:
    # Checked before the state is restored: a changed model would fail there with a shape error.
    config_changes = config_check.check_resume(ckpt.restore_meta(latest).get("config"), config,
                                               allow_change=allow_config_change,
                                               where=f"the checkpoint at step {latest} in {workdir}")
    state, meta = ckpt.restore(latest, state)
    it.set_state(meta["loader_state"])
    history, wall_before, start_step = meta["history"], meta["wall_clock_s"], meta["step"]
    segments = meta.get("segments", [])
    logging.info("resumed from %s at step %d", ckpt, start_step)
    print(f"resumed from checkpoint at step {start_step}", flush=True)

  # Each (re)start is a segment: a run resumed under newer code says so in its results.
  segments.append({"start_step": start_step, "commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
  if config_changes:   # what this segment runs differently from the checkpoint's config
    segments[-1]["config_changes"] = {k: list(v) for k, v in config_changes.items()}
  train_step = make_train_step(model, tx, config.loss, catalogue, step_key)
  eval_step = make_eval_step(model, catalogue, seqs.num_items, config.eval.exclude_history,
                             config.eval.get("item_chunk", 4096))
  progress = Progress(workdir, total_steps, start_step)
  ks = tuple(config.eval.ks)
  eval_every = tc.eval_every_epochs
  t_resume = time.time()

  def wall():
    return wall_before + (time.time() - t_resume)

  def meta(step):
    return {"step": step, "loader_state": it.get_state(), "history": history, "wall_clock_s": wall(),
            "segments": segments, "config": config_check.config_record(config)}

  step = start_step
  losses_since_log = []
  while step < total_steps:
    batch = next(it)
    state, loss = train_step(state, batch)
    step += 1
    losses_since_log.append(loss)
    epoch_done = step % steps_per_epoch == 0
    if step % tc.log_every_steps == 0 or step == total_steps or epoch_done:
      mean_loss = float(jnp.mean(jnp.stack(losses_since_log)))
      losses_since_log = []
      if not math.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"loss became {mean_loss} by step {step} (epoch {step // steps_per_epoch}); the last good "
            f"checkpoint in {workdir}/checkpoints is kept. Lower train.learning_rate or check the data.")
      progress.step(step, mean_loss, step // steps_per_epoch)
    epoch = step // steps_per_epoch
    if epoch_done and eval_every > 0 and (epoch % eval_every == 0 or step == total_steps):
      m = evaluate(eval_step, state.params, eval_ex, config.eval.batch_size, ks)
      history.append({"epoch": epoch, "step": step, "split": eval_split, **m})
      progress.scalars(step, {f"{eval_split}/{k}": v for k, v in m.items()})
      print(f"epoch {epoch} {eval_split}: " + " ".join(f"{k} {v:.4f}" for k, v in m.items()
                                                      if k in ("hr@10", "ndcg@10", "hr@200", "mrr")), flush=True)
    if step % tc.checkpoint_every_steps == 0 or epoch_done or step == total_steps:
      ckpt.save(step, state, meta(step))

  test = evaluate(eval_step, state.params, test_ex, config.eval.batch_size, ks)
  progress.scalars(step, {f"final_test/{k}": v for k, v in test.items()})
  progress.close()
  ckpt.close()
  summary = {
      "metrics": {"test": test, "per_epoch": history},
      "num_params": num_params,
      "steps": step,
      "steps_per_epoch": steps_per_epoch,
      "epochs": step / steps_per_epoch,
      "train_wall_clock_s": wall(),
      "run_wall_clock_s_this_process": time.time() - t_start,
      "dataset_stats": {"users": seqs.num_users, "events": int(len(seqs.items)), "item_rows": seqs.num_items,
                        "catalogue": int(len(catalogue)), "train_examples": len(train_ex),
                        "eval_examples": len(eval_ex), "test_examples": len(test_ex),
                        "has_timestamps": seqs.has_timestamps, "source": seqs.source},
      "model_config": model_cfg,
      "notes": notes,
      "segments": segments,
  }
  if history:
    key = "ndcg@10"
    best = max(history, key=lambda h: h[key])
    summary["metrics"]["best_epoch"] = {
        "selected_by": f"{eval_split} {key}",
        "caveat": ("selected on the test set, as the reference code's per-epoch logging allows: "
                   "optimistic") if eval_split == "test" else "selected on validation",
        **best}
  return summary
