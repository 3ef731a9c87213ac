"""HSTU-style attention in Pallas (Triton lowering), forward and backward.

One op family covers the attention flavours of HSTU, ULTRA-HSTU and Kunlun:

  out[b, i, h] = scale * sum_j P[b, h, i, j] * v[b, j, h]
  s[b, h, i, j] = alpha * q[b, i, h] . k[b, j, h] + rab[b, i, j]

with P = act(s) * mask for a pointwise activation (silu, gelu, relu,
identity; HSTU: silu, alpha = 1, scale = 1 / N) or P = softmax over the visible
keys of s (activation="softmax", online / flash-style). The mask is a
`MaskSpec` (causal, local window, global prefix, contextual prefix, targets)
plus per-sequence lengths; tiles it fully masks are never visited.

The relative attention bias is computed inside the kernels from its tables,

  rab[b, i, j] = pos_weights[(P - 1) + j - i]
               + ts_weights[bucket(query_times[b, i] - key_times[b, j])],

and the backward pass returns gradients for both tables, accumulated with
atomic adds over all (b, h, i, j): one per entry for the positional table
(whose indices within a tile are spread over bq + bk - 1 diagonals), one per
distinct bucket per tile for the time table (`_add_by_value`).

Layout: q [B, Lq, H, Dqk], k [B, Lk, H, Dqk], v [B, Lk, H, Dv] ->
out [B, Lq, H, Dv]. Lengths are [B] int32 counts of valid tokens; rows and
keys at or beyond them are padding and produce zeros.

Kernels, all Triton-style (grid over (block, batch, head), a `fori_loop` over
the other sequence inside the program):
  * `hstu_attention_fwd`: per query block, loop over the visible key blocks.
  * `hstu_attention_bwd_dq`: per query block, recompute scores, accumulate dq.
  * `hstu_attention_bwd_dkdv`: per key block, loop over the query blocks that
    see it, accumulate dk, dv and scatter-add the bias-table gradients.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from pallas_kernels import common
from pallas_kernels.common import BlockSizes
from pallas_kernels.mask import MaskSpec, dense_mask, element_mask
from pallas_kernels.mask import kv_block_ranges, q_block_ranges

__all__ = [
    "BlockSizes", "MaskSpec", "hstu_attention", "hstu_attention_reference",
]

# Finite "minus infinity" for masked softmax scores: exp(mask - mask) stays
# finite for rows with nothing visible yet, and the select drops it.
_MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


@dataclasses.dataclass(frozen=True)
class _Config:
  """Everything static about one call; the nondiff argument of the VJP."""
  mask: MaskSpec
  activation: str
  alpha: float
  scale: float
  blocks: BlockSizes
  has_targets: bool
  num_pos: int  # length of pos_weights (2P - 1), 0 without positional bias
  num_buckets: int  # length of ts_weights, 0 without time bias
  interpret: bool

  @property
  def softmax(self) -> bool:
    return self.activation == "softmax"

  @property
  def has_ts(self) -> bool:
    return self.num_buckets > 0

  @property
  def has_pos(self) -> bool:
    return self.num_pos > 0


@dataclasses.dataclass
class _Bias:
  """Kernel refs of the optional relative bias (None where absent)."""
  pos_ref: object = None
  ts_ref: object = None
  qt_ref: object = None  # [Lq] int32 query times (full row)
  kt_ref: object = None  # [Lk] int32 key times (full row)


def _split_bias_refs(cfg: _Config, refs: list) -> _Bias:
  """Pops the bias refs, in the order `_bias_inputs` passes them."""
  bias = _Bias()
  if cfg.has_pos:
    bias.pos_ref = refs.pop(0)
  if cfg.has_ts:
    bias.ts_ref = refs.pop(0)
    bias.qt_ref = refs.pop(0)
    bias.kt_ref = refs.pop(0)
  return bias


def _seq_info(info_ref):
  """(q_len, kv_len, hist_end) scalars of this program's sequence."""
  return info_ref[0], info_ref[1], info_ref[2]


