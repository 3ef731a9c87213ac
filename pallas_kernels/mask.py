"""Attention masks for the recjax kernel family: one spec, three consumers.

A `MaskSpec` describes which (query i, key j) pairs of a self-attention are
visible. The same spec is turned into

* a dense boolean mask `[B, Lq, Lk]` in plain jnp (`dense_mask`), used by the
  XLA path of the model library and by the `*_reference` functions;
* per-element masks for one `[block_q, block_k]` tile inside a Pallas kernel
  (`element_mask`, the same code as `dense_mask` on smaller index arrays);
* per-block metadata: for each query block, the key blocks worth visiting
  (`kv_block_ranges`), and for each key block, the query blocks worth visiting
  (`q_block_ranges`, used by the dK/dV backward kernel). `block_metadata` runs
  these on the host (numpy) and also classifies every tile as empty, partial or
  fully visible.

Semantics, for query row i and key column j of sequence b, with n = length[b]
valid tokens and T = num_targets[b] target tokens at the end (h = n - T is the
first target position):

* padding: i >= q_len or j >= kv_len is never visible (and never computed);
* causal: j <= i;
* local window K1 (`local_window`): causal: i - j < K1; non-causal: |i - j| < K1;
* global prefix K2 (`global_prefix`): with a local window, keys j < K2 are also
  visible (semi-local attention = local OR global, ULTRA-HSTU), still subject to
  causality when `causal`;
* contextual prefix C: keys j < C are visible from every valid row (so the
  first C tokens see each other and are seen by all);
* targets: a target row i >= h sees every history key j < h and itself, and no
  other target; a history row never sees a target key. Target rows ignore the
  local window (as in HSTU's M-FALCON and TorchEasyRec's semi-local mask).

ULTRA-HSTU's semi-local attention (SLA) on the layout [context C | history |
candidates T] is `MaskSpec(local_window=K1, global_prefix=K2,
contextual_prefix=C, num_targets=T)`: K1 keys counted with the diagonal and K2
global columns counted from position 0 (TorchEasyRec's port; the paper's
transcribed mask has inclusive bounds, i.e. K1 + 1 and K2 + 1 of ours). A
candidate sees the whole history, not just its window: its cost is T * L,
linear in L, and it is the row that scores. The model library also evaluates
this mask blockwise on its XLA path; tests/pallas_kernels/test_sla_mask.py
checks the consumers against the per-pair definition.

The block ranges are closed-form in (block start, block end, lengths, spec), so
the kernels evaluate the very same functions on device with traced lengths:
that keeps jagged lengths and per-sequence target counts exact, which a static
host table could only approximate. `block_metadata` is the host-side view of
the same numbers (for tests, the benchmark's tile-density column and for
choosing block sizes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """Static description of a (self-)attention mask; hashable, so jit-static.

  Attributes:
    causal: key j is visible from query i only if j <= i.
    local_window: K1; with `causal`, key j is visible if i - j < K1, otherwise
      if |i - j| < K1 (sliding window). None means no window.
    global_prefix: K2; keys j < K2 are visible in addition to the local window
      (semi-local attention). Only meaningful together with `local_window`.
    contextual_prefix: C; keys j < C are visible from every row.
    num_targets: number of target tokens at the end of every sequence. A
      per-sequence `[B]` array passed to the attention functions overrides it.
  """
  causal: bool = True
  local_window: int | None = None
  global_prefix: int | None = None
  contextual_prefix: int = 0
  num_targets: int = 0

  def __post_init__(self):
    if self.local_window is not None and self.local_window < 1:
      raise ValueError(
          f"local_window must be >= 1 or None, got {self.local_window}.")
    if self.global_prefix is not None and self.global_prefix < 0:
      raise ValueError(
          f"global_prefix must be >= 0 or None, got {self.global_prefix}.")
    if self.contextual_prefix < 0:
      raise ValueError(
          f"contextual_prefix must be >= 0, got {self.contextual_prefix}.")
    if self.num_targets < 0:
      raise ValueError(f"num_targets must be >= 0, got {self.num_targets}.")

  @property
  def is_positional(self) -> bool:
    """Whether the mask depends on positions (so needs Lq == Lk)."""
    return (self.causal or self.local_window is not None
            or self.contextual_prefix > 0 or self.num_targets > 0)


def _xp(*xs: Any):
  """numpy for host-side values, jnp as soon as one value is traced."""
  if any(isinstance(x, jax.Array) for x in xs):
    return jnp
  return np


def _floordiv(a, b: int):
  """a // b for non-negative a; lax.div on traced ints (the Triton lowering
  handles lax.div directly, while jnp's floor_divide adds sign fix-ups)."""
  if isinstance(a, jax.Array):
    return jax.lax.div(a, jnp.asarray(b, a.dtype))
  return a // b


