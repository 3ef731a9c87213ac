"""Multi-feedback ranking: multi-task BCE on time-split candidates, NE / AUC / GAUC per task.

Data: `config.data` through the usual readers; the split is `recjax.data.ranking` with the
settings of `config.ranking` (`RankingSplit` fields: per-user last_k or a global time cut,
requests of `request_size` candidates with the <= `history_len` events before them). Tasks:
"kuairand" (the 8 feedbacks of the action bitmask; KuaiRand logs and synthetic worlds) or
"rating" (MovieLens rating >= 4, rating = 5; needs `data.with_timestamps`). With
`ranking.context` the dataset's user and item feature tables are inputs (KuaiRand / synthetic:
user_features and video_features_basic; MovieLens: demographics, genres and year).

Batch schema (N requests, H = history_len, C = request_size, T tasks, Fu / Fi features; the
fields of `recjax/data/ranking.py`, padded requests have hist_lengths 0 and cand_mask 0):
  hist_ids, hist_actions, hist_watch, hist_tab, hist_times [N, H] int32;  hist_lengths [N] int32
  hist_feats [N, H, Fi] int32;  user_feats [N, Fu] int32;  request_times [N] int32
  cand_ids, cand_tab [N, C] int32;  cand_feats [N, C, Fi] int32;  cand_mask [N, C] float32
  cand_labels [N, C, T] int8 and cand_watch_ratio [N, C] float32: targets, read by the loss only

Stochastic length (`ranking.sl_alpha` > 0, ragged layout; `data/stochastic_length.py`): each epoch,
training histories longer than history_len^(α/2) are subsampled to that length with probability
1 − history_len^α / n² (`ranking.sl_select`: a random subset in order, or the newest), and
requests of similar kept length share a batch, so a batch is only as wide as its kept histories.
Validation and test histories stay whole.

Loss: `losses.multitask_bce_loss` over the real candidates, per-task weights `ranking.task_weights`
(all 1 by default), plus `ranking.watch_weight` x the watch-ratio MSE when > 0.
Evaluation: sigmoid of the logits of every real candidate -> `metrics.ranking.multitask_metrics`
(per task and averaged; GAUC grouped by user); with the watch head, its MSE, the MSE of the
split's mean and R² under `watch_ratio`; on synthetic worlds also the oracle's NE / AUC on
the same candidates (`synthetic.load_oracle`) and the share of the gap closed; on long-range worlds
(planted dormant topics, `WorldConfig.dormant_*`) the same metrics again under `planted` on the
candidates that are planted return-phase events alone (`planted.candidates`: how many), where the
signal beyond the newest events lives (configs/long_world.py). The best epoch is
the lowest mean NE on the validation split (the test split when there is none); the test split is
evaluated at every evaluation too, and `metrics.test` is the test of the selected epoch (early
stopping), `metrics.final_test` that of the last step.
"""
from __future__ import annotations

import dataclasses
import functools
import os

from absl import logging
import jax
import numpy as np

from recjax import compile_options, cpu_allocator, losses
from recjax.data import pipeline, registry
from recjax.data import ranking as rk
from recjax.data import stochastic_length
from recjax.metrics.ranking import multitask_metrics
from recjax.models import build_model
from recjax.tasks.base import Task

_SL_STREAM = 0x51   # keeps stochastic-length draws apart from other users of (seed, epoch) generators
BATCH_FIELDS = ("hist_ids", "hist_actions", "hist_watch", "hist_tab", "hist_times", "hist_lengths",
                "hist_feats", "user_feats", "request_times", "cand_ids", "cand_tab", "cand_feats",
                "cand_mask", "cand_labels", "cand_watch_ratio")


def split_settings(ranking_cfg) -> rk.RankingSplit:
  """config.ranking -> RankingSplit (its fields only; the loss keys are the task's)."""
  names = {f.name for f in dataclasses.fields(rk.RankingSplit)}
  return rk.RankingSplit(**{k: v for k, v in ranking_cfg.items() if k in names})


def make_batch(examples: rk.RankingExamples, rows: np.ndarray, batch_size: int,
               keep: list[np.ndarray] | None = None) -> dict:
  """The requests at `rows`, padded with empty requests to `batch_size` (schema above). With the
  ragged history layout the history width is the bucket of the rows' longest history; `keep`: only
  those history positions per row (a stochastic-length draw, `RankingExamples.batch`)."""
  rows = np.asarray(rows, np.int64)
  fields = examples.batch(rows, keep=keep)
  out = {}
  for name in BATCH_FIELDS:
    arr = fields[name]
    padded = np.zeros((batch_size,) + arr.shape[1:], arr.dtype)
    padded[:len(rows)] = arr
    out[name] = padded
  return out


