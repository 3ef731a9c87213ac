"""Normalisation layers."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def layer_norm_no_affine(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm over the last axis without scale or shift (HSTU's F.layer_norm without weights)."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)