def _cdiv(a, b: int):
  return _floordiv(a + b - 1, b)


def element_mask(spec: MaskSpec, rows, cols, q_len, kv_len, hist_end,
                 has_targets: bool):
  """Visibility of (rows, cols) pairs; all arguments broadcast together.

  Args:
    spec: the mask spec.
    rows: int query positions, e.g. [bq, 1] inside a kernel or [1, Lq, 1].
    cols: int key positions, e.g. [1, bk] or [1, 1, Lk].
    q_len: number of valid queries (scalar or [B, 1, 1]).
    kv_len: number of valid keys (same shape as q_len).
    hist_end: first target position h = kv_len - num_targets; ignored unless
      `has_targets`.
    has_targets: static; False drops the target logic entirely.

  Returns:
    bool array of the broadcast shape.
  """
  xp = _xp(rows, cols, q_len, kv_len, hist_end)
  visible = (rows >= 0) & (cols >= 0)  # an all-True array of the right shape
  if spec.causal:
    visible = cols <= rows
  if spec.local_window is not None:
    if spec.causal:
      in_window = rows - cols < spec.local_window
    else:
      in_window = xp.abs(rows - cols) < spec.local_window
    if spec.global_prefix:
      in_window = in_window | (cols < spec.global_prefix)
    visible = visible & in_window
  if spec.contextual_prefix:
    visible = visible | (cols < spec.contextual_prefix)
  if has_targets:
    target_row = rows >= hist_end
    history_col = cols < hist_end
    visible = xp.where(target_row, history_col | (cols == rows),
                       visible & history_col)
  return visible & (rows < q_len) & (cols < kv_len)


def dense_mask(spec: MaskSpec, lengths: jax.Array | None, Lq: int, Lk: int, *,
               kv_lengths: jax.Array | None = None,
               num_targets: jax.Array | None = None) -> jax.Array:
  """Dense visibility mask in plain jnp (the XLA path).

  Args:
    spec: the mask spec.
    lengths: [B] int, valid tokens per sequence (queries, and keys unless
      `kv_lengths` is given). None means all Lq queries are valid (B = 1).
    Lq: padded query length.
    Lk: padded key length.
    kv_lengths: [B] int, valid keys per sequence, for cross-attention.
    num_targets: [B] int, per-sequence targets; overrides spec.num_targets.

  Returns:
    bool [B, Lq, Lk].
  """
  if spec.is_positional and Lq != Lk:
    raise ValueError(
        f"Positional masks ({spec}) need self-attention, got Lq={Lq}, Lk={Lk}.")
  if lengths is None:
    q_len = jnp.full((1,), Lq, jnp.int32)
  else:
    q_len = jnp.asarray(lengths, jnp.int32)
  if kv_lengths is None:
    kv_len = q_len if lengths is not None else jnp.full((1,), Lk, jnp.int32)
  else:
    kv_len = jnp.asarray(kv_lengths, jnp.int32)
  q_len, kv_len = jnp.broadcast_arrays(q_len, kv_len)
  has_targets = num_targets is not None or spec.num_targets > 0
  if num_targets is None:
    num_targets = jnp.full_like(kv_len, spec.num_targets)
  hist_end = kv_len - jnp.minimum(jnp.asarray(num_targets, jnp.int32), kv_len)
  rows = jnp.arange(Lq, dtype=jnp.int32)[None, :, None]
  cols = jnp.arange(Lk, dtype=jnp.int32)[None, None, :]
  return element_mask(spec, rows, cols, q_len[:, None, None],
                      kv_len[:, None, None], hist_end[:, None, None],
                      has_targets)


