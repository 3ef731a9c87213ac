"""HSTU's relative attention bias over positions and log-bucketed time gaps (papers.md §3.1).

    rab[b, i, j] = w_pos[(P - 1) + j - i] + w_ts[bucket(t_query[b, i] - t_key[b, j])]
    bucket(dt)   = clamp(floor(ln(max(|dt|, 1)) / 0.301), 0, num_buckets - 1)

`t_query[b, i]` is the timestamp of the item position i predicts (the next slot; for the last
real position, the target's), `t_key[b, j]` is the timestamp of item j. The log base is e and the
divisor 0.301 (≈ log10 2), exactly as the reference code has it, so a bucket spans a factor
≈ 1.35 in time.

The module only owns the parameters; `RelativeBias` carries them with the timestamps to the one
attention entry point, which either materialises the dense [B, Lq, Lk] bias (XLA backend) or
hands the tables to the Pallas kernel, which computes the bias on the fly.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

TIME_BUCKET_DIVISOR = 0.301


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RelativeBias:
  pos_weights: jax.Array | None          # [2P - 1]
  ts_weights: jax.Array | None           # [num_buckets]
  query_times: jax.Array | None = None   # [B, Lq] int seconds
  key_times: jax.Array | None = None     # [B, Lk] int seconds


def time_buckets(query_times_BQ: jax.Array, key_times_BK: jax.Array, num_buckets: int) -> jax.Array:
  """[B, Lq, Lk] int32 bucket of |t_query - t_key|."""
  dt = jnp.abs(query_times_BQ[:, :, None] - key_times_BK[:, None, :]).astype(jnp.float32)
  log_dt = jnp.log(jnp.maximum(dt, 1.0))
  # A true float32 division, as the reference's `log(dt) / 0.301`: XLA rewrites x / c into
  # x * (1 / c), which rounds up to the next bucket at some gaps next to a bucket edge (13 of the
  # 450 integer gaps within ±3 of an edge; tests/models/test_reference_parity.py). The barrier
  # hides the divisor from that rewrite; the log costs far more than the divide.
  divisor = jax.lax.optimization_barrier(jnp.full_like(log_dt, TIME_BUCKET_DIVISOR))
  return jnp.clip(jnp.floor(log_dt / divisor), 0, num_buckets - 1).astype(jnp.int32)


def position_bias(pos_weights: jax.Array, len_q: int, len_k: int) -> jax.Array:
  """[Lq, Lk] w_pos[(P - 1) + j - i], the offset clamped into the table."""
  p = (pos_weights.shape[0] + 1) // 2
  offset = jnp.arange(len_k)[None, :] - jnp.arange(len_q)[:, None] + (p - 1)
  return pos_weights[jnp.clip(offset, 0, pos_weights.shape[0] - 1)]


def materialize(bias: RelativeBias, len_q: int, len_k: int) -> jax.Array:
  """Dense bias, [1 or B, Lq, Lk]."""
  out = jnp.zeros((1, len_q, len_k), jnp.float32)
  if bias.pos_weights is not None:
    out = out + position_bias(bias.pos_weights, len_q, len_k)[None]
  if bias.ts_weights is not None:
    buckets = time_buckets(bias.query_times, bias.key_times, bias.ts_weights.shape[0])
    out = out + bias.ts_weights[buckets]
  return out


class RelativeBucketedTimeAndPositionBias(nn.Module):
  """Per-layer bias tables (shared by the layer's heads), initialised N(0, 0.02²)."""
  max_len: int                 # P: the padded width the position table covers
  num_time_buckets: int = 129
  use_position: bool = True
  use_time: bool = True

  @nn.compact
  def __call__(self, query_times=None, key_times=None) -> RelativeBias:
    init = nn.initializers.normal(0.02)
    pos = self.param("pos_weights", init, (2 * self.max_len - 1,)) if self.use_position else None
    ts = None
    if self.use_time:
      if query_times is None or key_times is None:
        raise ValueError("time bias is on but no timestamps were given; set use_time_bias=False "
                         "for datasets without timestamps")
      ts = self.param("ts_weights", init, (self.num_time_buckets,))
    return RelativeBias(pos, ts, query_times if self.use_time else None,
                        key_times if self.use_time else None)
