"""Next-item retrieval: sampled (or full) softmax over the catalogue, full-catalogue ranking metrics.

Batch schema (B users, L = data.max_len positions, T packed supervised positions;
`data/pipeline.py` builds it):
  ids [B, L] int32          input items, right-padded with 0;  lengths [B] int32
  labels [B, L] int32       next item at each position (0 = not supervised)
  token_index [T] int32     flat indices into [B * L] of the supervised positions (padded)
  token_weight [T] float32  1 for real positions, 0 for padding
  times, next_times [B, L]  when the data has timestamps (HSTU's time bias)

Loss: `model.apply` -> outputs [B, L, D] and the tied item table [V, D] -> rows of the packed
positions -> sampled softmax with uniform catalogue negatives (`loss.kind="sampled_softmax"`) or the
chunked full softmax. Evaluation: the L2-normalised output at each user's last position against
every catalogue item (`metrics.retrieval.catalogue_ranks`) -> HR/NDCG@K, MRR; with `eval.nll` also
the mean full-catalogue softmax cross-entropy of the target (`nll`, a validation loss); with
`eval.save_per_example` each split's per-user ranks (and NLL) go to `<workdir>/eval/<split>.npz`.
The best epoch is the one with the highest NDCG@10 on the evaluated split.

Item tables: `model.item_table="sid"` gives the model Semantic-ID token tables built from
`config.sid` (`semantic_ids/catalogue_sids.py` builds the codes, `tasks/sid_items.py` the table rows; cached in the workdir). Cold start: `data.cold_items` > 0 holds
that share of the catalogue out of training (`data.splits.cold_start_split`, drawn with
`data.cold_seed`) and out of the sampled negatives; the metrics then add `warm` and `cold`: the
same measures over the evaluated targets that are warm / cold items.

Domain mixtures: `data.domains` (`data/domains.py`) keeps only a chosen share of the training
targets from each domain (e.g. each synthetic tab); the evaluation then adds `domain_loss`, the
full-softmax cross-entropy of the evaluated targets of each domain (the held-out loss per domain
of the data-mixture law), and `loss`, the same over all targets.
"""
from __future__ import annotations

import dataclasses
import functools
import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from recjax import compile_options, cpu_allocator, losses
from recjax.data import domains, pipeline, registry, splits
from recjax.metrics.retrieval import catalogue_chunks, catalogue_nll, catalogue_ranks, metrics_from_ranks
from recjax.models import build_model, model_class
from recjax.tasks.base import Task

BATCH_FIELDS = ("ids", "labels", "lengths", "token_index", "token_weight", "times", "next_times")


def resolve_model_config(config, seqs):
  """config.model resolved (references, then data-dependent settings through the model class's
  `resolve_config` hook, if it has one) -> (model settings dict, notes for the results file)."""
  model_cfg = dict(config.model.copy_and_resolve_references())
  hook = getattr(model_class(model_cfg["name"]), "resolve_config", None)
  return hook(model_cfg, seqs) if hook is not None else (model_cfg, [])


def packed_outputs(out_BLD, labels_BL, token_index_T):
  """Rows of the supervised positions: (user vectors [T, D], positive ids [T])."""
  d = out_BLD.shape[-1]
  return out_BLD.reshape(-1, d)[token_index_T], labels_BL.reshape(-1)[token_index_T]


