"""The one attention entry point every model calls.

    out[b, i, h] = sum_j  w(b, h, i, j) * v[b, j, h]
    pointwise:  w = act(alpha * q_i·k_j + rab_ij) * scale * mask_ij      (HSTU, GDPA)
    softmax:    w = scale * softmax_j(alpha * q_i·k_j + rab_ij | mask_ij)  (SASRec, Transformer: scale 1)

`backend` is config: "xla" materialises the dense [B, H, Lq, Lk] scores (fast enough on CPU at
L ≤ 1k, and the only option on machines without Pallas; on CPU, `impl` may hand HSTU's causal SiLU
case to a C++ kernel, `native_attention.py`), "pallas" calls the kernel family in
`pallas_kernels/` (compiled on GPU, interpret mode on CPU), which computes the mask per tile and
the relative bias inside the kernel. Both take the same `MaskSpec` and `RelativeBias`, and tests
check they agree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec, dense_mask
from recjax import counter_rng
from recjax.layers import native_attention
from recjax.layers.dropout import hash_dropout
from recjax.layers.relative_bias import RelativeBias, materialize
from recjax.layers.sla import SLABlocking, check_sla_mask, semi_local_attention
from recjax.layers.tiled_attention import CausalTiling, causal_tiled_attention, masked_softmax, resolve_tiling

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
}
BACKENDS = ("xla", "pallas")
PLAIN_CAUSAL = MaskSpec(causal=True)


def attention(q_BQHD: jax.Array, k_BKHD: jax.Array, v_BKHD: jax.Array, *,
              lengths_B: jax.Array | None, mask: MaskSpec, kind: str = "pointwise",
              activation: str = "silu", alpha: float = 1.0, scale: float = 1.0,
              bias: RelativeBias | None = None, backend: str = "xla",
              dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
              tiling: CausalTiling | bool | str | None = "auto",
              sla: SLABlocking | None = None,
              kv_lengths_B: jax.Array | None = None, impl: str = "xla") -> jax.Array:
  """Masked (pointwise or softmax) attention -> [B, Lq, H, Dv].

  Args:
    q_BQHD, k_BKHD, v_BKHD: queries [B, Lq, H, Dqk], keys [B, Lk, H, Dqk], values [B, Lk, H, Dv].
    lengths_B: valid tokens per sequence (right padding), or None when all are valid.
    mask: which (query, key) pairs may interact (causal, windows, targets...).
    kind: "pointwise" or "softmax".
    activation: pointwise activation (silu, gelu, relu, identity).
    alpha: multiplies q·k before the bias (HSTU: 1; Transformer: 1/sqrt(d)).
    scale: multiplies the attention weights (HSTU: 1/N with N the padded width; softmax: 1).
    bias: relative attention bias, shared across heads.
    backend: "xla" or "pallas".
    dropout_rate, dropout_rng: dropout on the attention weights (SASRec); XLA backend only.
    tiling: XLA backend with a plain causal mask: skip the tiles that causality and padding hide
      (`tiled_attention`; same result). "auto" (default) tiles on the CPU backend only, True with
      the default `CausalTiling`, False / None compute the dense [B*H, Lq, Lk] scores.
    sla: XLA backend with a causal semi-local mask (`local_window` set): compute it blockwise in
      O(L·(K1 + K2)) time and memory (`sla.py`; same result as the dense mask). No bias or
      dropout on that path.
    kv_lengths_B: cross-attention (a decoder reading an encoder's output): valid keys per
      sequence when they differ from the valid queries `lengths_B` (None: every query valid).
      Needs a non-positional mask (e.g. `MaskSpec(causal=False)`). The Pallas backend passes it
      to the kernel as `kv_lengths` (and `lengths_B` as `q_lengths`).
    impl: XLA backend: "xla" (default) computes it in XLA (dense or tiled); "native" uses the C++
      kernel (`native_attention.py`: pointwise SiLU, causal self-attention with or without targets,
      no dropout; a ValueError says why when the case is another); "auto" uses the kernel where it
      applies and the backend is CPU, XLA otherwise.
  """
  if backend not in BACKENDS:
    raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
  if kind not in ("pointwise", "softmax"):
    raise ValueError(f"attention kind must be 'pointwise' or 'softmax', got {kind!r}")
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
  b, lq, h, _ = q_BQHD.shape
  lk = k_BKHD.shape[1]
  if k_BKHD.shape[0] != b or v_BKHD.shape[:3] != k_BKHD.shape[:3] or k_BKHD.shape[2:] != q_BQHD.shape[2:]:
    raise ValueError(f"attention shapes disagree: q {q_BQHD.shape}, k {k_BKHD.shape}, v {v_BKHD.shape}")
  tiling = resolve_tiling(tiling)
  if kv_lengths_B is not None:
    if mask.is_positional:
      raise ValueError(f"cross-attention (kv_lengths_B) needs a non-positional mask, got {mask}")
    if lengths_B is None:
      lengths_B = jnp.full((b,), lq, jnp.int32)
  if lengths_B is None:
    lengths_B = jnp.full((b,), lk, jnp.int32)
  if backend == "pallas":
    if dropout_rate > 0.0 and dropout_rng is not None:
      raise ValueError("attention-weight dropout is not implemented in the Pallas backend")
    return _pallas(q_BQHD, k_BKHD, v_BKHD, lengths_B, kv_lengths_B, mask, kind, activation, alpha,
                   scale, bias)

  native_attention.check_impl(impl)   # every value, also where the kernel does not apply
  use_dropout = dropout_rate > 0.0 and dropout_rng is not None
  if impl != "xla":
    why_not = native_attention.native_supported(
        kind=kind, activation=activation, mask=mask, blocked_sla=sla is not None,
        same_length=lq == lk and kv_lengths_B is None, dropout=use_dropout, bias=bias)
    if why_not is not None and impl == "native":
      raise ValueError(f"attention impl 'native': {why_not}")
    if why_not is None and native_attention.resolve_impl(impl):
      out_NQD = native_attention.causal_silu_attention(
          _fold_heads(q_BQHD), _fold_heads(k_BKHD), _fold_heads(v_BKHD), jnp.repeat(lengths_B, h), heads=h,
          alpha=alpha, scale=scale, bias=bias, num_targets=mask.num_targets)
      return jnp.swapaxes(out_NQD.reshape(b, h, lq, -1), 1, 2).astype(v_BKHD.dtype)

  # XLA:CPU runs 3-D batched matmuls ≈ 2x faster than the same contraction with a head axis, so
  # fold heads into the batch: [B, L, H, D] -> [B*H, L, D] (`_fold_heads`).
  if sla is not None:
    check_sla_mask(mask)
    if bias is not None or use_dropout or lq != lk:
      raise ValueError("blocked semi-local attention takes no relative bias, no dropout and needs Lq == Lk")
    out_NQD = semi_local_attention(
        _fold_heads(q_BQHD), _fold_heads(k_BKHD), _fold_heads(v_BKHD), jnp.repeat(lengths_B, h), mask,
        kind=kind, act=ACTIVATIONS[activation], alpha=alpha, scale=scale, block=sla.block)
    return jnp.swapaxes(out_NQD.reshape(b, h, lq, -1), 1, 2)
  if tiling is not None and mask == PLAIN_CAUSAL and lq == lk:
    out_NQD = causal_tiled_attention(
        _fold_heads(q_BQHD), _fold_heads(k_BKHD), _fold_heads(v_BKHD), jnp.repeat(lengths_B, h),
        kind=kind, act=ACTIVATIONS[activation], alpha=alpha, scale=scale, bias=bias,
        batch_of_row=jnp.repeat(jnp.arange(b), h), dropout_rate=dropout_rate if use_dropout else 0.0,
        dropout_seed=counter_rng.seed_from(dropout_rng) if use_dropout else None, tiling=tiling)
    return jnp.swapaxes(out_NQD.reshape(b, h, lq, -1), 1, 2)

  def per_head(x_BQK):   # [1 or B, Lq, Lk] -> broadcastable against [B*H, Lq, Lk]
    if h == 1 or x_BQK.shape[0] == 1:
      return x_BQK
    return jnp.broadcast_to(x_BQK[:, None], (b, h, lq, lk)).reshape(b * h, lq, lk)

  s_NQK = jnp.einsum("nqd,nkd->nqk", _fold_heads(q_BQHD), _fold_heads(k_BKHD),
                     preferred_element_type=jnp.float32) * alpha
  if bias is not None:
    s_NQK = add_broadcast_bias(s_NQK, per_head(materialize(bias, lq, lk)))
  visible_NQK = per_head(dense_mask(mask, lengths_B, lq, lk, kv_lengths=kv_lengths_B))
  if kind == "pointwise":
    w_NQK = jnp.where(visible_NQK, ACTIVATIONS[activation](s_NQK) * scale, 0.0)
  else:
    w_NQK = masked_softmax(s_NQK, visible_NQK) * scale
  if use_dropout:
    w_NQK = hash_dropout(w_NQK, dropout_rate, dropout_rng)
  o_NQD = jnp.einsum("nqk,nkd->nqd", w_NQK.astype(v_BKHD.dtype), _fold_heads(v_BKHD))
  return jnp.swapaxes(o_NQD.reshape(b, h, lq, -1), 1, 2)


def _fold_heads(x_BLHD: jax.Array) -> jax.Array:
  """[B, L, H, D] -> [B*H, L, D], row b * H + h."""
  b, l, h, d = x_BLHD.shape
  return jnp.swapaxes(x_BLHD, 1, 2).reshape(b * h, l, d)


@jax.custom_vjp
def add_broadcast_bias(s_NQK: jax.Array, bias_XQK: jax.Array) -> jax.Array:
  """s + bias, with bias [1, Lq, Lk] (shared) or [N, Lq, Lk].

  Same as `s + bias`; the custom gradient sums the shared bias's cotangent over N as a
  [1, N] x [N, Lq*Lk] matmul, because XLA:CPU's fused reduce over the leading axis runs ≈ 40x
  slower (≈ 40 ms per layer at the ML-1M shape, the largest single op of the HSTU step).
  """
  return s_NQK + bias_XQK


def _add_bias_fwd(s_NQK, bias_XQK):
  return s_NQK + bias_XQK, bias_XQK.shape[0]


def _add_bias_bwd(bias_rows, g_NQK):
  if bias_rows == g_NQK.shape[0]:
    return g_NQK, g_NQK
  n, lq, lk = g_NQK.shape
  d_bias = (jnp.ones((1, n), g_NQK.dtype) @ g_NQK.reshape(n, lq * lk)).reshape(1, lq, lk)
  return g_NQK, d_bias


add_broadcast_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def _pallas(q, k, v, lengths, kv_lengths, mask, kind, activation, alpha, scale, bias):
  # Imported here so that the XLA path never pays for (or depends on) the kernel module.
  from pallas_kernels.hstu_attention import hstu_attention  # pylint: disable=import-outside-toplevel
  bias = bias or RelativeBias(None, None)
  if kv_lengths is not None:   # cross-attention: `lengths` counts the queries
    lengths, q_lengths = None, lengths
  else:
    q_lengths = None
  return hstu_attention(q, k, v, lengths, mask=mask, scale=scale, q_lengths=q_lengths,
                        kv_lengths=kv_lengths,
                        pos_weights=bias.pos_weights, ts_weights=bias.ts_weights,
                        query_times=bias.query_times, key_times=bias.key_times,
                        activation="softmax" if kind == "softmax" else activation, alpha=alpha,
                        interpret=jax.default_backend() == "cpu")
