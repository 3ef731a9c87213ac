"""Kunlun layers against brute-force forms: GDPA = personalised FFN, SumKronLinear = its dense
Kronecker sum, seed pooling ignores padding, the window mask is its definition, MoWE decomposes."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import gdpa as kernels
from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import attention
from recjax.layers.kunlun import (GDPA, HierarchicalSeedPooling, SumKronLinear, WindowAttention,
                                  sum_kron_dense)
from recjax.layers.wukong import MixtureOfWukongExperts


def np_gelu(x):
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def np_layer_norm(x):
  return (x - x.mean()) / np.sqrt(x.var() + 1e-6)


@pytest.mark.parametrize("form", ["gdpa", "pffn"])   # pffn: the −GDPA ablation's per-sample matmuls
def test_gdpa_equals_per_sample_ffn_with_generated_weights(form):
  b, l, d, heads, n = 2, 6, 8, 2, 3
  tau = 6.0
  ks = jax.random.split(jax.random.key(0), 2)
  s = jax.random.normal(ks[0], (b, l, d))
  xsum = jax.random.normal(ks[1], (b, n, d))
  lengths = jnp.array([6, 3])
  layer = GDPA(heads=heads, tau=tau, activation="gelu", form=form)
  params = layer.init(jax.random.key(1), s, lengths, xsum)
  got = np.asarray(jax.jit(layer.apply)(params, s, lengths, xsum))

  p = jax.tree_util.tree_map(np.asarray, params["params"])
  s_np, x_np, dh = np.asarray(s, np.float64), np.asarray(xsum, np.float64), d // heads
  want = np.zeros((b, l, d))
  for bi in range(b):
    w1 = x_np[bi] @ p["key"]["kernel"] + p["key"]["bias"]        # generated first-layer weights [n, d]
    w2 = x_np[bi] @ p["value"]["kernel"] + p["value"]["bias"]    # generated second-layer weights [n, d]
    for li in range(int(lengths[bi])):
      x = np_layer_norm(s_np[bi, li])
      for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        hidden = np_gelu(w1[:, sl] @ x[sl] / tau)                # [n]: the FFN's hidden layer
        want[bi, li, sl] = s_np[bi, li, sl] + w2[:, sl].T @ hidden
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_gdpa_attention_agrees_with_kernel_reference():
  ks = jax.random.split(jax.random.key(2), 3)
  q = jax.random.normal(ks[0], (2, 7, 2, 4))
  k, v = (jax.random.normal(kk, (2, 3, 2, 4)) for kk in ks[1:])
  q_len = jnp.array([7, 2])
  got = attention(q, k, v, lengths_B=q_len, kv_lengths_B=jnp.array([3, 3]), mask=MaskSpec(causal=False),
                  kind="pointwise", activation="silu", alpha=1.0 / 7)
  want = kernels.gdpa_reference(q, k, v, tau=7.0, q_lengths=q_len, activation="silu")
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sum_kron_linear_equals_dense_kronecker_sum():
  b, s, t, d, r = 3, 5, 2, 3, 2
  x = jax.random.normal(jax.random.key(3), (b, s, d))
  layer = SumKronLinear(n_out=t, rank=r)
  params = layer.init(jax.random.key(4), x)
  got = layer.apply(params, x)
  z, w = (np.asarray(params["params"][k], np.float64) for k in ("z_RST", "w_RDE"))
  dense = sum(np.kron(z[i], w[i]) for i in range(r))          # [S*D, T*D] on row-major vec(X)
  want = (np.asarray(x, np.float64).reshape(b, s * d) @ dense).reshape(b, t, d)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sum_kron_dense(params["params"]["z_RST"], params["params"]["w_RDE"]),
                             dense, rtol=1e-5, atol=1e-6)
  assert z.size + w.size == r * (s * t + d * d)


def test_seed_pooling_ignores_padding_and_matches_kernel_reference():
  b, l, d = 3, 9, 8
  lengths = jnp.array([9, 4, 0])
  s = jax.random.normal(jax.random.key(5), (b, l, d))
  junk = jax.random.normal(jax.random.key(6), (b, l, d)) * 100.0
  padded = jnp.arange(l)[None, :, None] >= lengths[:, None, None]
  layer = HierarchicalSeedPooling(n_seeds=8, n_tokens=2, heads=2, kron_rank=2)
  params = jax.jit(layer.init)(jax.random.key(7), s, lengths)
  apply = jax.jit(layer.apply)
  clean = apply(params, jnp.where(padded, 0.0, s), lengths)
  dirty = apply(params, jnp.where(padded, junk, s), lengths)
  assert clean.shape == (b, 2, d)
  np.testing.assert_array_equal(clean, dirty)
  np.testing.assert_array_equal(clean[2], 0.0)                 # no events: the summary is zero
  assert float(jnp.abs(clean[1]).max()) > 0.0                   # a 4-event sequence is not

  # The seed attention the layer runs is the kernel family's seed pooling.
  ks = jax.random.split(jax.random.key(8), 3)
  seeds = jax.random.normal(ks[0], (8, 2, 4))
  k, v = (jax.random.normal(kk, (b, l, 2, 4)) for kk in ks[1:])
  got = attention(jnp.broadcast_to(seeds[None], (b, 8, 2, 4)), k, v, lengths_B=None, kv_lengths_B=lengths,
                  mask=MaskSpec(causal=False), kind="softmax", alpha=0.5)
  want = kernels.seed_pooling_attention_reference(seeds, k, v, lengths)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_pma_pooling_is_plain_seed_attention():
  """compress=False (PMA, InterFormer's pooling): softmax(LN(seeds) · (S Wk)ᵀ / sqrt(dh)) (S Wv) per head
  over the valid events, no SumKronLinear; brute force in numpy."""
  b, l, d, heads, t = 2, 5, 4, 2, 3
  lengths = np.array([5, 2])
  s = jax.random.normal(jax.random.key(9), (b, l, d))
  layer = HierarchicalSeedPooling(n_seeds=t, n_tokens=t, heads=heads, kron_rank=1, compress=False)
  params = jax.jit(layer.init)(jax.random.key(10), s, jnp.asarray(lengths))
  got = np.asarray(jax.jit(layer.apply)(params, s, jnp.asarray(lengths)))
  p = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params["params"])
  assert "compress" not in p
  dh, sn = d // heads, np.asarray(s, np.float64)
  q = np.stack([np_layer_norm(x) for x in p["seeds_SD"]])
  want = np.zeros((b, t, d))
  for bi in range(b):
    k = sn[bi, :lengths[bi]] @ p["key"]["kernel"] + p["key"]["bias"]
    v = sn[bi, :lengths[bi]] @ p["value"]["kernel"] + p["value"]["bias"]
    for h in range(heads):
      sl = slice(h * dh, (h + 1) * dh)
      w = np.exp(q[:, sl] @ k[:, sl].T / np.sqrt(dh))
      want[bi, :, sl] = (w / w.sum(1, keepdims=True)) @ v[:, sl]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="n_seeds == n_tokens"):
    HierarchicalSeedPooling(n_seeds=4, n_tokens=2, heads=1, kron_rank=1, compress=False).init(
        jax.random.key(0), s, jnp.asarray(lengths))


def test_token_linear_compression_is_one_token_map_over_the_seeds():
  """compress_with="token_linear" (the −SumKronLinear row): the uncompressed seed attention output
  mapped by one [S, T] matrix, features untouched."""
  b, l, d, seeds, t = 2, 5, 4, 6, 2
  lengths = jnp.array([5, 3])
  s = jax.random.normal(jax.random.key(11), (b, l, d))
  layer = HierarchicalSeedPooling(n_seeds=seeds, n_tokens=t, heads=2, kron_rank=2, compress_with="token_linear")
  params = layer.init(jax.random.key(12), s, lengths)
  assert "compress" not in params["params"] and params["params"]["compress_ST"].shape == (seeds, t)
  got = layer.apply(params, s, lengths)
  pma = HierarchicalSeedPooling(n_seeds=seeds, n_tokens=seeds, heads=2, kron_rank=2, compress=False)
  pooled = pma.apply({"params": {k: v for k, v in params["params"].items() if k != "compress_ST"}}, s, lengths)
  want = np.einsum("bsd,st->btd", np.asarray(pooled), np.asarray(params["params"]["compress_ST"]))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="compress_with"):
    HierarchicalSeedPooling(n_seeds=seeds, n_tokens=t, heads=2, kron_rank=2, compress_with="dense").init(
        jax.random.key(0), s, lengths)


@pytest.mark.parametrize("window", [1, 3])
def test_window_attention_mask_matches_definition(window):
  b, l, h, dk = 2, 7, 2, 4
  lengths = np.array([7, 5])
  ks = jax.random.split(jax.random.key(9), 3)
  q, k, v = (jax.random.normal(kk, (b, l, h, dk)) for kk in ks)
  got = attention(q, k, v, lengths_B=jnp.asarray(lengths), mask=MaskSpec(causal=False, local_window=window),
                  kind="softmax", alpha=0.5)
  qn, kn, vn = (np.asarray(x, np.float64) for x in (q, k, v))
  want = np.zeros((b, l, h, dk))
  for bi in range(b):
    for hi in range(h):
      for i in range(lengths[bi]):
        js = [j for j in range(lengths[bi]) if abs(i - j) < window]   # the definition
        sc = np.array([0.5 * qn[bi, i, hi] @ kn[bi, j, hi] for j in js])
        p = np.exp(sc - sc.max())
        want[bi, i, hi] = (p / p.sum()) @ vn[bi, js, hi]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  ref = kernels.sliding_window_attention_reference(q, k, v, jnp.asarray(lengths), window=window, alpha=0.5)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_window_attention_layer_zeroes_padding():
  s = jax.random.normal(jax.random.key(10), (2, 6, 8))
  lengths = jnp.array([6, 2])
  layer = WindowAttention(heads=2, window=2)
  params = layer.init(jax.random.key(11), s, lengths)
  out = layer.apply(params, s, lengths)
  np.testing.assert_array_equal(out[1, 2:], 0.0)
  assert float(jnp.abs(out[1, :2]).max()) > 0.0


@pytest.mark.parametrize("n_x", [1, 2])
def test_wukong_decomposed_equals_plain(n_x):
  b, nc, n_cand, d = 2, 5, 4, 6
  ks = jax.random.split(jax.random.key(12), 2)
  c = jax.random.normal(ks[0], (b, nc, d))
  x = jax.random.normal(ks[1], (b, n_cand, n_x, d))
  layer = MixtureOfWukongExperts(n_out=4, num_experts=2, hidden=16)
  params = jax.jit(layer.init)(jax.random.key(13), c, x)
  apply = jax.jit(layer.apply, static_argnames="decomposed")
  plain = apply(params, c, x)
  decomposed = apply(params, c, x, decomposed=True)
  assert plain.shape == (b, n_cand, 4, d)
  np.testing.assert_allclose(decomposed, plain, rtol=1e-5, atol=1e-5)
  # Candidate n alone (no batching over candidates) gives the same row: candidates don't mix.
  one = apply(params, c, x[:, 1:2])
  np.testing.assert_allclose(one[:, 0], plain[:, 1], rtol=1e-5, atol=1e-5)


def test_bad_shapes_raise_clear_errors():
  with pytest.raises(ValueError, match="divisible by heads"):
    GDPA(heads=3, tau=1.0).init(jax.random.key(0), jnp.zeros((1, 4, 8)), jnp.array([4]), jnp.zeros((1, 2, 8)))
  with pytest.raises(ValueError, match="over-complete"):
    HierarchicalSeedPooling(n_seeds=2, n_tokens=4, heads=1, kron_rank=1).init(
        jax.random.key(0), jnp.zeros((1, 4, 8)), jnp.array([4]))
  with pytest.raises(ValueError, match=r"\[B, N, n_x, D\]"):
    MixtureOfWukongExperts(n_out=2, num_experts=1, hidden=4).init(
        jax.random.key(0), jnp.zeros((1, 3, 4)), jnp.zeros((1, 2, 4)))


def test_cross_attention_pallas_backend_agrees_with_xla():
  """kv_lengths_B reaches the kernel (interpret mode on CPU) as kv_lengths, lengths_B as q_lengths."""
  ks = jax.random.split(jax.random.key(14), 3)
  q = jax.random.normal(ks[0], (2, 8, 1, 4))
  k, v = (jax.random.normal(kk, (2, 4, 1, 4)) for kk in ks[1:])
  kw = dict(lengths_B=jnp.array([8, 5]), kv_lengths_B=jnp.array([4, 2]), mask=MaskSpec(causal=False),
            kind="pointwise", activation="gelu", alpha=0.25)
  np.testing.assert_allclose(attention(q, k, v, backend="pallas", **kw), attention(q, k, v, **kw),
                             rtol=1e-5, atol=1e-6)
