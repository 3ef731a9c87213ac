"""The XLA attention path: its speed-motivated pieces equal the plain formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.hstu_attention import hstu_attention_reference
from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import add_broadcast_bias, attention
from recjax.layers.relative_bias import RelativeBias


@pytest.mark.parametrize("rows", [1, 6])
def test_add_broadcast_bias_gradient_equals_plain_add(rows):
  s = jax.random.normal(jax.random.key(0), (6, 5, 7))
  bias = jax.random.normal(jax.random.key(1), (rows, 5, 7))
  g = jax.random.normal(jax.random.key(2), (6, 5, 7))
  f = lambda s, b: jnp.sum(add_broadcast_bias(s, b) * g)
  plain = lambda s, b: jnp.sum((s + b) * g)
  for a, b in zip(jax.grad(f, (0, 1))(s, bias), jax.grad(plain, (0, 1))(s, bias)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("heads,kind", [(1, "pointwise"), (3, "pointwise"), (2, "softmax")])
def test_xla_path_matches_kernel_reference(heads, kind):
  """Head folding, the shared-bias gradient and the mask agree with the kernels' plain reference."""
  b, l, d = 3, 9, 4
  ks = jax.random.split(jax.random.key(3), 6)
  q, k, v = (jax.random.normal(ks[i], (b, l, heads, d)) for i in range(3))
  lengths = jnp.array([9, 4, 0])
  pos_w = jax.random.normal(ks[3], (2 * l - 1,)) * 0.1
  ts_w = jax.random.normal(ks[4], (8,)) * 0.1
  times = jnp.cumsum(jax.random.randint(ks[5], (b, l), 1, 500), axis=1)
  act = "softmax" if kind == "softmax" else "silu"

  def ours(q, k, v, pw, tw):
    out = attention(q, k, v, lengths_B=lengths, mask=MaskSpec(causal=True), kind=kind, activation="silu",
                    alpha=0.5, scale=1 / l, bias=RelativeBias(pw, tw, times, times))
    return jnp.sum(jnp.where((jnp.arange(l) < lengths[:, None])[:, :, None, None], out, 0.0) ** 2)

  def ref(q, k, v, pw, tw):
    out = hstu_attention_reference(q, k, v, lengths, mask=MaskSpec(causal=True), scale=1 / l, pos_weights=pw,
                                   ts_weights=tw, query_times=times, key_times=times, activation=act, alpha=0.5)
    return jnp.sum(jnp.where((jnp.arange(l) < lengths[:, None])[:, :, None, None], out, 0.0) ** 2)

  args = (q, k, v, pos_w, ts_w)
  la, ga = jax.value_and_grad(ours, range(5))(*args)
  lb, gb = jax.value_and_grad(ref, range(5))(*args)
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  for x, y in zip(ga, gb):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)

