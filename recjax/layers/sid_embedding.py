"""Semantic-ID item embeddings: an item's vector is built from the embeddings of its SID tokens.

    e(v) = Σ_l T_l[tok_l(v)]                      combine = "sum"
    e(v) = W · concat_l T_l[tok_l(v)]             combine = "concat"   (W: [L·D, D], no bias)
         (+ R[hash(v) mod H]                      residual_size H > 0: a small hashed-id table)

`tok_l(v)` is the row of item v in level l's table: its level-l code ("codes": tables of K rows)
or the id of its length-(l+1) SID prefix ("prefixes": one row per distinct prefix, the n-gram
sharing of the semantic-ID papers, papers.md §4). The token map is data (`SIDTokens`, built by the
task from a tokenizer), the tables are parameters. Items sharing codes share rows, so the table
has Σ_l n_l (+ H) rows instead of V, and an item never seen in training still gets the trained
rows of its codes (cold start). The same vectors embed the inputs and, as the [V, D] table
`item_table()`, score the outputs (tied, like `ItemEmbedding`).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from recjax.layers.embeddings import ItemEmbedding, truncated_normal

COMBINES = ("sum", "concat")
ITEM_TABLES = ("id", "sid")
_HASH_MULTIPLIER = np.uint32(2654435761)   # Knuth's multiplicative hash (golden ratio · 2³²)


@dataclasses.dataclass(frozen=True, eq=False)
class SIDTokens:
  """Per-item token rows: `tokens_VL[v, l]` indexes level l's table of `level_sizes[l]` rows.

  Compared and hashed by `fingerprint` (the cache key of the tokenizer run that made it), so a
  module holding it stays a cheap, hashable dataclass field.
  """
  tokens_VL: np.ndarray          # int32 [V, L]
  level_sizes: tuple[int, ...]   # rows of each level's table
  fingerprint: str

  def __post_init__(self):
    t = np.asarray(self.tokens_VL)
    object.__setattr__(self, "level_sizes", tuple(int(n) for n in self.level_sizes))
    if t.ndim != 2 or t.shape[1] != len(self.level_sizes):
      raise ValueError(f"SIDTokens: tokens must be [V, L] with L = {len(self.level_sizes)} levels, "
                       f"got shape {t.shape}")
    if not np.issubdtype(t.dtype, np.integer):
      raise ValueError(f"SIDTokens: tokens must be integers, got {t.dtype}")
    for l, n in enumerate(self.level_sizes):
      if n < 1:
        raise ValueError(f"SIDTokens: level {l} has {n} rows")
      bad = np.flatnonzero((t[:, l] < 0) | (t[:, l] >= n))
      if len(bad):
        raise ValueError(f"SIDTokens: item {bad[0]} has level-{l} token {t[bad[0], l]} outside 0..{n - 1}")
    object.__setattr__(self, "tokens_VL", t.astype(np.int32))

  @property
  def num_rows(self) -> int:
    return sum(self.level_sizes)

  def __hash__(self):
    return hash(self.fingerprint)

  def __eq__(self, other):
    return isinstance(other, SIDTokens) and other.fingerprint == self.fingerprint


def hash_bucket(ids, size: int):
  """(id · 2654435761 mod 2³²) mod size: the residual row of each id (uint32 wrap-around)."""
  return (jnp.asarray(ids).astype(jnp.uint32) * _HASH_MULTIPLIER) % jnp.uint32(size)


class SIDEmbedding(nn.Module):
  """Item vectors from SID token tables (module docstring). `__call__(ids)` -> [..., D];
  `item_table()` -> [V, D], the tied output table."""
  num_items: int
  dim: int
  tokens: SIDTokens
  combine: str = "sum"
  residual_size: int = 0
  init_std: float = 0.02

  def setup(self):
    if self.combine not in COMBINES:
      raise ValueError(f"model.sid_combine must be one of {COMBINES}, got {self.combine!r}")
    if self.residual_size < 0:
      raise ValueError(f"model.sid_residual_size must be >= 0, got {self.residual_size}")
    if self.tokens.tokens_VL.shape[0] != self.num_items:
      raise ValueError(f"SID tokens cover {self.tokens.tokens_VL.shape[0]} items, the model has "
                       f"{self.num_items} item rows")
    # Summed levels: each level's std is init_std / sqrt(L + residual) so an item vector starts at
    # the ID table's scale (init_std per coordinate), whatever the number of levels.
    parts = len(self.tokens.level_sizes) + (self.residual_size > 0)
    std = self.init_std / math.sqrt(parts) if self.combine == "sum" else self.init_std
    self.levels = [self.param(f"level_{l}", truncated_normal(std), (n, self.dim))
                   for l, n in enumerate(self.tokens.level_sizes)]
    if self.combine == "concat":
      self.project = nn.Dense(self.dim, use_bias=False, name="project")
    if self.residual_size:
      self.residual = self.param("residual", truncated_normal(std), (self.residual_size, self.dim))

  def __call__(self, ids: jax.Array) -> jax.Array:
    tokens = jnp.take(jnp.asarray(self.tokens.tokens_VL), ids, axis=0)     # [..., L]
    rows = [jnp.take(table, tokens[..., l], axis=0) for l, table in enumerate(self.levels)]
    x = sum(rows[1:], rows[0]) if self.combine == "sum" else self.project(jnp.concatenate(rows, -1))
    if self.residual_size:
      x = x + jnp.take(self.residual, hash_bucket(ids, self.residual_size), axis=0)
    return x

  def item_table(self) -> jax.Array:
    return self(jnp.arange(self.num_items, dtype=jnp.int32))


def item_embedding_layer(kind: str, num_items: int, dim: int, sid_tokens: SIDTokens | None = None,
                         sid_combine: str = "sum", sid_residual_size: int = 0) -> nn.Module:
  """The item table a retrieval model embeds with: `kind` "id" ([V, D] rows) or "sid"."""
  if kind == "id":
    return ItemEmbedding(num_items, dim)
  if kind == "sid":
    if sid_tokens is None:
      raise ValueError("model.item_table='sid' needs SID tokens (the retrieval task builds them from "
                       "config.sid); got none")
    return SIDEmbedding(num_items, dim, sid_tokens, sid_combine, sid_residual_size)
  raise ValueError(f"model.item_table must be one of {ITEM_TABLES}, got {kind!r}")