def _context(config, seqs, workdir) -> rk.ContextTables | None:
  """The feature tables of `config.data`'s dataset, or None when `ranking.context` is off."""
  if not config.ranking.context:
    return None
  kind = config.data.kind
  if kind == "synthetic":
    from recjax.data import synthetic  # pylint: disable=import-outside-toplevel
    variant = synthetic.WorldConfig(**registry._plain(config.data.world)).variant  # pylint: disable=protected-access
    return rk.kuairand_context(_world_dir(config, workdir), variant, seqs)
  if kind == "kuairand":
    return rk.kuairand_context(registry.resolve_path(config.data.data_dir), config.data.variant, seqs)
  if kind == "movielens":
    return rk.movielens_context(registry.resolve_path(config.data.data_dir), config.data.name, seqs)
  raise ValueError(f"ranking.context=True: data.kind={kind!r} has no feature tables (synthetic, kuairand, "
                   "movielens have); set --config.ranking.context=False")


def _world_dir(config, workdir: str) -> str:
  """The synthetic world's folder (generated if the sequences came from an array_record cache)."""
  from recjax.data import synthetic  # pylint: disable=import-outside-toplevel
  out = registry.synthetic_dir(config.data, os.path.join(workdir, "data"))
  if not os.path.exists(os.path.join(out, "world.json")):
    synthetic.generate_world(synthetic.WorldConfig(**registry._plain(config.data.world)), out)  # pylint: disable=protected-access
  return out


def watch_ratio_metrics(pred_N: np.ndarray, target_N: np.ndarray) -> dict:
  """The regression head's MSE, the MSE of the split's own mean (the best constant) and R² = 1 −
  their ratio (> 0: the head knows more than the average)."""
  pred_N, target_N = np.asarray(pred_N, np.float64), np.asarray(target_N, np.float64)
  mse = float(np.mean((pred_N - target_N) ** 2))
  of_mean = float(np.var(target_N))
  return {"mse": mse, "mse_of_mean": of_mean, "r2": 1.0 - mse / of_mean if of_mean > 0 else float("nan")}


