"""The XLA attention path: its speed-motivated pieces equal the plain formulas."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.hstu_attention import hstu_attention_reference
from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import add_broadcast_bias, attention
from recjax.layers.relative_bias import RelativeBias
from recjax.layers import tiled_attention
from recjax.layers.tiled_attention import CausalTiling, resolve_tiling, tiles_run


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



@pytest.mark.parametrize("heads,kind,dropout,time_bias,tiling", [
    (1, "pointwise", 0.0, False, CausalTiling(rows=2, q_tiles=3)),   # tiles that do not divide L
    # heads + time bias: also covered at model level (tests/models); ≈ 27 s to compile here
    pytest.param(3, "pointwise", 0.0, True, CausalTiling(rows=4, q_tiles=4), marks=pytest.mark.slow),
    # SASRec: weight dropout (slow: the rolled-loop case below covers softmax + dropout by default)
    pytest.param(2, "softmax", 0.3, False, CausalTiling(rows=3, q_tiles=2), marks=pytest.mark.slow),
    (1, "softmax", 0.0, True, CausalTiling(rows=64, q_tiles=1)),      # one group, one tile
    # the rolled loop over groups (what large batches compile to): bias gradients carried across groups
    (1, "pointwise", 0.0, True, CausalTiling(rows=2, q_tiles=3, max_unrolled_groups=1)),
    (2, "softmax", 0.3, False, CausalTiling(rows=3, q_tiles=2, max_unrolled_groups=2)),
])
def test_tiled_causal_path_equals_dense_path(heads, kind, dropout, time_bias, tiling):
  """Skipping causally and padding-hidden tiles changes nothing: values, all gradients, dropout."""
  b, l, d = 7, 11, 4
  ks = jax.random.split(jax.random.key(4), 6)
  q, k, v = (jax.random.normal(ks[i], (b, l, heads, d)) for i in range(3))
  lengths = jnp.array([11, 4, 0, 7, 11, 1, 9])
  pos_w = jax.random.normal(ks[3], (2 * l - 1,)) * 0.1
  ts_w = jax.random.normal(ks[4], (8,)) * 0.1 if time_bias else None
  times = jnp.cumsum(jax.random.randint(ks[5], (b, l), 1, 500), axis=1)

  def f(q, k, v, pw, tw, tiling):
    out = attention(q, k, v, lengths_B=lengths, mask=MaskSpec(causal=True), kind=kind, alpha=0.5, scale=1 / l,
                    bias=RelativeBias(pw, tw, times if time_bias else None, times if time_bias else None),
                    dropout_rate=dropout, dropout_rng=jax.random.key(9) if dropout else None, tiling=tiling)
    return jnp.sum(jnp.sin(out)), out

  argnums = (0, 1, 2, 3, 4) if time_bias else (0, 1, 2, 3)
  args = (q, k, v, pos_w, ts_w)
  (la, oa), ga = jax.value_and_grad(f, argnums, has_aux=True)(*args, tiling)
  (lb, ob), gb = jax.value_and_grad(f, argnums, has_aux=True)(*args, None)
  np.testing.assert_allclose(oa, ob, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  for x, y in zip(ga, gb):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_tiled_path_skips_tiles_it_cannot_see():
  """A batch of short rows runs no branch past the first tile: output there is exactly zero."""
  q = jax.random.normal(jax.random.key(0), (4, 12, 1, 3))
  out = attention(q, q, q, lengths_B=jnp.array([3, 2, 0, 1]), mask=MaskSpec(causal=True),
                  tiling=CausalTiling(rows=2, q_tiles=4))
  np.testing.assert_array_equal(out[:, 3:], 0.0)
  assert float(jnp.abs(out[0, :3]).sum()) > 0


def _needed_tiles(lengths, tiling, l):
  """Brute force: (group, tile) pairs holding a visible (query, key) pair, rows sorted longest first."""
  t = -(-l // tiling.q_tiles)
  r = min(tiling.rows, len(lengths))
  rows = sorted(lengths, reverse=True)
  rows += [0] * (-len(rows) % r)
  needed = set()
  for g in range(len(rows) // r):
    for i in range(tiling.q_tiles):
      for n in rows[g * r:(g + 1) * r]:
        if any(j <= q < n for q in range(i * t, min((i + 1) * t, l)) for j in range(l)):
          needed.add((g, i))
  return needed


@pytest.mark.parametrize("tiling", [CausalTiling(rows=2, q_tiles=4), CausalTiling(rows=3, q_tiles=3),
                                    CausalTiling(rows=1, q_tiles=5), CausalTiling(rows=16, q_tiles=2)])
def test_tiles_run_equals_brute_force(tiling):
  lengths = [12, 0, 3, 7, 1, 12, 5, 0, 9, 2, 4]
  run = np.asarray(tiles_run(jnp.array(lengths), 12, tiling))
  assert {tuple(map(int, x)) for x in np.argwhere(run)} == _needed_tiles(lengths, tiling, 12)


@pytest.mark.parametrize("tiling", [CausalTiling(rows=2, q_tiles=4), CausalTiling(rows=2, q_tiles=4, max_unrolled_groups=1)])
def test_tiled_path_executes_exactly_the_needed_tiles(tiling, monkeypatch):
  """Counted at run time: each needed tile once forward and once backward, no other tile."""
  executed = collections.Counter()
  monkeypatch.setattr(tiled_attention, "_tile_hook", lambda p, g, i: executed.update([(p, int(g), int(i))]))
  lengths = [3, 12, 0, 1, 7, 2, 0, 5]
  q = jax.random.normal(jax.random.key(0), (8, 12, 1, 3))
  f = jax.jit(jax.grad(lambda q: jnp.sum(jnp.sin(attention(q, q, q, lengths_B=jnp.array(lengths),
                                                                 mask=MaskSpec(causal=True), tiling=tiling)))))
  jax.block_until_ready(f(q))
  jax.effects_barrier()
  needed = _needed_tiles(lengths, tiling, 12)
  assert 0 < len(needed) < 4 * 4                     # some tiles skipped, some run
  assert executed == collections.Counter([(p, g, i) for p in ("fwd", "bwd") for g, i in needed])


def test_tiling_auto_is_on_for_cpu_only(monkeypatch):
  assert resolve_tiling(True) == CausalTiling() and resolve_tiling(False) is None
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
  assert resolve_tiling("auto") == CausalTiling()
  for backend in ("gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
    assert resolve_tiling("auto") is None
  with pytest.raises(ValueError, match="attention_tiling must be one of"):
    resolve_tiling("sometimes")


def test_tiling_setting_overridable_from_the_command_line():
  """Configs hold a string, so `--config.model.attention_tiling=off` (text) must switch it off."""
  assert resolve_tiling("off") is None and resolve_tiling("False") is None
  assert resolve_tiling("on") == CausalTiling() and resolve_tiling(" TRUE ") == CausalTiling()
  from configs import hstu_ml1m
  config = hstu_ml1m.get_config()
  config.model.attention_tiling = "off"      # what ml_collections' flag parser does with the text
  assert resolve_tiling(config.model.attention_tiling) is None


def test_tiling_rejects_bad_sizes():
  with pytest.raises(ValueError, match="rows, q_tiles and max_unrolled_groups >= 1"):
    CausalTiling(rows=0)
  with pytest.raises(ValueError, match="max_unrolled_groups >= 1"):
    CausalTiling(max_unrolled_groups=0)


def test_cross_attention_kv_lengths_match_numpy():
  """Queries [B, Lq] read keys [B, Lk] with their own valid lengths: a per-row numpy softmax."""
  b, lq, lk, h, d = 3, 4, 6, 2, 5
  ks = jax.random.split(jax.random.key(7), 3)
  q = jax.random.normal(ks[0], (b, lq, h, d))
  k, v = (jax.random.normal(ks[i], (b, lk, h, d)) for i in (1, 2))
  kv_len = np.array([6, 2, 1])
  out = np.asarray(attention(q, k, v, lengths_B=None, kv_lengths_B=jnp.asarray(kv_len),
                             mask=MaskSpec(causal=False), kind="softmax", alpha=0.5))
  qn, kn, vn = np.asarray(q), np.asarray(k), np.asarray(v)
  for bi in range(b):
    for hi in range(h):
      s = 0.5 * qn[bi, :, hi] @ kn[bi, :kv_len[bi], hi].T
      w = np.exp(s - s.max(1, keepdims=True))
      w /= w.sum(1, keepdims=True)
      np.testing.assert_allclose(out[bi, :, hi], w @ vn[bi, :kv_len[bi], hi], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="non-positional"):
    attention(q, k, v, lengths_B=None, kv_lengths_B=jnp.asarray(kv_len), mask=MaskSpec(causal=True))
