"""Token packing: the real tokens of a right-padded [B, L] batch as one dense [T, ...] array.

At the ML-1M shape (128 rows of width 200) only ≈ 54% of the slots hold a real token, so every
token-wise op (LayerNorm, projections, dropout, residual) run over the padded grid spends almost
half its time on padding. A `TokenLayout` lists the real slots row by row,

    token t  <->  slot b * L + i   for i < lengths[b], in row-major order,

padded with empty tokens up to a static capacity T (a bucket multiple, so that few shapes compile).
`pack` and `unpack` move rows between the grid [B * L, F] and the tokens [T, F]. Both are gathers,
and since the layout is a bijection between the real slots and the real tokens, the gradient of
each is the other gather: the backward never needs XLA's generic scatter-add. Empty tokens read
zeros from the grid, and padding slots read zeros from the tokens.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class TokenLayout(NamedTuple):
  """Where each real token of a right-padded [B, L] batch sits.

  token_slot_T: [T] int32, the flat slot b * L + i of token t; B * L (out of range) for empty tokens.
    It is also the row to pass to `hash_dropout(rows=...)` so a packed mask equals the padded one.
  slot_token_BL: [B, L] int32, the token of each slot; T (out of range) for padding slots.
  """
  token_slot_T: jax.Array
  slot_token_BL: jax.Array

  @property
  def capacity(self) -> int:
    return self.token_slot_T.shape[0]


def _raise_overflow(total, capacity):
  raise ValueError(f"token packing: the batch holds {int(total)} real tokens (sum of `lengths`) but the "
                   f"packed capacity is {int(capacity)} (batch['token_index'] length); the capacity must "
                   "cover every real input position")


def token_layout(lengths_B: jax.Array, seq_len: int, capacity: int) -> TokenLayout:
  """The packed layout of rows with `lengths_B` real tokens (right padding) in a width-`seq_len` grid.

  `capacity` (static) is T. A batch with more than T real tokens raises a ValueError when the
  computation runs (the check is a callback in a branch that only runs on overflow, so it costs
  nothing otherwise); values of `lengths_B` outside [0, seq_len] are clipped into it.
  """
  if capacity < 1:
    raise ValueError(f"token_layout needs capacity >= 1, got {capacity}")
  b = lengths_B.shape[0]
  lengths_B = jnp.clip(lengths_B.astype(jnp.int32), 0, seq_len)
  ends_B = jnp.cumsum(lengths_B)
  starts_B = ends_B - lengths_B
  total = ends_B[-1]
  jax.lax.cond(total > capacity, lambda: jax.debug.callback(_raise_overflow, total, capacity), lambda: None)
  pos_L = jnp.arange(seq_len, dtype=jnp.int32)
  slot_token_BL = jnp.where(pos_L[None, :] < lengths_B[:, None], starts_B[:, None] + pos_L[None, :], capacity)
  slot_token_BL = jnp.minimum(slot_token_BL, capacity)
  t_T = jnp.arange(capacity, dtype=jnp.int32)
  row_T = jnp.minimum(jnp.searchsorted(ends_B, t_T, side="right"), b - 1).astype(jnp.int32)
  token_slot_T = jnp.where(t_T < total, row_T * seq_len + t_T - starts_B[row_T], b * seq_len)
  return TokenLayout(token_slot_T.astype(jnp.int32), slot_token_BL.astype(jnp.int32))


def _take_rows(x, index):
  # Out-of-range indices (the layout's empty markers) read zeros.
  return jnp.take(x, index, axis=0, mode="fill", fill_value=0)


@jax.custom_vjp
def _gather_rows(x_NF, index_M, inverse_N):
  """x[index] (zeros where index is out of range), for an index that is injective on its in-range
  entries and whose inverse is `inverse_N` (out of range where no entry of `index` points)."""
  return _take_rows(x_NF, index_M)


def _gather_rows_fwd(x_NF, index_M, inverse_N):
  return _take_rows(x_NF, index_M), (index_M, inverse_N)


def _gather_rows_bwd(res, g_MF):
  index_M, inverse_N = res
  return _take_rows(g_MF, inverse_N), None, None


_gather_rows.defvjp(_gather_rows_fwd, _gather_rows_bwd)


def pack(x_BLF: jax.Array, layout: TokenLayout) -> jax.Array:
  """[B, L, ...] grid -> [T, ...] tokens (empty tokens are 0)."""
  b, l = layout.slot_token_BL.shape
  if x_BLF.shape[:2] != (b, l):
    raise ValueError(f"pack: array of shape {x_BLF.shape} does not match the layout's grid [{b}, {l}]")
  x_NF = x_BLF.reshape((b * l,) + x_BLF.shape[2:])
  return _gather_rows(x_NF, layout.token_slot_T, layout.slot_token_BL.reshape(-1))


def unpack(x_TF: jax.Array, layout: TokenLayout) -> jax.Array:
  """[T, ...] tokens -> [B, L, ...] grid (padding slots are 0)."""
  b, l = layout.slot_token_BL.shape
  if x_TF.shape[0] != layout.capacity:
    raise ValueError(f"unpack: array of shape {x_TF.shape} does not match the layout's {layout.capacity} tokens")
  x_NF = _gather_rows(x_TF, layout.slot_token_BL.reshape(-1), layout.token_slot_T)
  return x_NF.reshape((b, l) + x_TF.shape[1:])


def pack_reference(x_BLF, lengths_B) -> jax.Array:
  """The real tokens of x, row by row, with numpy-style boolean indexing (eager; for tests)."""
  l = x_BLF.shape[1]
  return x_BLF[jnp.arange(l)[None, :] < jnp.asarray(lengths_B)[:, None]]
