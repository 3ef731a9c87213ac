"""SASRec (Kang & McAuley, ICDM 2018) as in the HSTU reference code (papers.md §3.5 items 19-21).

Per block:  Q = LN(x);  a = MHA(Q, x, x) (causal softmax, dropout on weights);  z = LN(Q + a);
            x' = [z + Drop(W2 · Drop(ReLU(W1 z + b1)) + b2)] · 1[id ≠ 0]
LayerNorms use eps 1e-8 and no affine; no final norm. Trained with the same sampled softmax as HSTU.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import attention
from recjax.layers.dropout import Dropout
from recjax.layers.embeddings import sequence_inputs, truncated_normal
from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.sid_embedding import item_embedding_layer


# torch.nn.init.xavier_normal_ draws from an untruncated normal (flax's xavier_normal truncates).
_xavier_normal = nn.initializers.variance_scaling(1.0, "fan_avg", "normal")


def _in_proj_init(key, shape, dtype=jnp.float32):
  """xavier-normal of one of the three [d, d] slices of torch's fused [3d, d] MHA in_proj."""
  fan_in, fan_out = shape[0], 3 * shape[1]
  return jax.random.normal(key, shape, dtype) * math.sqrt(2.0 / (fan_in + fan_out))


class SASRecBlock(nn.Module):
  dim: int
  num_heads: int
  ffn_dim: int
  dropout: float
  backend: str
  attention_tiling: bool | str

  @nn.compact
  def __call__(self, x_BLD, valid_BL1, lengths_B, *, train: bool):
    b, l, d = x_BLD.shape
    h = self.num_heads
    dense = lambda n, name, init=_xavier_normal: nn.Dense(n, kernel_init=init, name=name)
    q_BLD = layer_norm_no_affine(x_BLD, 1e-8)
    # The reference's torch MultiheadAttention holds q, k, v as one [3d, d] in_proj: xavier-normal over
    # that fused matrix gives std sqrt(2 / (d + 3d)) (0.1 at d = 50), not the 0.141 of three [d, d].
    q = dense(d, "query", _in_proj_init)(q_BLD).reshape(b, l, h, d // h)
    k = dense(d, "key", _in_proj_init)(x_BLD).reshape(b, l, h, d // h)
    v = dense(d, "value", _in_proj_init)(x_BLD).reshape(b, l, h, d // h)
    use_dropout = train and self.dropout > 0
    a = attention(q, k, v, lengths_B=lengths_B, mask=MaskSpec(causal=True), kind="softmax",
                  alpha=1.0 / math.sqrt(d // h), backend=self.backend,
                  tiling=self.attention_tiling,
                  dropout_rate=self.dropout if use_dropout else 0.0,
                  dropout_rng=self.make_rng("dropout") if use_dropout else None)
    a = dense(d, "attn_out")(a.reshape(b, l, d))
    z = layer_norm_no_affine(q_BLD + a, 1e-8)
    drop = Dropout(self.dropout, deterministic=not train)
    bias_init = lambda key, shape, dtype=jnp.float32: jax.random.uniform(
        key, shape, dtype, -1 / math.sqrt(d), 1 / math.sqrt(d))
    f = nn.Dense(self.ffn_dim, kernel_init=_xavier_normal, bias_init=bias_init,
                 name="ffn_in")(z)
    f = nn.Dense(d, kernel_init=_xavier_normal, bias_init=bias_init,
                 name="ffn_out")(drop(jax.nn.relu(f)))
    return (z + drop(f)) * valid_BL1


class SASRec(nn.Module):
  """SASRec encoder. Batch fields: `ids` [B, L], `lengths` [B]. Returns (outputs, item table)."""
  num_items: int
  dim: int = 50
  num_blocks: int = 2
  num_heads: int = 1
  ffn_dim: int = 50
  max_len: int = 200
  dropout: float = 0.2
  backend: str = "xla"
  attention_tiling: bool | str = "auto"   # XLA path: skip hidden tiles; "auto": on the CPU backend
  item_table: str = "id"          # "id": a [V, D] row per item | "sid": Semantic-ID token tables
  sid_combine: str = "sum"        # "sid": sum of the level rows | "concat" then project
  sid_residual_size: int = 0      # "sid": rows of a hashed-id residual table (0 = none)
  sid_tokens: Any = None          # "sid": a layers.sid_embedding.SIDTokens (the task builds it)

  def setup(self):
    self.item_embedding = item_embedding_layer(self.item_table, self.num_items, self.dim, self.sid_tokens,
                                               self.sid_combine, self.sid_residual_size)
    self.position_embedding = self.param("position_embedding", truncated_normal(math.sqrt(1.0 / self.dim)),
                                         (self.max_len, self.dim))
    self.input_dropout = Dropout(self.dropout)
    self.blocks = [SASRecBlock(self.dim, self.num_heads, self.ffn_dim, self.dropout, self.backend, self.attention_tiling,
                               name=f"block_{i}") for i in range(self.num_blocks)]

  def __call__(self, batch, *, train: bool = False):
    x, valid_BL1 = sequence_inputs(self.item_embedding, self.position_embedding, batch["ids"],
                                   self.input_dropout, train=train)
    for block in self.blocks:
      x = block(x, valid_BL1, batch["lengths"], train=train)
    return x, self.item_embedding.item_table()
