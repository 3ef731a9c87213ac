"""The one attention entry point every model calls.

    out[b, i, h] = sum_j  w(b, h, i, j) * v[b, j, h]
    pointwise:  w = act(alpha * q_i·k_j + rab_ij) * scale * mask_ij      (HSTU, GDPA)
    softmax:    w = softmax_j(alpha * q_i·k_j + rab_ij | mask_ij)          (SASRec, Transformer)

`backend` is config: "xla" materialises the dense [B, H, Lq, Lk] scores (fast enough on CPU at
L ≤ 1k, and the only option on machines without Pallas), "pallas" calls the kernel family in
`pallas_kernels/` (compiled on GPU, interpret mode on CPU), which computes the mask per tile and
the relative bias inside the kernel. Both take the same `MaskSpec` and `RelativeBias`, and tests
check they agree.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec, dense_mask
from recjax.layers.relative_bias import RelativeBias, materialize

ACTIVATIONS = {
    "silu": jax.nn.silu,
    "gelu": jax.nn.gelu,
    "relu": jax.nn.relu,
    "identity": lambda x: x,
}
BACKENDS = ("xla", "pallas")


def attention(q_BQHD: jax.Array, k_BKHD: jax.Array, v_BKHD: jax.Array, *,
              lengths_B: jax.Array | None, mask: MaskSpec, kind: str = "pointwise",
              activation: str = "silu", alpha: float = 1.0, scale: float = 1.0,
              bias: RelativeBias | None = None, backend: str = "xla",
              dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None) -> jax.Array:
  """Masked (pointwise or softmax) attention -> [B, Lq, H, Dv].

  Args:
    q_BQHD, k_BKHD, v_BKHD: queries [B, Lq, H, Dqk], keys [B, Lk, H, Dqk], values [B, Lk, H, Dv].
    lengths_B: valid tokens per sequence (right padding), or None when all are valid.
    mask: which (query, key) pairs may interact (causal, windows, targets...).
    kind: "pointwise" or "softmax".
    activation: pointwise activation (silu, gelu, relu, identity).
    alpha: multiplies q·k before the bias (HSTU: 1; Transformer: 1/sqrt(d)).
    scale: multiplies the activated scores (HSTU: 1/N with N the padded width).
    bias: relative attention bias, shared across heads.
    backend: "xla" or "pallas".
    dropout_rate, dropout_rng: dropout on the attention weights (SASRec); XLA backend only.
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
  if lengths_B is None:
    lengths_B = jnp.full((b,), lk, jnp.int32)
  if backend == "pallas":
    if dropout_rate > 0.0 and dropout_rng is not None:
      raise ValueError("attention-weight dropout is not implemented in the Pallas backend")
    return _pallas(q_BQHD, k_BKHD, v_BKHD, lengths_B, mask, kind, activation, alpha, scale, bias)

  s_BHQK = jnp.einsum("bqhd,bkhd->bhqk", q_BQHD, k_BKHD,
                      preferred_element_type=jnp.float32) * alpha
  if bias is not None:
    s_BHQK = s_BHQK + materialize(bias, lq, lk)[:, None]
  visible_B1QK = dense_mask(mask, lengths_B, lq, lk)[:, None]
  if kind == "pointwise":
    w_BHQK = jnp.where(visible_B1QK, ACTIVATIONS[activation](s_BHQK) * scale, 0.0)
  else:
    s_BHQK = jnp.where(visible_B1QK, s_BHQK, -jnp.inf)
    m = jnp.max(s_BHQK, axis=-1, keepdims=True)
    e = jnp.exp(s_BHQK - jnp.where(jnp.isfinite(m), m, 0.0))   # fully masked rows give 0, not NaN
    w_BHQK = e / jnp.maximum(jnp.sum(e, axis=-1, keepdims=True), 1e-30)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, w_BHQK.shape)
    w_BHQK = jnp.where(keep, w_BHQK / (1.0 - dropout_rate), 0.0)
  return jnp.einsum("bhqk,bkhd->bqhd", w_BHQK.astype(v_BKHD.dtype), v_BKHD)


def _pallas(q, k, v, lengths, mask, kind, activation, alpha, scale, bias):
  # Imported here so that the XLA path never pays for (or depends on) the kernel module.
  from pallas_kernels.hstu_attention import hstu_attention  # pylint: disable=import-outside-toplevel
  bias = bias or RelativeBias(None, None)
  return hstu_attention(q, k, v, lengths, mask=mask, scale=scale,
                        pos_weights=bias.pos_weights, ts_weights=bias.ts_weights,
                        query_times=bias.query_times, key_times=bias.key_times,
                        activation="softmax" if kind == "softmax" else activation, alpha=alpha,
                        interpret=jax.default_backend() == "cpu")