def loss_fn(params, model, batch, key, loss_cfg, catalogue, mesh=None):
  """The retrieval loss of one batch (schema above) under `key` (dropout and negatives); `mesh`: the
  run's device mesh (None on one device), for `loss.impl="shard_map"`."""
  dropout_key, negatives_key = jax.random.split(key)
  out_BLD, table_VD = model.apply({"params": params}, batch, train=True, rngs={"dropout": dropout_key})
  user_TD, pos_T = packed_outputs(out_BLD, batch["labels"], batch["token_index"])
  weight_T = batch["token_weight"]
  if loss_cfg.kind == "sampled_softmax":
    neg_TN = losses.sample_negatives(negatives_key, user_TD.shape[0], loss_cfg.num_negatives, catalogue)
    return losses.sampled_softmax_loss(user_TD, table_VD, pos_T, neg_TN, weight_T,
                                       temperature=loss_cfg.temperature, chunk=loss_cfg.chunk,
                                       impl=loss_cfg.get("impl", "auto"), mesh=mesh)
  if loss_cfg.kind == "full_softmax":
    return losses.full_softmax_loss(user_TD, table_VD, pos_T, weight_T, temperature=loss_cfg.temperature,
                                    catalogue=catalogue, item_chunk=loss_cfg.item_chunk)
  raise ValueError(f"unknown loss.kind {loss_cfg.kind!r} (sampled_softmax | full_softmax)")


def make_eval_step(model, catalogue: np.ndarray, num_items: int, exclude_history: bool,
                   item_chunk: int = 4096):
  """Returns ranks(params, batch) -> [B] rank of each target over the full catalogue.

  Query = the L2-normalised output at the last real position; candidates = every catalogue item,
  L2-normalised, scored `item_chunk` at a time (`metrics.retrieval.catalogue_ranks`), so memory is
  O(B * item_chunk) at any catalogue size; items in the input window are removed when
  `exclude_history` (the reference's `filter_invalid_ids`), and a target among them is a miss.
  The default chunk keeps one chunk's [512, 4096] scores (8 MB) in cache; on the 2-core CPU a
  65536-item chunk was 2-4x slower (results/bench/eval_cpu_chunk65536.json)."""
  ids_NK, valid_NK = catalogue_chunks(catalogue, num_items, item_chunk)
  # Arguments, not closed-over constants: a 10M-id catalogue would otherwise be baked into the program.
  ids_NK, valid_NK = jnp.asarray(ids_NK), jnp.asarray(valid_NK)

  @functools.partial(jax.jit, compiler_options=compile_options.step_options())   # compile_options.py
  def _ranks(params, batch, ids_NK, valid_NK):
    out_BLD, table_VD = model.apply({"params": params}, batch, train=False)
    rows = jnp.arange(out_BLD.shape[0])
    u_BD = losses.l2_normalize(out_BLD[rows, jnp.maximum(batch["lengths"] - 1, 0)])
    return catalogue_ranks(u_BD, table_VD, ids_NK, valid_NK, batch["targets"],
                           batch["ids"] if exclude_history else None, item_transform=losses.l2_normalize)

  def ranks(params, batch):
    # Inputs ready first: the step then runs inline and frees its scratch on return (cpu_allocator.py).
    return _ranks(params, cpu_allocator.on_device(batch), ids_NK, valid_NK)

  return ranks


def make_eval_nll_step(model, catalogue: np.ndarray, num_items: int, temperature: float, item_chunk: int = 4096):
  """Returns nll(params, batch) -> [B]: each target's cross-entropy under the softmax over the whole
  catalogue of cosine / temperature (the scores `make_eval_step` ranks; the full softmax that the
  sampled-softmax training estimates), `metrics.retrieval.catalogue_nll`."""
  if not temperature > 0:
    raise ValueError(f"loss.temperature must be > 0 for the evaluation NLL, got {temperature}")
  ids_NK, valid_NK = (jnp.asarray(a) for a in catalogue_chunks(catalogue, num_items, item_chunk))

  @functools.partial(jax.jit, compiler_options=compile_options.step_options())
  def _nll(params, batch, ids_NK, valid_NK):
    out_BLD, table_VD = model.apply({"params": params}, batch, train=False)
    rows = jnp.arange(out_BLD.shape[0])
    u_BD = losses.l2_normalize(out_BLD[rows, jnp.maximum(batch["lengths"] - 1, 0)])
    return catalogue_nll(u_BD, table_VD, ids_NK, valid_NK, batch["targets"], scale=1.0 / temperature,
                         item_transform=losses.l2_normalize)

  def nll(params, batch):
    return _nll(params, cpu_allocator.on_device(batch), ids_NK, valid_NK)
  return nll


