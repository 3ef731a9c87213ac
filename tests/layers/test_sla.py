"""Blocked semi-local attention (`recjax/layers/sla.py`) against the dense masked computation."""
from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import attention
from recjax.layers.relative_bias import RelativeBias
from recjax.layers.sla import SLABlocking

CASES = [  # (mask, block, kind)
    (MaskSpec(local_window=5, global_prefix=3), 4, "pointwise"),
    (MaskSpec(local_window=9, global_prefix=2, contextual_prefix=3, num_targets=4), 8, "pointwise"),
    (MaskSpec(local_window=1, num_targets=2), 8, "pointwise"),
    (MaskSpec(local_window=12, global_prefix=4, contextual_prefix=2, num_targets=3), 4, "softmax"),
]


def _inputs(seed, B=4, L=27, H=2, D=6, E=5):
  ks = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(ks[0], (B, L, H, D)), jax.random.normal(ks[1], (B, L, H, D)),
          jax.random.normal(ks[2], (B, L, H, E)), jnp.array([0, 2, 19, L], jnp.int32))


@pytest.mark.parametrize("mask,block,kind", CASES, ids=lambda c: str(c))
def test_blocked_equals_dense_values_and_gradients(mask, block, kind):
  q, k, v, lengths = _inputs(zlib.crc32(f"{mask}{block}{kind}".encode()))
  kw = dict(lengths_B=lengths, mask=mask, kind=kind, alpha=0.4, scale=1.0 / 27)

  def loss(fn_kw):
    def f(q, k, v):
      out = attention(q, k, v, **kw, **fn_kw)
      return jnp.sum(out * jnp.cos(out)), out   # a non-linear readout: gradients differ per element
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))

  (_, out_b), grads_b = loss(dict(sla=SLABlocking(block)))(q, k, v)
  (_, out_d), grads_d = loss(dict(tiling=None))(q, k, v)
  np.testing.assert_allclose(out_b, out_d, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(out_d).max()) > 0.01
  for name, gb, gd in zip("qkv", grads_b, grads_d):
    np.testing.assert_allclose(gb, gd, rtol=1e-4, atol=1e-5, err_msg=f"d{name}")


def test_no_quadratic_intermediate():
  """Neither the forward nor the backward graph holds an array with L·L elements per row."""
  B, L, H, D = 1, 512, 1, 4
  q = jnp.ones((B, L, H, D))
  mask = MaskSpec(local_window=32, global_prefix=16, num_targets=4)

  def f(q, k, v):
    return attention(q, k, v, lengths_B=jnp.array([L]), mask=mask, sla=SLABlocking(32)).sum()

  jaxpr = jax.make_jaxpr(jax.grad(f, argnums=(0, 1, 2)))(q, q, q)
  sizes = []

  def walk(jp):
    for eqn in jp.eqns:
      sizes.extend(int(np.prod(o.aval.shape)) for o in eqn.outvars if hasattr(o.aval, "shape"))
      for sub in jax.core.jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr)
  assert max(sizes) < L * L // 4, max(sizes)   # band: L·(w+1)·block = 512·64; dense would be L·L


def test_refuses_what_it_cannot_compute():
  q, k, v, lengths = _inputs(0)
  with pytest.raises(ValueError, match="local_window"):
    attention(q, k, v, lengths_B=lengths, mask=MaskSpec(causal=True), sla=SLABlocking())
  with pytest.raises(ValueError, match="local_window"):
    attention(q, k, v, lengths_B=lengths, mask=MaskSpec(causal=False, local_window=3), sla=SLABlocking())
  with pytest.raises(ValueError, match="bias"):
    attention(q, k, v, lengths_B=lengths, mask=MaskSpec(local_window=3), sla=SLABlocking(),
              bias=RelativeBias(jnp.zeros((53,)), None))
  with pytest.raises(ValueError, match="block"):
    SLABlocking(0)
