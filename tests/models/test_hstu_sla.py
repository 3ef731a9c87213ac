"""HSTU (retrieval) with ULTRA-HSTU's semi-local attention: a window covering everything is plain
HSTU, each output reads exactly the keys of its window and the global prefix, and the blockwise
evaluation equals the dense masked one, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models.hstu import HSTU

B, L, V = 3, 24, 50


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  lengths = np.array([L, 17, 5], np.int32)
  ids = rng.integers(1, V, (B, L)).astype(np.int32)
  ids[np.arange(L)[None] >= lengths[:, None]] = 0
  t = np.cumsum(rng.integers(1, 10_000, (B, L)), axis=1).astype(np.int32)
  return {"ids": jnp.asarray(ids), "lengths": jnp.asarray(lengths), "times": jnp.asarray(t),
          "next_times": jnp.asarray(np.concatenate([t[:, 1:], t[:, -1:] + 5], axis=1))}


def _hstu(**kw):
  base = dict(num_items=V, dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_len=L, attn_norm_len=L,
              dropout=0.0)
  return HSTU(**{**base, **kw})


def test_a_window_over_everything_is_plain_hstu():
  batch = _batch()
  plain, wide = _hstu(), _hstu(local_window=L, global_window=0)
  params = jax.jit(plain.init)(jax.random.key(0), batch)
  ref = jax.jit(plain.apply)(params, batch)[0]
  np.testing.assert_allclose(jax.jit(wide.apply)(params, batch)[0], ref, rtol=1e-5, atol=1e-6)
  narrow = _hstu(local_window=4, global_window=2)
  assert not np.allclose(jax.jit(narrow.apply)(params, batch)[0][0, 10:], ref[0, 10:])


@pytest.mark.parametrize("k1,k2", [(4, 0), (3, 5), (1, 2)])
def test_each_output_reads_its_window_and_the_global_prefix_only(k1, k2):
  """One block: output i changes with the item at j exactly when i − K1 < j <= i or j < K2 (j <= i)."""
  batch = _batch(1)
  model = _hstu(num_blocks=1, local_window=k1, global_window=k2, use_time_bias=False)
  params = model.init(jax.random.key(1), batch)
  out = model.apply(params, batch)[0][0]
  for j in (0, 3, 9, 15):
    ids = batch["ids"].at[0, j].set(batch["ids"][0, j] % (V - 1) + 1)
    moved = np.abs(np.asarray(model.apply(params, dict(batch, ids=ids))[0][0] - out)).max(axis=1) > 1e-6
    i = np.arange(L)
    want = (j <= i) & ((i - k1 < j) | (j < k2))
    np.testing.assert_array_equal(moved, want, err_msg=f"item at {j}")


def test_blockwise_equals_dense_masked_values_and_gradients():
  batch = _batch(2)
  kw = dict(local_window=6, global_window=3, use_position_bias=False, use_time_bias=False)
  dense, blocked = _hstu(**kw), _hstu(**kw, sla_block=8)
  params = jax.jit(dense.init)(jax.random.key(2), batch)

  def loss(model, p):
    out, table = model.apply(p, batch)
    return jnp.sum(jnp.sin(out @ table.T))

  np.testing.assert_allclose(jax.jit(blocked.apply)(params, batch)[0], jax.jit(dense.apply)(params, batch)[0],
                             rtol=1e-5, atol=1e-6)
  gd = jax.jit(jax.grad(lambda p: loss(dense, p)))(params)
  gb = jax.jit(jax.grad(lambda p: loss(blocked, p)))(params)
  for a, b in zip(jax.tree_util.tree_leaves(gd), jax.tree_util.tree_leaves(gb)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_impossible_settings_are_named():
  batch = _batch()
  for kw, match in ((dict(global_window=2), "need local_window > 0"),
                    (dict(local_window=4, sla_block=8), "takes no relative bias"),
                    (dict(local_window=-1), "must be >= 0")):
    with pytest.raises(ValueError, match=match):
      _hstu(**kw).init(jax.random.key(0), batch)


def test_ml1m_configs_resolve_to_their_models():
  from configs import linear_hstu_ml1m, ultra_hstu_ml1m   # pylint: disable=import-outside-toplevel
  from recjax.models import build_model                   # pylint: disable=import-outside-toplevel
  sla, full = ultra_hstu_ml1m.get_config(), ultra_hstu_ml1m.get_config("full,quick")
  assert (sla.model.local_window, sla.model.global_window, sla.model.sla_block) == (64, 16, 32)
  assert (full.model.local_window, full.model.sla_block, full.quick) == (0, 0, True)
  for c in (sla, full):   # the control differs from the SLA run by the mask alone
    assert not c.model.use_position_bias and c.model.use_time_bias == "off"
  assert sla.name != full.name
  model = build_model(dict(sla.model.copy_and_resolve_references(), use_time_bias=False), 100)
  assert model.attention_mask()[0].local_window == 64
  lin = linear_hstu_ml1m.get_config()
  assert build_model(dict(lin.model), 100).state_kind == "outer"
  for bad in (lambda: ultra_hstu_ml1m.get_config("sla"), lambda: linear_hstu_ml1m.get_config("full")):
    with pytest.raises(ValueError, match="unknown argument"):
      bad()
