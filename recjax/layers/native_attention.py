"""Causal SiLU attention through the C++ kernel (`recjax/native/causal_attention.cc`), on XLA:CPU.

    out[n, i] = scale * sum_{j <= i, i, j < len_n} silu(alpha * q_i·k_j + rab_ij) v_j

the pointwise, causal case of `attention` (HSTU's; with targets, the ranker's: the last T tokens
see the history and themselves only), with the relative position and time bias of `relative_bias.py`. The kernel touches only the causal prefix of each row's real tokens and
keeps each query's scores in one vector, where XLA:CPU runs score blocks through memory pass by
pass (`tiled_attention.py`, which stays the path for every other case). The backward is the
kernel's too, recomputing the scores; the bias tables get their gradients from it directly.

The time buckets are computed once here by `relative_bias.time_buckets` (so both paths bucket a
gap identically) and handed to the kernel as uint8 [B, Lk, Lq]: 1 byte per pair, at most 256 buckets.
`attention(impl=...)` decides when this path runs (`native_supported`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax import native
from recjax.layers.relative_bias import RelativeBias, time_buckets

MAX_TIME_BUCKETS = 256   # uint8 buckets
IMPLS = ("auto", "xla", "native")


def check_impl(impl: str) -> None:
  """A ValueError naming the setting unless `impl` is one of IMPLS."""
  if impl not in IMPLS:
    raise ValueError(f"attention impl must be one of {IMPLS} (model.attention_impl, attention(impl=...)), "
                     f"got {impl!r}")


def resolve_impl(impl: str) -> bool:
  """`model.attention_impl` -> whether to use the kernel where it applies.

  "auto": on the CPU backend when the kernel compiled (`recjax.native.available()`); "native":
  required (an error naming why it is unavailable); "xla": never.
  """
  check_impl(impl)
  if impl == "xla":
    return False
  if impl == "auto":
    return jax.default_backend() == "cpu" and native.available()
  if not native.available():
    raise RuntimeError(f"attention impl 'native' was asked for but recjax.native is unavailable: "
                       f"{native.why_unavailable()}")
  return True


def native_supported(*, kind: str, activation: str, mask: MaskSpec, blocked_sla: bool, same_length: bool,
                     dropout: bool, bias: RelativeBias | None) -> str | None:
  """None when the kernel computes this attention, else why not (for errors and logs)."""
  if kind != "pointwise" or activation != "silu":
    return f"the kernel computes pointwise SiLU attention only (got {kind} / {activation})"
  if (not mask.causal or mask.local_window or mask.global_prefix or mask.contextual_prefix or blocked_sla
      or not same_length):
    return ("the kernel computes causal self-attention, optionally with targets, only (no windows, "
            "contextual prefix or cross-attention)")
  if dropout:
    return "the kernel has no attention-weight dropout"
  if bias is not None and bias.ts_weights is not None and bias.ts_weights.shape[0] > MAX_TIME_BUCKETS:
    return f"the kernel takes at most {MAX_TIME_BUCKETS} time buckets (got {bias.ts_weights.shape[0]})"
  return None


def causal_silu_attention(q_NLD: jax.Array, k_NLD: jax.Array, v_NLD: jax.Array, lengths_N: jax.Array, *,
                          heads: int, alpha: float, scale: float, bias: RelativeBias | None,
                          num_targets: int = 0) -> jax.Array:
  """[N, L, Dv] for head-folded rows n = b * heads + h (right-padded; padding queries give 0); the
  last `num_targets` real tokens of a row see the history and themselves only."""
  pos_w = ts_w = buckets = None
  if bias is not None and bias.pos_weights is not None:
    pos_w = bias.pos_weights
  if bias is not None and bias.ts_weights is not None:
    ts_w = bias.ts_weights
    # Key-major [B, Lk, Lq] (the gap is symmetric), so the kernel reads W queries of one key in a row.
    # Not differentiated: the timestamps are data.
    buckets = jax.lax.stop_gradient(
        time_buckets(bias.key_times, bias.query_times, ts_w.shape[0])).astype(jnp.uint8)
  return _attention(heads, float(alpha), float(scale), int(num_targets), q_NLD, k_NLD, v_NLD, pos_w, ts_w,
                    lengths_N, buckets)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _attention(heads, alpha, scale, targets, q, k, v, pos_w, ts_w, lengths, buckets):
  return native.causal_attention_fwd(q, k, v, lengths, pos_w, ts_w, buckets, heads=heads, alpha=alpha, scale=scale,
                                     num_targets=targets)


def _attention_fwd(heads, alpha, scale, targets, q, k, v, pos_w, ts_w, lengths, buckets):
  out = native.causal_attention_fwd(q, k, v, lengths, pos_w, ts_w, buckets, heads=heads, alpha=alpha, scale=scale,
                                    num_targets=targets)
  return out, (q, k, v, pos_w, ts_w, lengths, buckets)


def _attention_bwd(heads, alpha, scale, targets, res, d_out):
  q, k, v, pos_w, ts_w, lengths, buckets = res
  dq, dk, dv, dpos, dts = native.causal_attention_bwd(q, k, v, lengths, pos_w, ts_w, buckets, d_out,
                                                      heads=heads, alpha=alpha, scale=scale, num_targets=targets)
  return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype),
          None if pos_w is None else dpos.astype(pos_w.dtype), None if ts_w is None else dts.astype(ts_w.dtype),
          None, None)


_attention.defvjp(_attention_fwd, _attention_bwd)
