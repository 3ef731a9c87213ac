"""Generative retrieval (TIGER, papers.md §6e): the next item as its SID tokens, decoded by a
trie-constrained beam search over the catalogue.

Once per run the task gives every catalogue item a SID (`tasks.sid_items.catalogue_sids_for` over
`semantic_ids.catalogue_sids`, the one SID builder: item vectors -> tokenizer -> collision handling,
`config.sid`; collaborative vectors come from the training part only), cached in `<workdir>/sids/` under a fingerprint of the data,
the training sequences and `config.sid`.

Batch schema (B examples, H = data.max_len history items, L = SID levels incl. a dedup level):
  history_codes [B, H, L] int32    SIDs of the history items, oldest first, right-padded with 0
  history_lengths [B] int32        real history items (1 in padding rows, which weigh 0)
  target_codes [B, L] int32        the next item's SID
  user_ids [B] int32               hashed into the model's user tokens
  weights [B] float32              1 for real examples, 0 for the padding rows of a short batch
Training examples are every next item of each user's training part with the <= H items before it
(`data.splits.prefix_examples`). Loss: `losses.next_sid_loss` (mean per-token cross-entropy).

Evaluation: the encoder reads the <= H items before the target, `model_beam_search` decodes
`eval.beam_size` SIDs constrained to the catalogue trie (real items only; with
`eval.exclude_history=False`, TIGER's protocol, none removed for being in the history; with True,
our default retrieval protocol, the leaves whose items all lie in the <= H-item window are masked
in the search, so the beams are the best of the rest and a target inside the window is a miss,
as in the retrieval task), and the target item's
position in the list gives Recall@K (= HR@K) / NDCG@K / MRR twice (`metrics.collisions`):
collision-aware at the top level (a SID shared by g items fills g item slots, the target gets
1/g credit per slot) and SID-level under "sid_level" (the naive count). Without collisions the
two are equal. The best epoch is the one with the highest (collision-aware) validation NDCG@10.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from recjax import cpu_allocator, losses
from recjax.data import pipeline, registry, splits
from recjax.metrics import collisions as collision_metrics
from recjax.metrics.retrieval import metrics_from_ranks
from recjax.models import build_model
from recjax.models.tiger import TIGER, BeamScorer, decode_context
from recjax.semantic_ids import beam_search
from recjax.semantic_ids.trie import build_trie
from recjax.tasks.base import Task
from recjax.tasks.sid_items import catalogue_sids_for

BATCH_FIELDS = ("history_codes", "history_lengths", "target_codes", "user_ids", "weights")


def make_batch(ex: splits.EvalExamples, rows, batch_size: int, code_table_VL: np.ndarray) -> dict:
  """The schema above for examples `rows`, padded to `batch_size` rows of weight 0."""
  rows = np.asarray(rows, np.int64)
  n = len(rows)
  ids = np.zeros((batch_size, ex.ids.shape[1]), np.int32)
  ids[:n] = ex.ids[rows]
  lengths = np.ones(batch_size, np.int32)          # padding rows: one (padding) item, never an empty memory
  lengths[:n] = ex.lengths[rows]
  targets = np.zeros(batch_size, np.int32)
  targets[:n] = ex.targets[rows]
  users = np.zeros(batch_size, np.int32)
  users[:n] = ex.user_ids[rows] % np.iinfo(np.int32).max
  weights = np.zeros(batch_size, np.float32)
  weights[:n] = 1.0
  return {"history_codes": code_table_VL[ids], "history_lengths": lengths, "target_codes": code_table_VL[targets],
          "user_ids": users, "weights": weights}


def loss_fn(params, model, batch, key):
  logits_BLK = model.apply({"params": params}, batch, train=True, rngs={"dropout": key})
  loss, _ = losses.next_sid_loss(logits_BLK, batch["target_codes"], batch["weights"])
  return loss


def make_decoder(model: TIGER, trie, beam_size: int):
  """-> groups(params, batch, exclude_leaves=None) -> int32 [B, W]: the trie leaves (collision
  groups) of the top `beam_size` decoded SIDs, best first (-1 = fewer catalogue paths than beams);
  `exclude_leaves` int32 [B, X] (-1 pads): leaves never returned to that row."""
  next_node = trie.device_arrays()
  scorer = BeamScorer(model)

  @jax.jit
  def _groups(params, batch, next_node, exclude_leaves):
    memory, memory_lengths = model.apply({"params": params}, batch, method=TIGER.encode)
    beams = beam_search.model_beam_search(scorer, params, next_node, {}, beam_size,
                                         context=decode_context(memory, memory_lengths),
                                         exclude_leaves=exclude_leaves)
    return beams.groups_BW

  def groups(params, batch, exclude_leaves=None):
    return _groups(params, cpu_allocator.on_device(batch), next_node,   # runs inline: cpu_allocator.py
                   None if exclude_leaves is None else cpu_allocator.on_device(exclude_leaves))
  return groups


def window_leaves(window_ids_BH: np.ndarray, group_of_item: np.ndarray, leaf_size: np.ndarray) -> np.ndarray:
  """int32 [B, H]: per row, the trie leaves all of whose items are in the row's window (item ids,
  0 = padding), -1 padded. A leaf shared by a window item and an item outside the window stays
  rankable (removing it would remove an item the protocol keeps)."""
  out = np.full(window_ids_BH.shape, -1, np.int32)
  for row, ids in enumerate(window_ids_BH):
    items = np.unique(ids[ids > 0])
    leaves, counts = np.unique(group_of_item[items], return_counts=True)
    keep = (leaves >= 0) & (counts == leaf_size[np.maximum(leaves, 0)])
    out[row, :keep.sum()] = leaves[keep]
  return out


def generative_metrics(groups_BW, target_group_B, group_size_G, ks) -> dict:
  """Collision-aware item-level metrics, and the naive SID-level ones under "sid_level"."""
  item = collision_metrics.expected_item_metrics(
      *collision_metrics.ranked_group_positions(groups_BW, target_group_B, group_size_G), ks=ks)
  naive = metrics_from_ranks(collision_metrics.sid_level_ranks(groups_BW, target_group_B), ks)
  return {**item, "sid_level": naive}


def _first(ex: splits.EvalExamples, n: int) -> splits.EvalExamples:
  return dataclasses.replace(ex, **{f.name: None if getattr(ex, f.name) is None else getattr(ex, f.name)[:n]
                                    for f in dataclasses.fields(ex)})


class GenerativeTask(Task):
  """TIGER-style generative retrieval on `config.data` (split `config.data.protocol`)."""
  name = "generative"
  batch_fields = BATCH_FIELDS
  selection_metric = "ndcg@10"
  higher_is_better = True
  epoch_headline = ("hr@10", "ndcg@10", "sid_level.hr@10")
  test_headline = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "sid_level.hr@10", "sid_level.ndcg@10")

  def __init__(self, config, workdir: str):
    self.config = config
    self.exclude_history = bool(config.eval.get("exclude_history", False))
    seqs = registry.load_dataset(config.data, cache_dir=os.path.join(workdir, "data"))
    protocol, history = config.data.protocol, config.data.max_len
    self.seqs = seqs
    settings, self.sids, self.sids_cached, self.sid_fingerprint = catalogue_sids_for(
        config.get("sid"), config.data, seqs.catalogue(), splits.training_sequences(seqs, protocol),
        os.path.join(workdir, "sids"))
    if self.sids.codes_NL.max() >= self.sids.codebook_size:   # TIGER decodes every level with K codes
      raise ValueError(f"sid.dedup={settings.dedup!r}: a collision group holds {self.sids.codes_NL[:, -1].max() + 1} "
                       f"items, more than sid.codebook_size={settings.codebook_size} codes; raise the codebook size")
    self.code_table = self.sids.table(seqs.num_items)
    self.trie = build_trie(self.sids.codes_NL, self.sids.codebook_size, self.sids.item_ids)
    self.group_of_item = np.full(seqs.num_items, -1, np.int64)
    self.group_of_item[self.trie.leaf_items] = np.repeat(np.arange(self.trie.num_leaves), self.trie.leaf_size)
    self.train_ex = splits.prefix_examples(seqs, history, protocol)
    self.eval_split = "valid" if protocol == "last_two" else "test"
    self.test_at_each_eval = self.eval_split != "test"   # the test row is the validation-selected epoch's
    self.examples = {s: splits.eval_examples(seqs, history, s, protocol) for s in {self.eval_split, "test"}}
    self.max_examples = int(config.eval.get("max_examples", 0))   # > 0: a labelled subset (quick checks)
    if self.max_examples > 0:
      self.examples = {s: _first(ex, self.max_examples) for s, ex in self.examples.items()}

  def build_model(self):
    model_cfg = dict(self.config.model.copy_and_resolve_references())
    model_cfg.update(codebook_size=self.sids.codebook_size, num_levels=self.sids.num_levels,
                     max_history=self.config.data.max_len)
    notes = [f"evaluated on the first {self.max_examples} users of each split only"] if self.max_examples > 0 else []
    notes += [f"SIDs: {self.sids.report['route']} vectors of the training events -> {self.sids.report['tokenizer']}, "
             f"{self.sids.num_levels} levels x {self.sids.codebook_size} codes "
             f"(dedup {self.sids.report['settings']['dedup']}); fingerprint {self.sid_fingerprint}"]
    return build_model(model_cfg, self.seqs.num_items), model_cfg, notes

  def init_batch(self) -> dict:
    return make_batch(self.train_ex, np.arange(min(2, len(self.train_ex))), 2, self.code_table)

  def train_dataset(self, batch_size: int, num_epochs: int, seed: int, part=None):
    if len(self.train_ex) == 0:
      raise ValueError("no training examples: every user's training part has fewer than 2 items")
    ex, table = self.train_ex, self.code_table

    def batch(rows):   # this process's slots [start, stop) of the global batch (all of it: part None)
      return make_batch(ex, *pipeline.local_rows(rows, batch_size, part), table)
    return pipeline.batch_dataset(len(ex), batch, batch_size=batch_size, num_epochs=num_epochs, seed=seed)

  def steps_per_epoch(self, batch_size: int) -> int:
    return -(-len(self.train_ex) // batch_size)

  def loss_fn(self, model, mesh=None):   # the sharded step's GSPMD partitions it: no mesh needed
    def loss(params, batch, key):
      return loss_fn(params, model, batch, key)
    return loss

  def decoder(self, model, beam_size: int | None = None):
    """groups(params, batch) -> [B, W] decoded trie leaves (see `make_decoder`); one per (model,
    beam size), so every evaluation reuses one compiled search."""
    w = beam_size or self.config.eval.get("beam_size", max(self.config.eval.ks))
    cache = self.__dict__.setdefault("_decoders", {})
    if (model, w) not in cache:
      cache[(model, w)] = make_decoder(model, self.trie, w)
    return cache[(model, w)]

  def decode_split(self, groups_fn, params, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(decoded groups [U, W], target items [U]) of every example of `split`."""
    ex, bs = self.examples[split], self.config.eval.batch_size
    out = []
    for start in range(0, len(ex), bs):
      rows = np.arange(start, min(start + bs, len(ex)))
      exclude = None
      if self.exclude_history:
        window = np.zeros((bs, ex.ids.shape[1]), ex.ids.dtype)
        window[:len(rows)] = ex.ids[rows]
        exclude = window_leaves(window, self.group_of_item, self.trie.leaf_size)
      out.append(np.asarray(groups_fn(params, make_batch(ex, rows, bs, self.code_table), exclude))[:len(rows)])
    return np.concatenate(out), ex.targets

  def evaluator(self, model):
    ks = tuple(self.config.eval.ks)
    groups_fn = self.decoder(model)

    def run(params, split: str) -> dict:
      groups, targets = self.decode_split(groups_fn, params, split)
      return generative_metrics(groups, self.group_of_item[targets], self.trie.leaf_size, ks)
    return run

  def dataset_stats(self) -> dict:
    seqs = self.seqs
    return {"users": seqs.num_users, "events": int(len(seqs.items)), "item_rows": seqs.num_items,
            "catalogue": int(len(seqs.catalogue())), "train_examples": len(self.train_ex),
            "eval_examples": len(self.examples[self.eval_split]), "test_examples": len(self.examples["test"]),
            "source": seqs.source, "sid_fingerprint": self.sid_fingerprint, "sids": self.sids.report}

  def protocol(self) -> str:
    p = self.config.data.protocol
    split = ("training on all but each user's last two items, validation (model selection) on the second to last, "
             "test on the last") if p == "last_two" else "training on all but each user's last item, test on the last"
    removed = ("the history window's items removed from the search" if self.exclude_history
               else "history items not removed")
    return (f"{split}; the <= {self.config.data.max_len} items before the target as history; beam search "
            f"over the whole catalogue's SID trie, {removed}")

  def examples_in(self, batch: dict) -> int:
    return int(batch["weights"].shape[0])
