"""The inputs every ranker shares: history tokens, candidate tokens and context embeddings.

Batch fields (the ranking schema of `recjax.data.ranking`; N requests, H history slots, C
candidates, Fu / Fi categorical user / item features):
  hist_ids, hist_actions, hist_watch, hist_tab [N, H] int, hist_lengths [N];
  cand_ids, cand_tab [N, C] int; user_feats [N, Fu] int; cand_feats [N, C, Fi] int;
  hist_feats [N, H, Fi] int.

    history token   h_j = E_item[id_j] + Σ_f E_f[feat_jf] + Σ_t bit_t(action_j) A_t + E_watch[bucket_j]
                          + E_tab[tab_j]
    candidate token c_k = E_item[id_k] + E_tab[tab_k] + Σ_f E_f[feat_kf]

A candidate's action (and watch) embedding is zero by construction: nothing of its outcome is an
input (ULTRA-HSTU's candidate masking, papers.md §2.1). Padding history slots are zeroed.
"""
from __future__ import annotations

import flax.linen as nn

from recjax.layers.dropout import Dropout
import jax
import jax.numpy as jnp
import numpy as np

from recjax.layers.embeddings import ItemEmbedding, truncated_normal

NUM_TABS = 16           # tab + 1, KuaiRand tabs 0..14 (0 = padding / unknown)
NUM_WATCH_BUCKETS = 9   # 0 = padding / unknown, then 8 watch-ratio buckets


class CategoricalEmbedding(nn.Module):
  """F categorical features with their own vocabularies -> [..., F, D] (one table, offset rows).

  Codes outside 0..vocab_f - 1 are clipped into range (inside jit there is no way to raise).
  """
  vocab: tuple[int, ...]
  dim: int

  @nn.compact
  def __call__(self, codes_XF: jax.Array) -> jax.Array:
    if codes_XF.shape[-1] != len(self.vocab):
      raise ValueError(f"got {codes_XF.shape[-1]} categorical features, the model was built for "
                       f"{len(self.vocab)} (vocabularies {self.vocab})")
    if not self.vocab:
      return jnp.zeros(codes_XF.shape + (self.dim,), jnp.float32)
    offsets = np.concatenate([[0], np.cumsum(self.vocab)[:-1]]).astype(np.int32)
    table = self.param("table", truncated_normal(0.02), (int(sum(self.vocab)), self.dim))
    codes = jnp.clip(codes_XF, 0, np.asarray(self.vocab, np.int32) - 1) + offsets
    return jnp.take(table, codes, axis=0)


class RankingInputs(nn.Module):
  """Token embeddings of the ranking batch (see the module docstring)."""
  num_items: int
  dim: int
  num_action_bits: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  def setup(self):
    self.item_embedding = ItemEmbedding(self.num_items, self.dim)
    self.action_table = self.param("action_table", truncated_normal(0.02), (self.num_action_bits, self.dim))
    self.watch_embedding = nn.Embed(self.num_watch_buckets, self.dim, embedding_init=truncated_normal(0.02))
    self.tab_embedding = nn.Embed(self.num_tabs, self.dim, embedding_init=truncated_normal(0.02))
    self.user_features = CategoricalEmbedding(self.user_vocab, self.dim)
    self.item_features = CategoricalEmbedding(self.item_vocab, self.dim)

  def history(self, batch) -> tuple[jax.Array, jax.Array]:
    """(history tokens [N, H, D] zeroed on padding, valid [N, H] bool)."""
    ids_NH = batch["hist_ids"]
    valid_NH = jnp.arange(ids_NH.shape[1])[None, :] < batch["hist_lengths"][:, None]
    bits_NHA = (batch["hist_actions"][..., None] >> jnp.arange(self.num_action_bits)) & 1
    x = (self.item_embedding(ids_NH) + self.item_features(batch["hist_feats"]).sum(-2)
         + bits_NHA.astype(jnp.float32) @ self.action_table
         + self.watch_embedding(jnp.clip(batch["hist_watch"], 0, self.num_watch_buckets - 1))
         + self.tab_embedding(jnp.clip(batch["hist_tab"], 0, self.num_tabs - 1)))
    return x * valid_NH[..., None], valid_NH

  def history_parts(self, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The two halves of `history`'s tokens, for layouts that give each its own token: (item part
    [N, H, D]: item, item features, tab; action part [N, H, D]: action bits, watch bucket; valid
    [N, H]), zeroed on padding. Their sum is `history`'s token up to float rounding (`history` keeps
    its own summation order, so that runs and checkpoints made with it reproduce bit for bit)."""
    ids_NH = batch["hist_ids"]
    valid_NH = jnp.arange(ids_NH.shape[1])[None, :] < batch["hist_lengths"][:, None]
    bits_NHA = (batch["hist_actions"][..., None] >> jnp.arange(self.num_action_bits)) & 1
    item = (self.item_embedding(ids_NH) + self.item_features(batch["hist_feats"]).sum(-2)
            + self.tab_embedding(jnp.clip(batch["hist_tab"], 0, self.num_tabs - 1)))
    action = (bits_NHA.astype(jnp.float32) @ self.action_table
              + self.watch_embedding(jnp.clip(batch["hist_watch"], 0, self.num_watch_buckets - 1)))
    return item * valid_NH[..., None], action * valid_NH[..., None], valid_NH

  def candidates(self, batch) -> jax.Array:
    """Candidate tokens [N, C, D]: item, tab and item features; no action, no watch time."""
    return (self.item_embedding(batch["cand_ids"])
            + self.tab_embedding(jnp.clip(batch["cand_tab"], 0, self.num_tabs - 1))
            + self.item_features(batch["cand_feats"]).sum(-2))

  def candidate_items(self, batch) -> jax.Array:
    """The candidate item embeddings alone [N, C, D]."""
    return self.item_embedding(batch["cand_ids"])

  def user(self, batch) -> jax.Array:
    """Per-feature user context embeddings [N, Fu, D]."""
    return self.user_features(batch["user_feats"])


def ranking_head(z, *, mlp_dims, dropout: float, num_tasks: int, watch_head: bool, train: bool):
  """The rankers' shared tower, called inside a model's compact `__call__` (its layers are the
  model's own: `mlp_<i>`, `task_logits`, `watch_ratio`): ReLU MLP with dropout, then one logit per
  task and the optional watch-ratio regression. z [..., F] -> (logits [..., T], watch [...] or None)."""
  for i, width in enumerate(mlp_dims):
    z = nn.relu(nn.Dense(width, name=f"mlp_{i}")(z))
    z = Dropout(dropout)(z, deterministic=not train)
  logits = nn.Dense(num_tasks, name="task_logits")(z)
  watch = nn.Dense(1, name="watch_ratio")(z)[..., 0] if watch_head else None
  return logits, watch
