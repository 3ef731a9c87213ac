"""Kunlun's attention flavours on the shared kernel family (papers.md 1.3-1.5).

* `gdpa`: Generalized Dot-Product Attention, act(q k^T / tau) v, as
  cross-attention with long queries (the sequence, Lq ~ 1k) over short,
  context-generated keys/values (Lk ~ 32).
* `seed_pooling_attention`: learned seed queries (Lq ~ 32-256, shared by the
  batch) attending over a jagged key sequence.
* `sliding_window_attention`: self-attention restricted to |i - j| < window
  (or i - j < window when causal), any activation.

All three are thin shape-checking wrappers over
`pallas_kernels.hstu_attention.hstu_attention` (the Pallas kernels: forward,
dQ and dK/dV, `jax.custom_vjp`), each with a `*_reference` beside it that runs
the same wrapper over the dense XLA reference.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from pallas_kernels.common import BlockSizes
from pallas_kernels.hstu_attention import (hstu_attention,
                                           hstu_attention_reference)
from pallas_kernels.mask import MaskSpec

__all__ = [
    "BlockSizes", "gdpa", "gdpa_reference", "seed_pooling_attention",
    "seed_pooling_attention_reference", "sliding_window_attention",
    "sliding_window_attention_reference",
]

# GDPA's keys are short: one 32-key tile per query block, and the dK/dV pass
# loops over all query blocks for its single key block.
GDPA_BLOCK_SIZES = BlockSizes(block_q=64, block_k=32, block_q_dkv=64,
                              block_k_dkv=32, block_q_dq=64, block_k_dq=32)


def _check_cross(q: jax.Array, k: jax.Array, v: jax.Array, what: str):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(
        f"{what}: q, k, v must be [B, L, H, D]; got q.shape={q.shape}, "
        f"k.shape={k.shape}, v.shape={v.shape}.")


def _gdpa(impl: Callable, q, k, v, q_lengths, kv_lengths, tau, activation,
          block_sizes, interpret):
  _check_cross(q, k, v, "gdpa")
  if not tau > 0:
    raise ValueError(f"gdpa: tau must be > 0, got {tau}.")
  if activation == "softmax":
    raise ValueError("gdpa: activation must be pointwise (GDPA replaces "
                     "softmax); use hstu_attention for softmax.")
  return impl(q, k, v, mask=MaskSpec(causal=False), scale=1.0,
              alpha=1.0 / tau, q_lengths=q_lengths, kv_lengths=kv_lengths,
              activation=activation, block_sizes=block_sizes,
              interpret=interpret)


def gdpa(q: jax.Array, k: jax.Array, v: jax.Array, *,
         tau: float,
         q_lengths: jax.Array | None = None,
         kv_lengths: jax.Array | None = None,
         activation: str = "silu",
         block_sizes: BlockSizes = GDPA_BLOCK_SIZES,
         interpret: bool = False) -> jax.Array:
  """GDPA: out = act(q k^T / tau) v over the valid keys.

  Args:
    q: [B, Lq, H, Dqk] sequence queries (Lq long, e.g. 1k).
    k: [B, Lk, H, Dqk] context-generated keys (Lk short, e.g. 32).
    v: [B, Lk, H, Dv] context-generated values.
    tau: temperature (Kunlun uses the max sequence length).
    q_lengths: [B] valid queries (rows beyond are zero); None = all.
    kv_lengths: [B] valid keys; None = all.
    activation: "silu", "gelu", "relu" or "identity".
    block_sizes: tile sizes; blocks shrink to short sequences automatically.
    interpret: run in the Pallas interpreter (CPU).

  Returns:
    [B, Lq, H, Dv].
  """
  return _gdpa(hstu_attention, q, k, v, q_lengths, kv_lengths, tau,
               activation, block_sizes, interpret)


def gdpa_reference(q, k, v, *, tau, q_lengths=None, kv_lengths=None,
                   activation="silu", block_sizes=GDPA_BLOCK_SIZES,
                   interpret=False):
  """Dense XLA version of `gdpa` (same signature)."""
  return _gdpa(hstu_attention_reference, q, k, v, q_lengths, kv_lengths, tau,
               activation, block_sizes, interpret)


def _seed_pooling(impl: Callable, seeds, k, v, kv_lengths, activation, alpha,
                  scale, block_sizes, interpret):
  if seeds.ndim == 3:
    # One set of learned seeds for the whole batch; autodiff of the
    # broadcast sums the seed gradient over the batch.
    seeds = jnp.broadcast_to(seeds[None], (k.shape[0],) + seeds.shape)
  _check_cross(seeds, k, v, "seed_pooling_attention")
  if alpha is None:
    alpha = 1.0 / math.sqrt(seeds.shape[-1])
  return impl(seeds, k, v, mask=MaskSpec(causal=False), scale=scale,
              alpha=alpha, kv_lengths=kv_lengths, activation=activation,
              block_sizes=block_sizes, interpret=interpret)


def seed_pooling_attention(seeds: jax.Array, k: jax.Array, v: jax.Array,
                           kv_lengths: jax.Array | None = None, *,
                           activation: str = "softmax",
                           alpha: float | None = None,
                           scale: float = 1.0,
                           block_sizes: BlockSizes = BlockSizes(),
                           interpret: bool = False) -> jax.Array:
  """Seed queries pooling a jagged sequence (PMA / hierarchical seed pooling).

  Args:
    seeds: [S, H, Dqk] learned seeds shared by the batch, or [B, S, H, Dqk].
    k: [B, Lk, H, Dqk] sequence keys.
    v: [B, Lk, H, Dv] sequence values.
    kv_lengths: [B] valid keys per sequence; None = all.
    activation: "softmax" (PMA) or a pointwise activation (GDPA style).
    alpha: score scale; None means 1 / sqrt(Dqk).
    scale: output scale.
    block_sizes, interpret: as in `hstu_attention`.

  Returns:
    [B, S, H, Dv]. Sequences with no valid key pool to zeros.
  """
  return _seed_pooling(hstu_attention, seeds, k, v, kv_lengths, activation,
                       alpha, scale, block_sizes, interpret)


def seed_pooling_attention_reference(seeds, k, v, kv_lengths=None, *,
                                     activation="softmax", alpha=None,
                                     scale=1.0, block_sizes=BlockSizes(),
                                     interpret=False):
  """Dense XLA version of `seed_pooling_attention` (same signature)."""
  return _seed_pooling(hstu_attention_reference, seeds, k, v, kv_lengths,
                       activation, alpha, scale, block_sizes, interpret)


def _sliding_window(impl: Callable, q, k, v, lengths, window, causal,
                    activation, alpha, scale, block_sizes, interpret):
  if q.shape[1] != k.shape[1]:
    raise ValueError(
        "sliding_window_attention is self-attention: q.shape[1] must equal "
        f"k.shape[1]; got q.shape={q.shape}, k.shape={k.shape}.")
  if alpha is None:
    alpha = 1.0 / math.sqrt(q.shape[-1])
  return impl(q, k, v, lengths, mask=MaskSpec(causal=causal,
                                             local_window=window),
              scale=scale, alpha=alpha, activation=activation,
              block_sizes=block_sizes, interpret=interpret)


def sliding_window_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                             lengths: jax.Array | None = None, *,
                             window: int,
                             causal: bool = False,
                             activation: str = "softmax",
                             alpha: float | None = None,
                             scale: float = 1.0,
                             block_sizes: BlockSizes = BlockSizes(),
                             interpret: bool = False) -> jax.Array:
  """Self-attention over |i - j| < window (i - j < window if causal).

  Args:
    q: [B, L, H, Dqk]; k: [B, L, H, Dqk]; v: [B, L, H, Dv].
    lengths: [B] valid tokens; None = all.
    window: w >= 1. Cost is O(L * w): tiles outside the band are skipped.
    causal: also require j <= i.
    activation, alpha, scale, block_sizes, interpret: as in `hstu_attention`
      (alpha None means 1 / sqrt(Dqk)).

  Returns:
    [B, L, H, Dv].
  """
  return _sliding_window(hstu_attention, q, k, v, lengths, window, causal,
                         activation, alpha, scale, block_sizes, interpret)


def sliding_window_attention_reference(q, k, v, lengths=None, *, window,
                                       causal=False, activation="softmax",
                                       alpha=None, scale=1.0,
                                       block_sizes=BlockSizes(),
                                       interpret=False):
  """Dense XLA version of `sliding_window_attention` (same signature)."""
  return _sliding_window(hstu_attention_reference, q, k, v, lengths, window,
                         causal, activation, alpha, scale, block_sizes,
                         interpret)