def kv_block_ranges(spec: MaskSpec, q_start, q_end, q_len, kv_len, hist_end,
                    has_targets: bool, block_k: int):
  """Key blocks that one query block [q_start, q_end) must visit.

  The visible keys of a query block are the union of a prefix [0, p) (global
  and contextual prefixes, and all history for target rows) and a band around
  the diagonal. Returned as two disjoint, ordered half-open block intervals so
  a kernel runs two loops and never visits a fully masked tile in between.

  Works on Python/numpy ints (host) and traced int32 scalars (kernel).

  Returns:
    ((lo0, hi0), (lo1, hi1)): key-block intervals, hi >= lo.
  """
  xp = _xp(q_start, q_end, q_len, kv_len, hist_end)
  # An empty query block (all padding) visits nothing.
  kv_len = xp.where(q_start < q_len, kv_len, 0)
  if spec.local_window is None:
    hi = xp.minimum(q_end, kv_len) if spec.causal else kv_len
    if spec.contextual_prefix:
      hi = xp.maximum(hi, xp.minimum(spec.contextual_prefix, kv_len))
    return (0, 0), (0, _cdiv(hi, block_k))
  prefix = spec.contextual_prefix
  if spec.global_prefix:
    g = (xp.minimum(spec.global_prefix, q_end) if spec.causal
         else spec.global_prefix)
    prefix = xp.maximum(prefix, g)
  if has_targets:
    prefix = xp.where(q_end > hist_end, xp.maximum(prefix, hist_end), prefix)
  prefix = xp.minimum(prefix, kv_len)
  band_lo = xp.maximum(q_start - spec.local_window + 1, 0)
  band_hi = (q_end if spec.causal else q_end + spec.local_window - 1)
  band_hi = xp.minimum(band_hi, kv_len)
  hi0 = _cdiv(prefix, block_k)
  lo1 = xp.maximum(_floordiv(band_lo, block_k), hi0)
  hi1 = xp.maximum(_cdiv(band_hi, block_k), lo1)
  return (0, hi0), (lo1, hi1)


def q_block_ranges(spec: MaskSpec, k_start, k_end, q_len, kv_len, hist_end,
                   has_targets: bool, block_q: int):
  """Query blocks that see any key of one key block [k_start, k_end).

  The transpose of `kv_block_ranges`: a band of rows around the diagonal plus
  a suffix of rows [s, q_len) (every row for contextual keys, rows >= j for
  global keys, target rows for history keys). Used by the dK/dV kernel.

  Returns:
    ((lo0, hi0), (lo1, hi1)): query-block intervals, hi >= lo.
  """
  xp = _xp(k_start, k_end, q_len, kv_len, hist_end)
  q_len = xp.where(k_start < kv_len, q_len, 0)
  n_blocks = _cdiv(q_len, block_q)
  if spec.local_window is None:
    lo = k_start if spec.causal else 0
    if spec.contextual_prefix:
      lo = xp.where(k_start < spec.contextual_prefix, 0, lo)
    lo_blk = xp.minimum(_floordiv(lo, block_q), n_blocks)
    return (0, 0), (lo_blk, n_blocks)
  band_lo = (k_start if spec.causal
             else xp.maximum(k_start - spec.local_window + 1, 0))
  band_hi = xp.minimum(k_end + spec.local_window - 1, q_len)
  suffix = q_len
  if spec.global_prefix:
    suffix = xp.where(k_start < spec.global_prefix,
                      k_start if spec.causal else 0, suffix)
  if has_targets:
    suffix = xp.where(k_start < hist_end, xp.minimum(suffix, hist_end), suffix)
  if spec.contextual_prefix:
    suffix = xp.where(k_start < spec.contextual_prefix, 0, suffix)
  suffix_blk = xp.minimum(_floordiv(suffix, block_q), n_blocks)
  lo0 = xp.minimum(_floordiv(band_lo, block_q), n_blocks)
  hi0 = xp.maximum(xp.minimum(_cdiv(band_hi, block_q), suffix_blk), lo0)
  # If the suffix starts inside the band, the band's tail is covered by it.
  lo1 = xp.maximum(suffix_blk, hi0)
  return (lo0, hi0), (lo1, n_blocks)


