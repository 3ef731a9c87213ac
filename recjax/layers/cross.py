"""DCNv2's cross network (Wang et al., WWW 2021, "DCN V2", eq. 1):

    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l          W_l [F, F] full rank, b_l [F]

on flat feature vectors x [..., F]. Each layer adds one degree of explicit feature crossing; the
residual keeps the lower degrees. (The paper's low-rank mixture of experts variant is not built.)
"""
from __future__ import annotations

import flax.linen as nn
import jax


class CrossLayer(nn.Module):
  """x0, x [..., F] -> x0 * (W x + b) + x."""

  @nn.compact
  def __call__(self, x0: jax.Array, x: jax.Array) -> jax.Array:
    if x0.shape != x.shape:
      raise ValueError(f"cross layer: x0 {x0.shape} and x {x.shape} must have the same shape")
    return x0 * nn.Dense(x.shape[-1], name="dense")(x) + x


class CrossNetwork(nn.Module):
  """x0 [..., F] -> x_L [..., F] after `num_layers` cross layers."""
  num_layers: int

  @nn.compact
  def __call__(self, x0: jax.Array) -> jax.Array:
    if self.num_layers < 1:
      raise ValueError(f"cross network needs num_layers >= 1, got {self.num_layers}")
    x = x0
    for i in range(self.num_layers):
      x = CrossLayer(name=f"cross_{i}")(x0, x)
    return x


__all__ = ["CrossLayer", "CrossNetwork"]