def make_domain_loss_step(model, catalogue: np.ndarray, num_items: int, temperature: float, num_domains: int,
                          item_chunk: int = 4096):
  """Returns sums(params, batch) -> ([K] summed cross-entropy, [K] count) of each domain's targets.

  The loss is `make_eval_nll_step`'s: the training objective's full softmax (cosine scores over
  `catalogue` at `temperature`) of the output at each user's last position, without dropout;
  `batch["domain"]` [B] names each target's domain (-1 = a padding row, never counted)."""
  nll = make_eval_nll_step(model, catalogue, num_items, temperature, item_chunk)
  domains_K = jnp.arange(num_domains)

  def sums(params, batch):
    nll_B = nll(params, batch)
    in_BK = jnp.asarray(batch["domain"])[:, None] == domains_K[None, :]
    return jnp.sum(jnp.where(in_BK, nll_B[:, None], 0.0), axis=0), jnp.sum(in_BK, axis=0, dtype=jnp.float32)

  return sums


def domain_losses(loss_step, params, examples: splits.EvalExamples, domain_N: np.ndarray, batch_size: int) -> dict:
  """{"domain_loss": {k: mean loss}, "domain_targets": {k: count}, "loss": mean over all targets}."""
  total, count = 0.0, 0.0
  start = 0
  for batch, n in pipeline.eval_batches(examples, batch_size):
    dom = np.full(batch["lengths"].shape[0], -1, np.int32)
    dom[:n] = domain_N[start:start + n]
    start += n
    l_K, c_K = loss_step(params, {**batch, "domain": dom})
    total, count = total + np.asarray(l_K, np.float64), count + np.asarray(c_K, np.float64)
  k = len(total)
  return {"domain_loss": {str(i): float(total[i] / count[i]) if count[i] else float("nan") for i in range(k)},
          "domain_targets": {str(i): int(count[i]) for i in range(k)},
          "loss": float(total.sum() / max(count.sum(), 1.0))}


def eval_ranks(eval_step, params, examples: splits.EvalExamples, batch_size: int) -> np.ndarray:
  """[N] rank of each example's target under `eval_step` (from `make_eval_step`)."""
  ranks = []
  for batch, n in pipeline.eval_batches(examples, batch_size):
    ranks.append(np.asarray(eval_step(params, batch))[:n])
  return np.concatenate(ranks)


def evaluate(eval_step, params, examples: splits.EvalExamples, batch_size: int, ks) -> dict:
  """HR/NDCG@ks and MRR of `examples` under `eval_step` (from `make_eval_step`)."""
  return metrics_from_ranks(eval_ranks(eval_step, params, examples, batch_size), ks)


def cold_warm_metrics(ranks_N, targets_N, cold_items, ks) -> dict:
  """{"warm": metrics, "cold": metrics}: the targets outside / inside `cold_items`, each with its
  number of queries (a subset without queries has only `queries: 0`)."""
  is_cold = np.isin(np.asarray(targets_N), np.asarray(cold_items))
  out = {}
  for name, mask in (("warm", ~is_cold), ("cold", is_cold)):
    n = int(mask.sum())
    out[name] = {"queries": n, **(metrics_from_ranks(np.asarray(ranks_N)[mask], ks) if n else {})}
  return out


