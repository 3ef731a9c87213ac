"""Embedding tables and initialisers shared by the models."""
from __future__ import annotations

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