class RankingTask(Task):
  """Multi-task ranking of time-split candidates (module docstring)."""
  name = "ranking"
  batch_fields = BATCH_FIELDS
  selection_metric = "mean.ne"
  higher_is_better = False
  epoch_headline = ("mean.ne", "mean.auc", "mean.gauc")
  test_at_each_eval = True

  def __init__(self, config, workdir: str):
    self.config = config
    rc = config.ranking
    self.split_cfg = split_settings(rc)
    seqs = registry.load_dataset(config.data, cache_dir=os.path.join(workdir, "data"))
    logging.info("dataset %s: %d users, %d events", seqs.source, seqs.num_users, len(seqs.items))
    self.seqs = seqs
    self.context = _context(config, seqs, workdir)
    self.examples = {s: rk.ranking_examples(seqs, self.split_cfg, s, self.context) for s in rk.SPLITS}
    if len(self.examples["train"]) == 0 or len(self.examples["test"]) == 0:
      raise ValueError(f"{seqs.source}: the ranking protocol leaves {len(self.examples['train'])} train and "
                       f"{len(self.examples['test'])} test requests ({self.split_cfg.describe()})")
    self.eval_split = "valid" if len(self.examples["valid"]) else "test"
    self.task_names = self.split_cfg.task_names
    weights = tuple(rc.task_weights) or (1.0,) * len(self.task_names)
    if len(weights) != len(self.task_names):
      raise ValueError(f"ranking.task_weights has {len(weights)} entries, the tasks {self.task_names} "
                       f"need {len(self.task_names)}")
    self.task_weights = np.asarray(weights, np.float32)
    self.watch_weight = float(rc.watch_weight)
    self.stochastic_length = stochastic_length.from_config(rc)   # None: off (training histories whole)
    self.oracle = None
    self.planted = None   # long-range worlds: {split: bool [N, C]} the candidates of the return phase
    if config.data.kind == "synthetic":
      from recjax.data import synthetic  # pylint: disable=import-outside-toplevel
      per_event = synthetic.load_oracle(_world_dir(config, workdir), seqs, config.data.get("logs", "standard"))
      self.oracle = {s: rk.candidate_values(per_event, ex) for s, ex in self.examples.items()}
      if "planted_phase" in per_event:
        returned = per_event["planted_phase"] == synthetic.PLANTED_RETURN
        self.planted = {s: rk.candidate_field(returned, ex) for s, ex in self.examples.items()}
    self.test_headline = self.epoch_headline + (("mean.oracle_ne", "mean.gap_closed") if self.oracle else ())
    if self.planted is not None and self.planted["test"].any():
      self.test_headline += ("planted.mean.ne", "planted.mean.oracle_ne", "planted.mean.gap_closed")

  def build_model(self):
    model_cfg = dict(self.config.model.copy_and_resolve_references())
    model_cfg.update(num_tasks=len(self.task_names), watch_head=self.watch_weight > 0,
                     user_vocab=self.context.user_vocab if self.context else (),
                     item_vocab=self.context.item_vocab if self.context else ())
    return build_model(model_cfg, self.seqs.num_items), model_cfg, []

  def init_batch(self) -> dict:
    return make_batch(self.examples["train"], np.arange(min(2, len(self.examples["train"]))), 2)

  def train_dataset(self, batch_size: int, num_epochs: int, seed: int, part=None):
    ex = self.examples["train"]
    if self.stochastic_length is not None:
      return self._stochastic_length_dataset(ex, batch_size, num_epochs, seed, part)
    if ex.history is not None:   # ragged: each batch from one history-length bucket
      def ragged(rows):   # its width is the whole batch's: built whole, then this process's rows kept
        b = make_batch(ex, rows, batch_size)
        return b if part is None else {k: v[part[0]:part[1]] for k, v in b.items()}
      return pipeline.bucketed_batch_dataset(ex.length_bucket(), ragged,
                                             batch_size=batch_size, num_epochs=num_epochs, seed=seed)
    return pipeline.batch_dataset(len(ex),
                                  lambda rows: make_batch(ex, *pipeline.local_rows(rows, batch_size, part)),
                                  batch_size=batch_size, num_epochs=num_epochs, seed=seed)

  def _stochastic_length_dataset(self, ex: rk.RankingExamples, batch_size: int, num_epochs: int, seed: int,
                                 part):
    """Training batches under stochastic length: each epoch one SL draw of every request's kept
    length, requests of similar kept length batched together (`pipeline.sorted_epoch` on the kept
    length's bucket, so the width follows the kept histories), then each batch's kept positions;
    every draw deterministic in (seed, epoch, batch)."""
    sl, lengths_N, buckets = self.stochastic_length, ex.arrays["hist_lengths"], ex.history.buckets

    def plan(epoch):
      kept_N = sl.kept_lengths(lengths_N, np.random.default_rng([seed, epoch, _SL_STREAM]))
      return [(rows, kept_N[rows]) for rows in
              pipeline.sorted_epoch(np.searchsorted(buckets, kept_N), batch_size, seed, epoch)]

    def batch(epoch, index, entry):
      rows, kept_R = entry
      rng = np.random.default_rng([seed, epoch, index, _SL_STREAM])
      keep = [sl.kept_positions(int(n), int(k), rng) for n, k in zip(lengths_N[rows], kept_R)]
      b = make_batch(ex, rows, batch_size, keep=keep)
      return b if part is None else {k: v[part[0]:part[1]] for k, v in b.items()}

    return pipeline.planned_batch_dataset(self.steps_per_epoch(batch_size), num_epochs, plan, batch)

  def steps_per_epoch(self, batch_size: int) -> int:
    ex = self.examples["train"]
    if self.stochastic_length is not None:
      return -(-len(ex) // batch_size)
    if ex.history is not None:
      return pipeline.bucketed_steps(ex.length_bucket(), batch_size)
    return -(-len(ex) // batch_size)

  def loss_fn(self, model, mesh=None):   # the sharded step's GSPMD partitions it: no mesh needed
    task_weights, watch_weight = self.task_weights, self.watch_weight

    def loss(params, batch, key):
      out = model.apply({"params": params}, batch, train=True, rngs={"dropout": key})
      n, c, t = out["logits"].shape
      watch = {}
      if watch_weight > 0:
        watch = dict(watch_pred_N=out["watch_ratio"].reshape(n * c),
                     watch_target_N=batch["cand_watch_ratio"].reshape(n * c), watch_weight=watch_weight)
      value, _ = losses.multitask_bce_loss(out["logits"].reshape(n * c, t), batch["cand_labels"].reshape(n * c, t),
                                           batch["cand_mask"].reshape(n * c), task_weights, **watch)
      return value
    return loss

  def _eval_order(self, split: str) -> np.ndarray:
    """The evaluator's row order: by history-length bucket (ragged layout; the identity when padded),
    so that consecutive batches share a width and few widths compile."""
    return np.argsort(self.examples[split].length_bucket(), kind="stable")

  def inference_flops(self, model, split: str = "test") -> dict:
    """Forward FLOPs per request of scoring `split` as the evaluator does: its batches, XLA's count of
    the compiled forward pass at each batch shape (`scaling.flops.FlopsByShape`; nothing runs), the
    model on XLA attention where it would use the C++ kernel (XLA cannot see into a custom call).
    Each batch's count is shared by its real requests (padding rows cost nothing), then averaged over
    the split's requests: the cost of scoring one request's candidates at its own history width."""
    from recjax.scaling import flops as flops_lib  # pylint: disable=import-outside-toplevel
    if getattr(model, "attention_impl", "xla") != "xla":
      model = model.clone(attention_impl="xla")
    ex, batch_size = self.examples[split], self.config.eval.batch_size
    params = jax.eval_shape(lambda k, b: model.init({"params": k, "dropout": k}, b, train=False)["params"],
                            jax.random.key(0), self.init_batch())
    # The batch first: FlopsByShape reads the example count off the first mapping argument.
    count = flops_lib.FlopsByShape(lambda b, p: model.apply({"params": p}, b, train=False)["logits"],
                                   examples=self.examples_in)
    order, total, widths, exact = self._eval_order(split), 0.0, {}, True
    for s in range(0, len(ex), batch_size):
      rows = order[s:s + batch_size]
      batch = make_batch(ex, rows, batch_size)
      counted = count(batch, params)
      total += counted.total * len(rows) / counted.examples
      width = int(batch["hist_ids"].shape[1])
      widths[width] = widths.get(width, 0) + len(rows)
      exact = exact and counted.xla.exact
    return {"split": split, "requests": len(ex), "flops_per_example": total / max(len(ex), 1),
            "requests_by_width": {str(w): n for w, n in sorted(widths.items())}, "shapes_counted": len(count.counted()),
            "exact": exact}

  def evaluator(self, model):
    batch_size = self.config.eval.batch_size
    watch_head = self.watch_weight > 0

    @functools.partial(jax.jit, compiler_options=compile_options.step_options())   # compile_options.py
    def predict(params, batch):
      out = model.apply({"params": params}, batch, train=False)
      return jax.nn.sigmoid(out["logits"]), (out["watch_ratio"] if watch_head else None)

    def run(params, split: str) -> dict:
      ex = self.examples[split]
      order = self._eval_order(split)
      # Each batch copied in first: the step runs inline and frees its scratch on return (cpu_allocator.py).
      preds = [predict(params, cpu_allocator.on_device(make_batch(ex, order[s:s + batch_size], batch_size)))
               for s in range(0, len(ex), batch_size)]
      p_NCT = np.empty((len(ex),) + preds[0][0].shape[1:], np.float32)
      p_NCT[order] = np.concatenate([np.asarray(p) for p, _ in preds])[:len(ex)]
      real = ex.arrays["cand_mask"] > 0
      users = np.broadcast_to(ex.arrays["user_ids"][:, None], real.shape)
      oracle = self.oracle[split][real] if self.oracle else None
      metrics = multitask_metrics(p_NCT[real], ex.arrays["cand_labels"][real], self.task_names,
                                  user_N=users[real], oracle_NT=oracle)
      if self.planted is not None:   # the same metrics on the planted return-phase candidates alone
        sel = self.planted[split][real]
        metrics["planted"] = {"candidates": int(sel.sum())}
        if sel.any():
          metrics["planted"].update(multitask_metrics(
              p_NCT[real][sel], ex.arrays["cand_labels"][real][sel], self.task_names,
              user_N=users[real][sel], oracle_NT=oracle[sel]))
      if watch_head:
        w_NC = np.empty((len(ex),) + preds[0][1].shape[1:], np.float32)
        w_NC[order] = np.concatenate([np.asarray(w) for _, w in preds])[:len(ex)]
        metrics["watch_ratio"] = watch_ratio_metrics(w_NC[real], ex.arrays["cand_watch_ratio"][real])
      return metrics
    return run

  def dataset_stats(self) -> dict:
    out = {"users": self.seqs.num_users, "events": int(len(self.seqs.items)), "item_rows": self.seqs.num_items,
           "source": self.seqs.source, "tasks": list(self.task_names)}
    for s, ex in self.examples.items():
      real = ex.arrays["cand_mask"] > 0
      out[f"{s}_requests"] = len(ex)
      out[f"{s}_candidates"] = int(real.sum())
      out[f"{s}_base_rates"] = dict(zip(self.task_names, ex.arrays["cand_labels"][real].mean(0).round(5).tolist()))
    return out

  def protocol(self) -> str:
    parts = [self.split_cfg.describe(),
             f"context features: {'on' if self.context else 'off'}",
             f"best epoch: lowest mean NE on {self.eval_split}; metrics.test is the test split at that epoch"]
    if self.oracle:
      parts.append("oracle: the synthetic world's true feedback probabilities at the same candidates; "
                   "gap_closed = (1 - NE_model) / (1 - NE_oracle)")
    if self.planted is not None:
      parts.append("planted: the same metrics on the candidates that are planted dormant-topic events of the "
                   "return phase (world_truth.npz planted_phase == 2)")
    return "; ".join(parts)

  def examples_in(self, batch: dict) -> int:
    return int(batch["cand_ids"].shape[0])
