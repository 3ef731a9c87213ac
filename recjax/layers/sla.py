"""Semi-local attention (ULTRA-HSTU SLA, papers.md §2.2) on the XLA path, computed blockwise.

The mask is the kernel family's `MaskSpec` (`local_window` K1, `global_prefix` K2,
`contextual_prefix` C, `num_targets` T; `pallas_kernels/mask.py` is the definition). Here it is
evaluated without ever forming the [L, L] scores, so time and memory grow linearly in L:

* history and context rows, per query block of `block` rows (block n covers [n·b, (n+1)·b)):
    - the prefix keys [0, P), P = max(K2, C), shared by every block;
    - the band: key blocks n - w .. n, w = ⌈(K1 - 1) / b⌉, which hold every key with i - j < K1.
  A band key j < P is masked out of the band (it is already in the prefix), so the two key sets
  are disjoint and one (pointwise or softmax) row over [prefix | band] is the whole masked row;
* candidate (target) rows, T per sequence at [h, h + T) with h = length - T: they see the whole
  history and themselves (the MaskSpec rule, as in M-FALCON and TorchEasyRec's SLA mask), so they
  are computed apart as [T, L] scores and added into their rows; the blocked part masks them out.

Cost per sequence and head: L·(P + (w + 1)·b + T)·d, against L²·d for the dense mask.
Gradients are JAX autodiff of the same blocked graph (no [L, L] residuals either).
No relative bias and no attention-weight dropout on this path: `attention()` refuses both.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec, element_mask
from recjax.layers.tiled_attention import masked_softmax


@dataclasses.dataclass(frozen=True)
class SLABlocking:
  """How `attention()` evaluates a semi-local mask on the XLA path.

  Attributes:
    block: query rows per block (and the band's key-block size). The band spans
      ⌈(K1 - 1) / block⌉ + 1 key blocks, so a block near K1 wastes little work.
  """
  block: int = 128

  def __post_init__(self):
    if self.block < 1:
      raise ValueError(f"SLABlocking.block must be >= 1, got {self.block}")


def check_sla_mask(mask: MaskSpec):
  """Raise unless `mask` is a causal semi-local mask (the blocked path's domain)."""
  if mask.local_window is None or not mask.causal:
    raise ValueError(f"blocked semi-local attention needs a causal MaskSpec with local_window set, got {mask}")


def semi_local_attention(q_NLD: jax.Array, k_NLD: jax.Array, v_NLE: jax.Array, lengths_N: jax.Array,
                         mask: MaskSpec, *, kind: str, act: Callable[[jax.Array], jax.Array],
                         alpha: float, scale: float, block: int) -> jax.Array:
  """Masked self-attention under a semi-local `mask`, blockwise -> [N, L, E].

  Args:
    q_NLD, k_NLD: queries and keys [N, L, D] (heads already folded into N).
    v_NLE: values [N, L, E].
    lengths_N: valid tokens per row (right padding).
    mask: causal MaskSpec with `local_window` (and optionally global/contextual prefix, targets).
    kind: "pointwise" (w = act(alpha·q·k)·scale) or "softmax" (w = scale·softmax(alpha·q·k)).
    act: the pointwise activation.
    alpha, scale: as in `attention()`.
    block: query rows per block.
  """
  check_sla_mask(mask)
  n, l, _ = q_NLD.shape
  if k_NLD.shape != q_NLD.shape or v_NLE.shape[:2] != (n, l):
    raise ValueError(f"semi_local_attention shapes disagree: q {q_NLD.shape}, k {k_NLD.shape}, v {v_NLE.shape}")
  nb = -(-l // block)
  lp = nb * block
  w = -(-(mask.local_window - 1) // block)
  p = min(max(mask.global_prefix or 0, mask.contextual_prefix), l)
  t = mask.num_targets
  q_len = jnp.asarray(lengths_N, jnp.int32)
  hist_end = q_len - jnp.minimum(t, q_len)

  def pad(x, left, right):
    return jnp.pad(x, ((0, 0), (left, right), (0, 0)))

  def band(x):   # [N, L, F] -> [N, nb, (w + 1)·block, F]: key blocks n - w .. n of query block n
    xb = pad(x, w * block, lp - l).reshape(n, nb + w, block, x.shape[-1])
    return jnp.concatenate([xb[:, o:o + nb] for o in range(w + 1)], axis=2)

  q_NBQD = pad(q_NLD, 0, lp - l).reshape(n, nb, block, -1)
  rows = (jnp.arange(nb, dtype=jnp.int32)[:, None] * block + jnp.arange(block, dtype=jnp.int32))[:, :, None]
  band_cols = ((jnp.arange(nb, dtype=jnp.int32)[:, None] - w) * block
               + jnp.arange((w + 1) * block, dtype=jnp.int32))[:, None, :]
  prefix_cols = jnp.arange(p, dtype=jnp.int32)[None, None, :]
  lens = (q_len[:, None, None, None], q_len[:, None, None, None], hist_end[:, None, None, None])

  def visible(r, c, extra):
    vis = element_mask(mask, r[None], c[None], *lens, has_targets=t > 0) & extra
    if t:   # candidate rows are computed apart below
      vis = vis & (r[None] < lens[2])
    return vis

  vis = jnp.concatenate([
      visible(rows, prefix_cols, True),
      visible(rows, band_cols, (band_cols >= p)[None])], axis=-1)     # [N, nb, block, P + (w+1)b]
  s = jnp.concatenate([
      jnp.einsum("nbqd,npd->nbqp", q_NBQD, k_NLD[:, :p], preferred_element_type=jnp.float32),
      jnp.einsum("nbqd,nbkd->nbqk", q_NBQD, band(k_NLD), preferred_element_type=jnp.float32)],
      axis=-1) * alpha
  wts = _weights(s, vis, kind, act, scale).astype(v_NLE.dtype)
  out = (jnp.einsum("nbqp,npe->nbqe", wts[..., :p], v_NLE[:, :p])
         + jnp.einsum("nbqk,nbke->nbqe", wts[..., p:], band(v_NLE)))
  out_NLE = out.reshape(n, lp, -1)[:, :l]
  if t:
    out_NLE = out_NLE + _candidates(q_NLD, k_NLD, v_NLE, mask, q_len, hist_end, kind, act, alpha, scale)
  return out_NLE


def _weights(s, vis, kind, act, scale):
  if kind == "pointwise":
    return jnp.where(vis, act(s) * scale, 0.0)
  return masked_softmax(s, vis) * scale


def _candidates(q_NLD, k_NLD, v_NLE, mask, q_len, hist_end, kind, act, alpha, scale):
  """The T candidate rows of each sequence against all keys ([N, T, L] scores), scattered to [N, L, E]."""
  n, l, _ = q_NLD.shape
  t = mask.num_targets
  pos_NT = hist_end[:, None] + jnp.arange(t, dtype=jnp.int32)
  real_NT = pos_NT < q_len[:, None]
  pos_NT = jnp.where(real_NT, pos_NT, l)     # l = out of range: dropped by the scatter below
  q_NTD = jnp.take_along_axis(q_NLD, jnp.minimum(pos_NT, l - 1)[..., None], axis=1)
  cols = jnp.arange(l, dtype=jnp.int32)[None, None, :]
  vis = element_mask(mask, pos_NT[..., None], cols, q_len[:, None, None], q_len[:, None, None],
                     hist_end[:, None, None], True) & real_NT[..., None]
  s = jnp.einsum("ntd,nld->ntl", q_NTD, k_NLD, preferred_element_type=jnp.float32) * alpha
  o_NTE = jnp.einsum("ntl,nle->nte", _weights(s, vis, kind, act, scale).astype(v_NLE.dtype), v_NLE)
  return jnp.zeros((n, l, v_NLE.shape[-1]), o_NTE.dtype).at[
      jnp.arange(n)[:, None], pos_NT].add(o_NTE, mode="drop")