class RetrievalTask(Task):
  """Next-item retrieval on `config.data` with the split protocol `config.data.protocol`."""
  name = "retrieval"
  batch_fields = BATCH_FIELDS
  selection_metric = "ndcg@10"
  higher_is_better = True
  epoch_headline = ("hr@10", "ndcg@10", "hr@200", "mrr")
  test_headline = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200", "mrr")

  def __init__(self, config, workdir: str):
    self.config = config
    seqs = registry.load_dataset(config.data, cache_dir=os.path.join(workdir, "data"))
    logging.info("dataset %s: %d users, %d events, %d item rows, timestamps: %s", seqs.source,
                 seqs.num_users, len(seqs.items), seqs.num_items, seqs.has_timestamps)
    max_len, protocol = config.data.max_len, config.data.protocol
    self.catalogue = seqs.catalogue()
    self.cold_items = np.zeros(0, np.int64)
    if config.data.get("cold_items", 0.0) > 0:
      seqs, self.cold_items = splits.cold_start_split(seqs, config.data.cold_items, config.data.get("cold_seed", 0),
                                                      protocol)
    # Sampled negatives come from the items training may see (all of them without a cold split).
    self.train_catalogue = np.setdiff1d(self.catalogue, self.cold_items)
    self.seqs = seqs
    self.sid_report = None
    self.train_ex = splits.train_examples(seqs, max_len, protocol)
    self.domains = domains.DomainSettings.from_config(config.data.get("domains"))
    self.mixture, self.eval_domains = None, {}
    self.eval_split = "valid" if protocol == "last_two" else "test"
    # `eval.test_at_each_eval`: the test row is the validation-selected epoch's (TIGER's protocol).
    self.test_at_each_eval = bool(config.eval.get("test_at_each_eval", False)) and self.eval_split != "test"
    self.examples = {self.eval_split: splits.eval_examples(seqs, max_len, self.eval_split, protocol)}
    if "test" not in self.examples:
      self.examples["test"] = splits.eval_examples(seqs, max_len, "test", protocol)
    if self.domains.enabled:
      self._apply_mixture(seqs)
    self.workdir = workdir
    if np.isin(self.examples["test"].targets, self.cold_items).any():
      self.test_headline = self.test_headline + ("warm.ndcg@10", "cold.hr@10", "cold.ndcg@10")

  def _apply_mixture(self, seqs):
    """Keeps the training targets `data.domains` draws; records each evaluated target's domain."""
    dom_E = domains.event_domains(seqs, self.domains.field)
    self.num_domains = int(dom_E.max()) + 1
    cfg = self.config.data
    events_UL = splits.train_label_events(seqs, cfg.max_len, cfg.protocol)
    label_dom_UL = np.where(events_UL >= 0, dom_E[np.maximum(events_UL, 0)], -1)
    self.mixture = domains.select_targets(label_dom_UL, self.domains, self.num_domains)
    self.train_ex = dataclasses.replace(
        self.train_ex, labels=np.where(self.mixture.keep_UL, self.train_ex.labels, 0).astype(np.int32))
    self.eval_domains = {split: dom_E[splits.eval_target_events(seqs, split, cfg.protocol)]
                         for split in self.examples}
    logging.info("domain mixture over %s: %s", self.domains.field, self.mixture.summary())

  def build_model(self):
    model_cfg, notes = resolve_model_config(self.config, self.seqs)
    model = build_model(model_cfg, self.seqs.num_items)
    if model_cfg.get("item_table", "id") == "sid":
      from recjax.tasks import sid_items  # pylint: disable=import-outside-toplevel
      tokens, self.sid_report = sid_items.build_sid_tokens(
          self.config.get("sid"), self.config.data, self.seqs.num_items, self.catalogue,
          splits.training_sequences(self.seqs, self.config.data.protocol), os.path.join(self.workdir, "sids"))
      model = model.clone(sid_tokens=tokens)
      notes = list(notes) + [f"SID item table: {self.sid_report['route']} vectors, {self.sid_report['tokenizer']}, "
                             f"{len(tokens.level_sizes)} levels, {tokens.num_rows} rows"]
    return model, model_cfg, notes

  def init_batch(self) -> dict:
    return pipeline.make_train_batch(self.train_ex, np.arange(min(2, len(self.train_ex))), 2, 0)

  def train_dataset(self, batch_size: int, num_epochs: int, seed: int, part=None):
    return pipeline.train_dataset(self.train_ex, batch_size=batch_size, num_epochs=num_epochs, seed=seed,
                                  token_bucket=self.config.loss.token_bucket, part=part)

  def steps_per_epoch(self, batch_size: int) -> int:
    return pipeline.steps_per_epoch(self.train_ex, batch_size)

  def loss_fn(self, model, mesh=None):
    loss_cfg, catalogue = self.config.loss, jnp.asarray(self.train_catalogue, jnp.int32)

    def loss(params, batch, key):
      return loss_fn(params, model, batch, key, loss_cfg, catalogue, mesh)
    return loss

  def evaluator(self, model):
    ec = self.config.eval
    eval_step = make_eval_step(model, self.catalogue, self.seqs.num_items, ec.exclude_history,
                               ec.get("item_chunk", 4096))
    ks = tuple(ec.ks)
    nll_step = None
    if ec.get("nll", False):
      nll_step = make_eval_nll_step(model, self.catalogue, self.seqs.num_items, self.config.loss.temperature,
                                    ec.get("item_chunk", 4096))
    loss_step = None
    if self.mixture is not None:
      loss_step = make_domain_loss_step(model, self.train_catalogue, self.seqs.num_items,
                                        self.config.loss.temperature, self.num_domains, ec.get("item_chunk", 4096))

    def run(params, split: str) -> dict:
      examples = self.examples[split]
      ranks = eval_ranks(eval_step, params, examples, ec.batch_size)
      metrics = metrics_from_ranks(ranks, ks)
      per_example = {"user_ids": examples.user_ids, "ranks": ranks}
      if nll_step is not None:
        per_example["nll"] = eval_ranks(nll_step, params, examples, ec.batch_size)
        metrics["nll"] = float(np.mean(per_example["nll"]))
      if loss_step is not None:
        metrics.update(domain_losses(loss_step, params, examples, self.eval_domains[split], ec.batch_size))
      if len(self.cold_items):
        metrics.update(cold_warm_metrics(ranks, examples.targets, self.cold_items, ks))
      if ec.get("save_per_example", False):   # the last evaluation of each split stays: bootstrap over users
        os.makedirs(os.path.join(self.workdir, "eval"), exist_ok=True)
        np.savez(os.path.join(self.workdir, "eval", f"{split}.npz"), **per_example)
      return metrics
    return run

  def dataset_stats(self) -> dict:
    seqs = self.seqs
    return {"users": seqs.num_users, "events": int(len(seqs.items)), "item_rows": seqs.num_items,
            "catalogue": int(len(self.catalogue)), "train_examples": len(self.train_ex),
            "eval_examples": len(self.examples[self.eval_split]), "test_examples": len(self.examples["test"]),
            "has_timestamps": seqs.has_timestamps, "source": seqs.source,
            "cold_items": int(len(self.cold_items)),
            "cold_test_targets": int(np.isin(self.examples["test"].targets, self.cold_items).sum()),
            **({"domain_mixture": {"field": self.domains.field, **self.mixture.summary()}}
               if self.mixture is not None else {})}

  def results_extra(self, params) -> dict:
    """The item representation's parameter count beside what an ID table [V, D] would hold."""
    item_params = params.get("item_embedding", {})
    n = int(sum(x.size for x in jax.tree.leaves(item_params)))
    dim = int(self.config.model.dim)
    out = {"kind": self.config.model.get("item_table", "id"), "params": n,
           "id_table_params": int(self.seqs.num_items * dim),
           "shrink_vs_id_table": float(self.seqs.num_items * dim / max(n, 1))}
    if self.sid_report is not None:
      out["sid"] = self.sid_report
    return {"item_representation": out}

  def flops_extra(self, model_cfg: dict):
    from recjax.scaling import flops  # pylint: disable=import-outside-toplevel
    return flops.native_loss_extra(self.config.loss, int(model_cfg["dim"]))

  def examples_in(self, batch: dict) -> int:
    return int(batch["ids"].shape[0])
