"""Every kernel lowers for CUDA from this CPU-only machine (Triton, not Mosaic).

`jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` runs the Pallas
Triton lowering without a GPU; only `.compile()` would need one. This catches
ops the Triton lowering lacks (e.g. erf), non power-of-two tiles, and a
missing `compiler_params` (which would send the kernel to Mosaic GPU).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest

from pallas_kernels import gdpa as gdpa_lib
from pallas_kernels.hstu_attention import hstu_attention
from pallas_kernels.mask import MaskSpec

TRITON_CALL = "__gpu$xla.gpu.triton"
FWD, DQ, DKDV = ("hstu_attention_fwd", "hstu_attention_bwd_dq",
                 "hstu_attention_bwd_dkdv")

B, L, H = 2, 200, 2  # HSTU ML-1M-like: L and head dim 50 need padding.


def _hstu(activation: str, mask: MaskSpec, dtype=jnp.float32):
  def f(q, k, v, pos, ts):
    t = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32) * 60, (B, L))
    return hstu_attention(q, k, v, jnp.array([L, 37]), mask=mask,
                          scale=1.0 / L, activation=activation,
                          pos_weights=pos, ts_weights=ts, query_times=t,
                          key_times=t)
  args = (jnp.zeros((B, L, H, 50), dtype), jnp.zeros((B, L, H, 50), dtype),
          jnp.zeros((B, L, H, 24), dtype), jnp.zeros((2 * L - 1,)),
          jnp.zeros((129,)))
  return f, args


def _gdpa():
  f = lambda q, k, v: gdpa_lib.gdpa(q, k, v, tau=1024.0,
                                    kv_lengths=jnp.array([32, 5]))
  return f, (jnp.zeros((B, 1024, H, 64)), jnp.zeros((B, 32, H, 64)),
             jnp.zeros((B, 32, H, 64)))


def _seed_pooling():
  f = lambda s, k, v: gdpa_lib.seed_pooling_attention(
      s, k, v, jnp.array([300, 0]))
  return f, (jnp.zeros((64, H, 32)), jnp.zeros((B, 300, H, 32)),
             jnp.zeros((B, 300, H, 32)))


def _sliding_window():
  f = lambda q, k, v: gdpa_lib.sliding_window_attention(
      q, k, v, jnp.array([L, 99]), window=50, activation="gelu")
  return f, (jnp.zeros((B, L, H, 32)),) * 3


OPS = {
    "hstu_silu_causal": lambda: _hstu("silu", MaskSpec()),
    "hstu_silu_semi_local_targets": lambda: _hstu(
        "silu", MaskSpec(local_window=64, global_prefix=16,
                         contextual_prefix=4, num_targets=3)),
    "hstu_gelu_bf16": lambda: _hstu("gelu", MaskSpec(), jnp.bfloat16),
    "hstu_relu": lambda: _hstu("relu", MaskSpec(local_window=32)),
    "hstu_identity": lambda: _hstu("identity", MaskSpec(causal=False)),
    "softmax_causal": lambda: _hstu("softmax", MaskSpec()),
    "softmax_semi_local_bf16": lambda: _hstu(
        "softmax", MaskSpec(local_window=64, global_prefix=16), jnp.bfloat16),
    "gdpa": _gdpa,
    "seed_pooling": _seed_pooling,
    "sliding_window": _sliding_window,
}


def _lower_text(f, args) -> str:
  return jax.jit(f).trace(*args).lower(
      lowering_platforms=("cuda",)).as_text()


def _triton_kernels(text: str) -> list[str]:
  assert "mosaic" not in text.lower(), "a kernel went to Mosaic GPU"
  assert text.count(TRITON_CALL) >= 1
  return [n for n in (FWD, DQ, DKDV) if re.search(n + r"\\00", text)]


@pytest.mark.parametrize("op", list(OPS), ids=list(OPS))
def test_lowers_for_cuda(op: str):
  f, args = OPS[op]()
  fwd_text = _lower_text(f, args)
  assert fwd_text.count(TRITON_CALL) == 1
  assert _triton_kernels(fwd_text) == [FWD]
  grad = jax.grad(lambda *a: f(*a).astype(jnp.float32).sum(),
                  argnums=tuple(range(len(args))))
  grad_text = _lower_text(grad, args)
  assert grad_text.count(TRITON_CALL) == 3
  assert _triton_kernels(grad_text) == [FWD, DQ, DKDV]