def _tile_scores(cfg: _Config, q, k, q_start, k_start, seq, bias: _Bias):
  """Scores and mask of one [bq, bk] tile.

  Args:
    q: [bq, Dqk] query tile; k: [bk, Dqk] key tile.
    q_start, k_start: first row / column of the tile.
    seq: (q_len, kv_len, hist_end) of the sequence.

  Returns:
    (s [bq, bk] f32, mask [bq, bk] bool, pos_idx or None, bucket or None).
  """
  bq, bk = q.shape[0], k.shape[0]
  s = jnp.dot(q, k.T, preferred_element_type=jnp.float32)
  if cfg.alpha != 1.0:
    s = s * cfg.alpha
  rows = q_start + jnp.arange(bq, dtype=jnp.int32)[:, None]
  cols = k_start + jnp.arange(bk, dtype=jnp.int32)[None, :]
  pos_idx = bucket = None
  if cfg.has_pos:
    pos_idx = common.pos_index(rows, cols, cfg.num_pos)
    s = s + bias.pos_ref[pos_idx]
  if cfg.has_ts:
    qt = bias.qt_ref[pl.ds(q_start, bq)]
    kt = bias.kt_ref[pl.ds(k_start, bk)]
    bucket = common.time_bucket(qt[:, None] - kt[None, :], cfg.num_buckets)
    s = s + bias.ts_ref[bucket]
  q_len, kv_len, hist_end = seq
  mask = element_mask(cfg.mask, rows, cols, q_len, kv_len, hist_end,
                      cfg.has_targets)
  return s, mask, pos_idx, bucket


def _loop_ranges(ranges, body, carry):
  """Runs body over two disjoint block intervals (prefix, then band)."""
  (lo0, hi0), (lo1, hi1) = ranges
  carry = lax.fori_loop(lo0, hi0, body, carry)
  return lax.fori_loop(lo1, hi1, body, carry)


# ----------------------------------------------------------------- forward


def _fwd_kernel(q_ref, k_ref, v_ref, info_ref, *refs, cfg: _Config):
  """One query block: q_ref [bq, Dqk], k_ref/v_ref the whole sequence."""
  refs = list(refs)
  bias = _split_bias_refs(cfg, refs)
  o_ref, *lse_ref = refs
  bq, bk = cfg.blocks.block_q, cfg.blocks.block_k
  q_start = pl.program_id(0) * bq
  seq = _seq_info(info_ref)
  q = q_ref[...]
  dv = o_ref.shape[-1]
  ranges = kv_block_ranges(cfg.mask, q_start, q_start + bq, *seq,
                           cfg.has_targets, bk)

  if cfg.softmax:
    def body(kb, carry):
      acc, m_prev, l_prev = carry
      k_start = kb * bk
      k = k_ref[pl.ds(k_start, bk), :]
      v = v_ref[pl.ds(k_start, bk), :]
      s, mask, _, _ = _tile_scores(cfg, q, k, q_start, k_start, seq, bias)
      s = jnp.where(mask, s, _MASK_VALUE)
      m_next = jnp.maximum(m_prev, jnp.max(s, axis=1))
      correction = jnp.exp(m_prev - m_next)
      # The select (not just exp of the mask value) keeps rows whose keys
      # are all masked so far at exactly zero weight.
      p = jnp.where(mask, jnp.exp(s - m_next[:, None]), 0.0)
      l_next = l_prev * correction + jnp.sum(p, axis=1)
      acc = acc * correction[:, None] + jnp.dot(
          p.astype(v.dtype), v, preferred_element_type=jnp.float32)
      return acc, m_next, l_next

    init = (jnp.zeros((bq, dv), jnp.float32),
            jnp.full((bq,), _MASK_VALUE, jnp.float32),
            jnp.zeros((bq,), jnp.float32))
    acc, m, l = _loop_ranges(ranges, body, init)
    seen = l > 0.0
    out = acc / jnp.where(seen, l, 1.0)[:, None]
    # Rows that saw no key (padding, empty sequences) get lse = 0; the
    # backward pass masks them out anyway.
    lse_ref[0][...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)),
                                0.0)
  else:
    act = common.activation_fn(cfg.activation)

    def body(kb, acc):
      k_start = kb * bk
      k = k_ref[pl.ds(k_start, bk), :]
      v = v_ref[pl.ds(k_start, bk), :]
      s, mask, _, _ = _tile_scores(cfg, q, k, q_start, k_start, seq, bias)
      p = jnp.where(mask, act(s), 0.0)
      return acc + jnp.dot(p.astype(v.dtype), v,
                           preferred_element_type=jnp.float32)

    out = _loop_ranges(ranges, body, jnp.zeros((bq, dv), jnp.float32))
  if cfg.scale != 1.0:
    out = out * cfg.scale
  o_ref[...] = out.astype(o_ref.dtype)


