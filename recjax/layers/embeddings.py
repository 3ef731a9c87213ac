"""Embedding tables and initialisers shared by the models."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def truncated_normal(std: float):
  """N(0, std²) resampled into ±2σ, like the HSTU reference's `truncated_normal` init."""
  def init(key, shape, dtype=jnp.float32):
    return std * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
  return init


class ItemEmbedding(nn.Module):
  """The item table [V, D] (row 0 = padding), used for inputs and tied as the output side."""
  num_items: int
  dim: int
  init_std: float = 0.02

  def setup(self):
    self.table = self.param("table", truncated_normal(self.init_std), (self.num_items, self.dim))

  def __call__(self, ids: jax.Array) -> jax.Array:
    return jnp.take(self.table, ids, axis=0)

  def item_table(self) -> jax.Array:
    """[V, D]: the tied output table (the same interface as `sid_embedding.SIDEmbedding`)."""
    return self.table


def sequence_inputs(item_embedding: ItemEmbedding, position_table_PD: jax.Array, ids_BL: jax.Array,
                    dropout, *, train: bool) -> tuple[jax.Array, jax.Array]:
  """The HSTU/SASRec input layer: x_i = Dropout(sqrt(D) * E[id_i] + P[i]) * 1[id_i != 0].

  (papers.md §3.5 item 10.) Returns (x [B, L, D], valid [B, L, 1]).
  """
  l = ids_BL.shape[1]
  if l > position_table_PD.shape[0]:
    raise ValueError(f"batch length {l} exceeds model.max_len={position_table_PD.shape[0]}")
  valid_BL1 = (ids_BL != 0)[..., None]
  x = item_embedding(ids_BL) * math.sqrt(item_embedding.dim) + position_table_PD[None, :l]
  return dropout(x, deterministic=not train) * valid_BL1, valid_BL1