EMPTY, PARTIAL, FULL = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class BlockMetadata:
  """Host-side per-tile view of a mask (numpy).

  Attributes:
    tiles: int8 [B, nq, nk]: EMPTY, PARTIAL or FULL (no element masked).
    kv_ranges: int32 [B, nq, 2, 2]: key-block intervals each query block
      visits (what the forward and dQ kernels loop over).
    q_ranges: int32 [B, nk, 2, 2]: query-block intervals each key block
      visits (what the dK/dV kernel loops over).
  """
  tiles: np.ndarray
  kv_ranges: np.ndarray
  q_ranges: np.ndarray

  def visited(self, transpose: bool = False) -> np.ndarray:
    """bool [B, nq, nk]: tiles a kernel visits (forward, or dK/dV)."""
    B, nq, nk = self.tiles.shape
    out = np.zeros((B, nq, nk), bool)
    ranges = self.q_ranges if transpose else self.kv_ranges
    for b in range(B):
      for r in range(ranges.shape[1]):
        for lo, hi in ranges[b, r]:
          if transpose:
            out[b, lo:hi, r] = True
          else:
            out[b, r, lo:hi] = True
    return out

  @property
  def density(self) -> float:
    """Fraction of tiles the forward kernel visits."""
    return float(self.visited().mean())


def block_metadata(spec: MaskSpec, Lq: int, Lk: int, block_q: int,
                   block_k: int, lengths=None, num_targets=None,
                   kv_lengths=None) -> BlockMetadata:
  """Per-tile metadata of `spec` for [Lq, Lk] scores, computed on the host.

  Args:
    spec: the mask spec.
    Lq, Lk: padded lengths (multiples of the block sizes are not required).
    block_q, block_k: tile sizes.
    lengths, num_targets, kv_lengths: optional [B] ints as in `dense_mask`;
      None means full-length sequences and spec.num_targets (B = 1).

  Returns:
    A `BlockMetadata`.
  """
  q_len = np.atleast_1d(np.asarray(Lq if lengths is None else lengths))
  kv_len = (q_len if kv_lengths is None and lengths is not None
            else np.atleast_1d(np.asarray(Lk if kv_lengths is None
                                          else kv_lengths)))
  q_len, kv_len = np.broadcast_arrays(q_len, kv_len)
  has_targets = num_targets is not None or spec.num_targets > 0
  T = np.broadcast_to(np.asarray(spec.num_targets if num_targets is None
                                 else num_targets), q_len.shape)
  hist_end = kv_len - np.minimum(T, kv_len)
  nq, nk = _cdiv(Lq, block_q), _cdiv(Lk, block_k)
  B = q_len.shape[0]
  dense = np.asarray(dense_mask(
      spec, q_len, nq * block_q, nk * block_k, kv_lengths=kv_len,
      num_targets=T if has_targets else None))
  tiles = dense.reshape(B, nq, block_q, nk, block_k).transpose(0, 1, 3, 2, 4)
  tile_any = tiles.any(axis=(-1, -2))
  tile_all = tiles.all(axis=(-1, -2))
  kinds = np.where(tile_all, FULL, np.where(tile_any, PARTIAL, EMPTY))
  kv_ranges = np.zeros((B, nq, 2, 2), np.int32)
  q_ranges = np.zeros((B, nk, 2, 2), np.int32)
  for b in range(B):
    args = (int(q_len[b]), int(kv_len[b]), int(hist_end[b]), has_targets)
    for i in range(nq):
      kv_ranges[b, i] = kv_block_ranges(spec, i * block_q, (i + 1) * block_q,
                                        *args, block_k)
    for j in range(nk):
      q_ranges[b, j] = q_block_ranges(spec, j * block_k, (j + 1) * block_k,
                                      *args, block_q)
  return BlockMetadata(kinds.astype(np.int8), kv_ranges, q_ranges)