def _bias_inputs(cfg: _Config, pos, ts, qt, kt):
  """Bias arrays and their BlockSpecs (whole tables, whole time rows)."""
  arrays, specs = [], []
  if cfg.has_pos:
    arrays.append(pos)
    specs.append(pl.BlockSpec((cfg.num_pos,), lambda *_: (0,)))
  if cfg.has_ts:
    Lq, Lk = qt.shape[1], kt.shape[1]
    arrays += [ts, qt, kt]
    specs += [pl.BlockSpec((cfg.num_buckets,), lambda *_: (0,)),
              pl.BlockSpec((None, Lq), lambda i, b, h: (b, 0)),
              pl.BlockSpec((None, Lk), lambda i, b, h: (b, 0))]
  return arrays, specs


def _forward(q, k, v, info, pos, ts, qt, kt, cfg: _Config):
  """Runs the forward kernel; returns (out, lse or None)."""
  B, Lq, H, Dqk = q.shape
  Lk, Dv = k.shape[1], v.shape[-1]
  bq = cfg.blocks.block_q
  bias_arrays, bias_specs = _bias_inputs(cfg, pos, ts, qt, kt)
  in_specs = [
      pl.BlockSpec((None, bq, None, Dqk), lambda i, b, h: (b, i, h, 0)),
      pl.BlockSpec((None, Lk, None, Dqk), lambda i, b, h: (b, 0, h, 0)),
      pl.BlockSpec((None, Lk, None, Dv), lambda i, b, h: (b, 0, h, 0)),
      pl.BlockSpec((None, 4), lambda i, b, h: (b, 0)),
      *bias_specs,
  ]
  out_shape = [jax.ShapeDtypeStruct((B, Lq, H, Dv), q.dtype)]
  out_specs = [pl.BlockSpec((None, bq, None, Dv), lambda i, b, h: (b, i, h, 0))]
  if cfg.softmax:
    out_shape.append(jax.ShapeDtypeStruct((B, H, Lq), jnp.float32))
    out_specs.append(pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i)))
  outs = pl.pallas_call(
      functools.partial(_fwd_kernel, cfg=cfg),
      grid=(Lq // bq, B, H),
      in_specs=in_specs,
      out_specs=out_specs,
      out_shape=out_shape,
      compiler_params=cfg.blocks.compiler_params(max(Dqk, Dv)),
      interpret=cfg.interpret,
      name="hstu_attention_fwd",
  )(q, k, v, info, *bias_arrays)
  return outs[0], (outs[1] if cfg.softmax else None)


# ---------------------------------------------------------------- backward


def _tile_grad_scores(cfg: _Config, s, mask, do, v, lse, delta):
  """P (unscaled) and dS of one tile from the recomputed scores.

  Args:
    s, mask: [bq, bk] scores and mask; do: [bq, Dv]; v: [bk, Dv].
    lse, delta: [bq] softmax residuals (None for pointwise scores).

  Returns:
    p [bq, bk] with out = scale * p @ v, and ds = d loss / d s [bq, bk] f32.
  """
  dp = jnp.dot(do, v.T, preferred_element_type=jnp.float32)
  if cfg.scale != 1.0:
    dp = dp * cfg.scale
  if cfg.softmax:
    p = jnp.where(mask, jnp.exp(s - lse[:, None]), 0.0)
    ds = p * (dp - delta[:, None])
  else:
    p = jnp.where(mask, common.activation_fn(cfg.activation)(s), 0.0)
    ds = jnp.where(mask, dp * common.activation_grad(cfg.activation)(s), 0.0)
  return p, ds


def _bwd_dq_kernel(q_ref, k_ref, v_ref, info_ref, *refs, cfg: _Config):
  """One query block: dq = alpha * sum over visible key tiles of dS @ k."""
  refs = list(refs)
  bias = _split_bias_refs(cfg, refs)
  do_ref = refs.pop(0)
  lse = delta = None
  if cfg.softmax:
    lse = refs.pop(0)[...]
    delta = refs.pop(0)[...]
  (dq_ref,) = refs
  bq, bk = cfg.blocks.block_q_dq, cfg.blocks.block_k_dq
  q_start = pl.program_id(0) * bq
  seq = _seq_info(info_ref)
  q = q_ref[...]
  do = do_ref[...]
  ranges = kv_block_ranges(cfg.mask, q_start, q_start + bq, *seq,
                           cfg.has_targets, bk)

  def body(kb, dq):
    k_start = kb * bk
    k = k_ref[pl.ds(k_start, bk), :]
    v = v_ref[pl.ds(k_start, bk), :]
    s, mask, _, _ = _tile_scores(cfg, q, k, q_start, k_start, seq, bias)
    _, ds = _tile_grad_scores(cfg, s, mask, do, v, lse, delta)
    return dq + jnp.dot(ds.astype(k.dtype), k,
                        preferred_element_type=jnp.float32)

  dq = _loop_ranges(ranges, body, jnp.zeros(q.shape, jnp.float32))
  if cfg.alpha != 1.0:
    dq = dq * cfg.alpha
  dq_ref[...] = dq.astype(dq_ref.dtype)


def _add_by_value(table_ref, idx, ds, mask):
  """table[n] += sum of ds over the tile's entries with idx == n, for every n.

  One masked tile sum and one scalar atomic add per distinct index in the tile's range, not an
  atomic add per element. Why: a tile's time buckets take few distinct values (gaps are
  log-bucketed), so per-element atomics pile onto a handful of addresses and serialise. On an H200
  that made forward+backward with the time table 20-200x slower than the same kernel without it
  (L = 200 ... 4k), and 2x slower than the dense XLA path
  (results/bench/kernels_bias_ablation_nvidia_h200_per_element_ts_grad.json; after this change:
  kernels_bias_ablation_nvidia_h200.json). The loop runs over [min, max] of the visible entries' indices: near the diagonal
  up to ~50 buckets, a few far from it, none in a tile with no visible entry. Masked entries of ds
  are exact zeros, so the range only bounds the work.

  Args:
    table_ref: [N] f32 output table. idx: [bq, bk] int32 table index per entry, in [0, N).
    ds: [bq, bk] f32 gradient per entry. mask: [bq, bk] visible entries.
  """
  lo = jnp.min(jnp.where(mask, idx, jnp.int32(2**30)))
  hi = jnp.max(jnp.where(mask, idx, jnp.int32(-1)))

  def body(n, carry):
    total = jnp.sum(jnp.where(idx == n, ds, 0.0))
    jax.ref.addupdate(table_ref, n, total)
    return carry

  lax.fori_loop(lo, hi + 1, body, jnp.int32(0))


def _bwd_dkdv_kernel(q_ref, k_ref, v_ref, info_ref, *refs, cfg: _Config):
  """One key block: dk, dv over the query blocks that see it; bias grads."""
  refs = list(refs)
  bias = _split_bias_refs(cfg, refs)
  do_ref = refs.pop(0)
  lse_ref = delta_ref = None
  if cfg.softmax:
    lse_ref = refs.pop(0)
    delta_ref = refs.pop(0)
  # Bias-table gradients arrive as zero-filled inputs aliased to the outputs;
  # skip the inputs, keep the output refs.
  n_tables = int(cfg.has_pos) + int(cfg.has_ts)
  refs = refs[n_tables:]
  dk_ref, dv_ref, *table_refs = refs
  dpos_ref = table_refs.pop(0) if cfg.has_pos else None
  dts_ref = table_refs.pop(0) if cfg.has_ts else None
  bq, bk = cfg.blocks.block_q_dkv, cfg.blocks.block_k_dkv
  k_start = pl.program_id(0) * bk
  seq = _seq_info(info_ref)
  k = k_ref[...]
  v = v_ref[...]
  ranges = q_block_ranges(cfg.mask, k_start, k_start + bk, *seq,
                          cfg.has_targets, bq)

  def body(qb, carry):
    dk, dv = carry
    q_start = qb * bq
    q = q_ref[pl.ds(q_start, bq), :]
    do = do_ref[pl.ds(q_start, bq), :]
    lse = delta = None
    if cfg.softmax:
      lse = lse_ref[pl.ds(q_start, bq)]
      delta = delta_ref[pl.ds(q_start, bq)]
    s, mask, pos_idx, bucket = _tile_scores(cfg, q, k, q_start, k_start,
                                            seq, bias)
    p, ds = _tile_grad_scores(cfg, s, mask, do, v, lse, delta)
    dv = dv + jnp.dot(p.T.astype(do.dtype), do,
                      preferred_element_type=jnp.float32)
    dk = dk + jnp.dot(ds.T.astype(q.dtype), q,
                      preferred_element_type=jnp.float32)
    # d rab = dS, shared by all heads and sequences: scatter-add into the
    # tables (atomic adds on GPU; masked entries add exact zeros).
    if cfg.has_pos:
      jax.ref.addupdate(dpos_ref, pos_idx, ds)
    if cfg.has_ts:
      _add_by_value(dts_ref, bucket, ds, mask)
    return dk, dv

  dk, dv = _loop_ranges(ranges, body,
                        (jnp.zeros(k.shape, jnp.float32),
                         jnp.zeros(v.shape, jnp.float32)))
  if cfg.alpha != 1.0:
    dk = dk * cfg.alpha
  if cfg.scale != 1.0:
    dv = dv * cfg.scale
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _backward(q, k, v, info, pos, ts, qt, kt, out, lse, do, cfg: _Config):
  """Runs the dQ and dK/dV kernels; returns (dq, dk, dv, dpos, dts)."""
  B, Lq, H, Dqk = q.shape
  Lk, Dv = k.shape[1], v.shape[-1]
  params = cfg.blocks.compiler_params(max(Dqk, Dv))
  bias_arrays, bias_specs = _bias_inputs(cfg, pos, ts, qt, kt)
  softmax_arrays = []
  if cfg.softmax:
    # delta_i = sum_j P_ij dP_ij = do_i . out_i (out already includes scale).
    delta = jnp.einsum("bqhd,bqhd->bhq", do.astype(jnp.float32),
                       out.astype(jnp.float32))
    softmax_arrays = [lse, delta]

  # dQ: grid over query blocks, like the forward pass.
  bq = cfg.blocks.block_q_dq
  row_spec = pl.BlockSpec((None, None, bq), lambda i, b, h: (b, h, i))
  dq = pl.pallas_call(
      functools.partial(_bwd_dq_kernel, cfg=cfg),
      grid=(Lq // bq, B, H),
      in_specs=[
          pl.BlockSpec((None, bq, None, Dqk), lambda i, b, h: (b, i, h, 0)),
          pl.BlockSpec((None, Lk, None, Dqk), lambda i, b, h: (b, 0, h, 0)),
          pl.BlockSpec((None, Lk, None, Dv), lambda i, b, h: (b, 0, h, 0)),
          pl.BlockSpec((None, 4), lambda i, b, h: (b, 0)),
          *bias_specs,
          pl.BlockSpec((None, bq, None, Dv), lambda i, b, h: (b, i, h, 0)),
          *([row_spec, row_spec] if cfg.softmax else []),
      ],
      out_specs=pl.BlockSpec((None, bq, None, Dqk),
                             lambda i, b, h: (b, i, h, 0)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=params,
      interpret=cfg.interpret,
      name="hstu_attention_bwd_dq",
  )(q, k, v, info, *bias_arrays, do, *softmax_arrays)

  # dK/dV: grid over key blocks, loop over the query blocks that see them.
  bk = cfg.blocks.block_k_dkv
  full_row_spec = pl.BlockSpec((None, None, Lq), lambda j, b, h: (b, h, 0))
  table_arrays, table_specs = [], []
  if cfg.has_pos:
    table_arrays.append(jnp.zeros((cfg.num_pos,), jnp.float32))
    table_specs.append(pl.BlockSpec((cfg.num_pos,), lambda *_: (0,)))
  if cfg.has_ts:
    table_arrays.append(jnp.zeros((cfg.num_buckets,), jnp.float32))
    table_specs.append(pl.BlockSpec((cfg.num_buckets,), lambda *_: (0,)))
  in_arrays = [q, k, v, info, *bias_arrays, do, *softmax_arrays,
               *table_arrays]
  first_table = len(in_arrays) - len(table_arrays)
  outs = pl.pallas_call(
      functools.partial(_bwd_dkdv_kernel, cfg=cfg),
      grid=(Lk // bk, B, H),
      in_specs=[
          pl.BlockSpec((None, Lq, None, Dqk), lambda j, b, h: (b, 0, h, 0)),
          pl.BlockSpec((None, bk, None, Dqk), lambda j, b, h: (b, j, h, 0)),
          pl.BlockSpec((None, bk, None, Dv), lambda j, b, h: (b, j, h, 0)),
          pl.BlockSpec((None, 4), lambda j, b, h: (b, 0)),
          *bias_specs,
          pl.BlockSpec((None, Lq, None, Dv), lambda j, b, h: (b, 0, h, 0)),
          *([full_row_spec, full_row_spec] if cfg.softmax else []),
          *table_specs,
      ],
      out_specs=[
          pl.BlockSpec((None, bk, None, Dqk), lambda j, b, h: (b, j, h, 0)),
          pl.BlockSpec((None, bk, None, Dv), lambda j, b, h: (b, j, h, 0)),
          *table_specs,
      ],
      out_shape=[
          jax.ShapeDtypeStruct(k.shape, k.dtype),
          jax.ShapeDtypeStruct(v.shape, v.dtype),
          *[jax.ShapeDtypeStruct(t.shape, t.dtype) for t in table_arrays],
      ],
      input_output_aliases={first_table + i: 2 + i
                            for i in range(len(table_arrays))},
      compiler_params=params,
      interpret=cfg.interpret,
      name="hstu_attention_bwd_dkdv",
  )(*in_arrays)
  dk, dv, *tables = outs
  dpos = tables.pop(0) if cfg.has_pos else None
  dts = tables.pop(0) if cfg.has_ts else None
  return dq, dk, dv, dpos, dts


# ------------------------------------------------------------- custom VJP


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def _attention(q, k, v, info, pos, ts, qt, kt, cfg: _Config):
  return _forward(q, k, v, info, pos, ts, qt, kt, cfg)[0]


def _attention_fwd(q, k, v, info, pos, ts, qt, kt, cfg: _Config):
  out, lse = _forward(q, k, v, info, pos, ts, qt, kt, cfg)
  return out, (q, k, v, info, pos, ts, qt, kt, out, lse)


def _attention_bwd(cfg: _Config, residuals, do):
  q, k, v, info, pos, ts, qt, kt, out, lse = residuals
  dq, dk, dv, dpos, dts = _backward(q, k, v, info, pos, ts, qt, kt, out, lse,
                                    do, cfg)
  return dq, dk, dv, None, dpos, dts, None, None


_attention.defvjp(_attention_fwd, _attention_bwd)


# ------------------------------------------------------------ public API


@dataclasses.dataclass(frozen=True)
class _Prepared:
  """Validated, normalised inputs shared by the kernel and the reference."""
  q_len: jax.Array  # [B] int32
  kv_len: jax.Array  # [B] int32
  hist_end: jax.Array  # [B] int32
  has_targets: bool
  query_times: jax.Array | None  # [B, Lq] int32, offset removed
  key_times: jax.Array | None  # [B, Lk] int32


def _shape_error(msg: str, **arrays) -> ValueError:
  shapes = ", ".join(f"{n}.shape={tuple(a.shape)}" for n, a in arrays.items())
  return ValueError(f"{msg} Got {shapes}.")


def _prepare(q, k, v, lengths, q_lengths, kv_lengths, num_targets,
             pos_weights, ts_weights, query_times, key_times, mask: MaskSpec,
             activation: str) -> _Prepared:
  """Shape checks and normalisation of lengths, targets and times."""
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise _shape_error("q, k, v must be [B, L, H, D].", q=q, k=k, v=v)
  B, Lq, H, Dqk = q.shape
  Lk = k.shape[1]
  if k.shape[0] != B or k.shape[2] != H or k.shape[3] != Dqk:
    raise _shape_error(
        "k must be [B, Lk, H, Dqk] with q's batch, heads and head dim.",
        q=q, k=k)
  if v.shape[:3] != k.shape[:3]:
    raise _shape_error("v must be [B, Lk, H, Dv] matching k.", k=k, v=v)
  if not (q.dtype == k.dtype == v.dtype):
    raise ValueError(
        f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
  if q.dtype not in (jnp.float32, jnp.bfloat16, jnp.float16):
    raise ValueError(f"q, k, v must be float32/bfloat16/float16, got {q.dtype}.")
  if activation not in common.ACTIVATIONS:
    raise ValueError(
        f"activation must be one of {common.ACTIVATIONS}, got {activation!r}.")
  if mask.is_positional and Lq != Lk:
    raise _shape_error(
        f"Positional masks ({mask}) need self-attention (Lq == Lk); use "
        "MaskSpec(causal=False) for cross-attention.", q=q, k=k)

  def lens(x, name, L):
    if x is None:
      return None
    x = jnp.asarray(x)
    if x.shape != (B,):
      raise ValueError(f"{name} must be [B]=({B},), got shape {x.shape}.")
    return jnp.clip(x.astype(jnp.int32), 0, L)

  q_len = lens(q_lengths if q_lengths is not None else lengths,
               "q_lengths" if q_lengths is not None else "lengths", Lq)
  kv_len = lens(kv_lengths if kv_lengths is not None else lengths,
                "kv_lengths" if kv_lengths is not None else "lengths", Lk)
  if q_len is None:
    q_len = jnp.full((B,), Lq, jnp.int32)
  if kv_len is None:
    kv_len = jnp.full((B,), Lk, jnp.int32)
  has_targets = num_targets is not None or mask.num_targets > 0
  if has_targets and (Lq != Lk or q_lengths is not None
                      or kv_lengths is not None):
    raise ValueError("Targets are defined for self-attention with one "
                     "`lengths` array (no q_lengths / kv_lengths).")
  if num_targets is None:
    targets = jnp.full((B,), mask.num_targets, jnp.int32)
  else:
    targets = lens(num_targets, "num_targets", Lk)
  hist_end = kv_len - jnp.minimum(targets, kv_len)

  if pos_weights is not None:
    if pos_weights.ndim != 1 or pos_weights.shape[0] % 2 != 1:
      raise _shape_error("pos_weights must be [2P - 1] (odd length).",
                         pos_weights=pos_weights)
  qt = kt = None
  if (ts_weights is None) != (query_times is None) or (
      query_times is None) != (key_times is None):
    raise ValueError("ts_weights, query_times and key_times go together: "
                     "pass all three or none.")
  if ts_weights is not None:
    if ts_weights.ndim != 1 or ts_weights.shape[0] < 1:
      raise _shape_error("ts_weights must be [num_buckets].",
                         ts_weights=ts_weights)
    if query_times.shape != (B, Lq) or key_times.shape != (B, Lk):
      raise _shape_error("query_times must be [B, Lq], key_times [B, Lk].",
                         q=q, k=k, query_times=query_times,
                         key_times=key_times)
    # Gaps are what matters: remove a per-sequence offset so int64 Unix
    # seconds fit int32, then take differences in integers.
    base = jnp.minimum(query_times.min(axis=1), key_times.min(axis=1))[:, None]
    qt = (query_times - base).astype(jnp.int32)
    kt = (key_times - base).astype(jnp.int32)
  return _Prepared(q_len, kv_len, hist_end, has_targets, qt, kt)


@functools.partial(
    jax.jit,
    static_argnames=("mask", "activation", "alpha", "scale", "block_sizes",
                     "interpret"))
def hstu_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    lengths: jax.Array | None = None,
    *,
    mask: MaskSpec = MaskSpec(),
    scale: float,
    q_lengths: jax.Array | None = None,
    kv_lengths: jax.Array | None = None,
    num_targets: jax.Array | None = None,
    pos_weights: jax.Array | None = None,
    ts_weights: jax.Array | None = None,
    query_times: jax.Array | None = None,
    key_times: jax.Array | None = None,
    activation: str = "silu",
    alpha: float = 1.0,
    block_sizes: BlockSizes = BlockSizes(),
    interpret: bool = False,
) -> jax.Array:
  """HSTU pointwise (or softmax) attention with in-kernel relative bias.

  Args:
    q: [B, Lq, H, Dqk] queries.
    k: [B, Lk, H, Dqk] keys.
    v: [B, Lk, H, Dv] values.
    lengths: [B] int valid tokens per sequence (queries and keys); None means
      all valid. Padding rows of the output are zero.
    mask: static `MaskSpec` (causal, local window, global prefix, ...).
    scale: output scale; HSTU uses 1 / N with N the padded width.
    q_lengths, kv_lengths: [B] int, separate valid counts for
      cross-attention; each overrides `lengths` for its side.
    num_targets: [B] int per-sequence targets; overrides mask.num_targets.
    pos_weights: [2P - 1] positional bias table (shared by all heads).
    ts_weights: [num_buckets] time-gap bias table.
    query_times: [B, Lq] int seconds (HSTU passes the next item's time).
    key_times: [B, Lk] int seconds.
    activation: "silu", "gelu" (tanh approx.), "relu", "identity" or
      "softmax".
    alpha: score scale inside the activation (1 for HSTU, 1/tau for GDPA,
      1/sqrt(D) for softmax attention).
    block_sizes: tile sizes and Triton launch parameters.
    interpret: run the kernels in the Pallas interpreter (CPU).

  Returns:
    [B, Lq, H, Dv] in q's dtype. Differentiable in q, k, v and both tables.
  """
  prep = _prepare(q, k, v, lengths, q_lengths, kv_lengths, num_targets,
                  pos_weights, ts_weights, query_times, key_times, mask,
                  activation)
  B, Lq, H, Dqk = q.shape
  Lk, Dv = k.shape[1], v.shape[-1]
  blocks = block_sizes.fit(Lq, Lk)
  # Pad lengths to whole tiles and head dims to powers of two; padded rows
  # and keys lie beyond `lengths`, padded head dims are zeros.
  Lq_p = common.round_up(Lq, max(blocks.block_q, blocks.block_q_dkv,
                                 blocks.block_q_dq))
  Lk_p = common.round_up(Lk, max(blocks.block_k, blocks.block_k_dkv,
                                 blocks.block_k_dq))
  Dqk_p, Dv_p = common.padded_head_dim(Dqk), common.padded_head_dim(Dv)
  q_p = common.pad_axis(common.pad_axis(q, 1, Lq_p), 3, Dqk_p)
  k_p = common.pad_axis(common.pad_axis(k, 1, Lk_p), 3, Dqk_p)
  v_p = common.pad_axis(common.pad_axis(v, 1, Lk_p), 3, Dv_p)
  info = jnp.stack([prep.q_len, prep.kv_len, prep.hist_end,
                    jnp.zeros_like(prep.q_len)], axis=1)
  pos = ts = qt = kt = None
  if pos_weights is not None:
    pos = pos_weights.astype(jnp.float32)
  if ts_weights is not None:
    ts = ts_weights.astype(jnp.float32)
    qt = common.pad_axis(prep.query_times, 1, Lq_p)
    kt = common.pad_axis(prep.key_times, 1, Lk_p)
  cfg = _Config(
      mask=mask, activation=activation, alpha=float(alpha),
      scale=float(scale), blocks=blocks, has_targets=prep.has_targets,
      num_pos=0 if pos is None else pos.shape[0],
      num_buckets=0 if ts is None else ts.shape[0], interpret=interpret)
  out = _attention(q_p, k_p, v_p, info, pos, ts, qt, kt, cfg)
  out = out[:, :Lq, :, :Dv]
  return out


@functools.partial(
    jax.jit,
    static_argnames=("mask", "activation", "alpha", "scale", "block_sizes",
                     "interpret"))
def hstu_attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    lengths: jax.Array | None = None,
    *,
    mask: MaskSpec = MaskSpec(),
    scale: float,
    q_lengths: jax.Array | None = None,
    kv_lengths: jax.Array | None = None,
    num_targets: jax.Array | None = None,
    pos_weights: jax.Array | None = None,
    ts_weights: jax.Array | None = None,
    query_times: jax.Array | None = None,
    key_times: jax.Array | None = None,
    activation: str = "silu",
    alpha: float = 1.0,
    block_sizes: BlockSizes = BlockSizes(),
    interpret: bool = False,
) -> jax.Array:
  """Dense XLA version of `hstu_attention` (same signature and numerics).

  Materialises [B, H, Lq, Lk] scores; differentiable by plain autodiff.
  `block_sizes` and `interpret` are accepted for signature parity and
  ignored.
  """
  del block_sizes, interpret
  prep = _prepare(q, k, v, lengths, q_lengths, kv_lengths, num_targets,
                  pos_weights, ts_weights, query_times, key_times, mask,
                  activation)
  B, Lq, H, _ = q.shape
  Lk = k.shape[1]
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  if alpha != 1.0:
    s = s * alpha
  rows = jnp.arange(Lq, dtype=jnp.int32)[:, None]
  cols = jnp.arange(Lk, dtype=jnp.int32)[None, :]
  if pos_weights is not None:
    idx = common.pos_index(rows, cols, pos_weights.shape[0])
    s = s + pos_weights.astype(jnp.float32)[idx][None, None]
  if ts_weights is not None:
    bucket = common.time_bucket(
        prep.query_times[:, :, None] - prep.key_times[:, None, :],
        ts_weights.shape[0])
    s = s + ts_weights.astype(jnp.float32)[bucket][:, None]
  visible = dense_mask(
      mask, prep.q_len, Lq, Lk, kv_lengths=prep.kv_len,
      num_targets=(prep.kv_len - prep.hist_end) if prep.has_targets else None,
  )[:, None]
  if activation == "softmax":
    s = jnp.where(visible, s, _MASK_VALUE)
    m = jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    e = jnp.where(visible, jnp.exp(s - m), 0.0)
    l = jnp.sum(e, axis=-1, keepdims=True)
    p = e / jnp.where(l > 0.0, l, 1.0)
  else:
    p = jnp.where(visible, common.activation_fn(activation)(s), 0.0)
  out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  if scale != 1.0:
    out = out * scale
  return out.astype(q.dtype)
