"""GACT: the f = 1, G = 0 reduction, folding, and causality at fold granularity."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.mask import MaskSpec
from recjax.layers.gact import GACT, fold_time
from recjax.layers.transformer import TransformerBlock

D = 8


def _setup(fold, num_global, L=13, lengths=(13, 6, 1), context=0, seed=0):
  model = GACT(dim=D, fold=fold, num_global=num_global, num_blocks=2, num_heads=2)
  ks = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(ks[0], (len(lengths), L, D))
  ctx = jax.random.normal(ks[1], (len(lengths), context, D)) if context else None
  lengths = jnp.array(lengths)
  params = jax.jit(lambda k, x, c: model.init(k, x, lengths, c)["params"])(ks[2], x, ctx)   # eager init is slow
  run = jax.jit(lambda p, x, c: model.apply({"params": p}, x, lengths, c))
  return params, x, ctx, lengths, run


def test_fold_1_no_globals_is_the_plain_stack():
  params, x, _, lengths, run = _setup(fold=1, num_global=0)
  hist, glob, m_len = run(params, x, None)
  @jax.jit
  def plain(x):
    for i in range(2):
      x = TransformerBlock(2, D // 2, 4 * D, activation="gelu").apply(
          {"params": params[f"block_{i}"]}, x, lengths, mask=MaskSpec(causal=True))
    return x
  want = plain(x)
  real = (jnp.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
  np.testing.assert_allclose(hist, jnp.where(real, want, 0), rtol=1e-5, atol=1e-6)
  assert glob.shape == (3, 0, D) and (m_len == lengths).all()
  assert set(params) == {"block_0", "block_1"}     # no projection, no queries at f = 1, G = 0


def test_fold_time_layout():
  x = jnp.arange(2 * 7 * 2, dtype=jnp.float32).reshape(2, 7, 2) + 1
  got, m_len = fold_time(x, jnp.array([7, 4]), 3)
  assert got.shape == (2, 3, 6) and m_len.tolist() == [3, 2]
  np.testing.assert_array_equal(got[0, 1], x[0, 3:6].reshape(-1))      # events 3, 4, 5 side by side
  np.testing.assert_array_equal(got[0, 2], jnp.concatenate([x[0, 6], jnp.zeros(4)]))
  np.testing.assert_array_equal(got[1, 1], jnp.concatenate([x[1, 3], jnp.zeros(4)]))  # past length: 0
  with pytest.raises(ValueError, match="fold"):
    fold_time(x, jnp.array([7, 4]), 0)
  with pytest.raises(ValueError, match="align"):
    fold_time(x, jnp.array([7, 4]), 3, align="middle")


def test_fold_time_newest_alignment():
  """align="newest": the newest event in the last slot of the last fold at every length; the partly
  filled fold is the oldest; the same tokens as "oldest" where f divides the length."""
  x = jnp.arange(3 * 7 * 2, dtype=jnp.float32).reshape(3, 7, 2) + 1
  lengths = jnp.array([7, 4, 6])
  got, m_len = fold_time(x, lengths, 3, align="newest")
  assert got.shape == (3, 3, 6) and m_len.tolist() == [3, 2, 2]
  for b, n in enumerate(lengths.tolist()):
    last = got[b, -(-n // 3) - 1]
    np.testing.assert_array_equal(last[-2:], x[b, n - 1])                # newest event, last slot
    np.testing.assert_array_equal(last, x[b, n - 3:n].reshape(-1))       # the three newest, in order
  # Row 0 (7 events): two zero slots, then event 0, in the oldest fold; nothing past the folded length.
  np.testing.assert_array_equal(got[0, 0], jnp.concatenate([jnp.zeros(4), x[0, 0]]))
  assert not np.asarray(got[1, 2]).any() and not np.asarray(got[2, 2]).any()
  # Row 1 (4 events): the oldest fold holds event 0 alone, in its last slot.
  np.testing.assert_array_equal(got[1, 0], jnp.concatenate([jnp.zeros(4), x[1, 0]]))
  # Row 2 (6 events, a multiple of 3): exactly the oldest-first layout.
  oldest, _ = fold_time(x, lengths, 3)
  np.testing.assert_array_equal(got[2], oldest[2])
  # Every real event appears exactly once, whatever the alignment.
  for b, n in enumerate(lengths.tolist()):
    vals = np.sort(np.asarray(got[b]).reshape(-1))
    np.testing.assert_array_equal(vals[vals > 0], np.sort(np.asarray(x[b, :n]).reshape(-1)))


@pytest.mark.parametrize("fold,context", [(3, 0), (4, 2)])
def test_causal_at_fold_granularity(fold, context):
  """Changing event e changes folded outputs m >= e // f (and the global queries), never m < e // f;
  events past the length change nothing."""
  L = 13
  params, x, ctx, lengths, run = _setup(fold, num_global=2, L=L, context=context)
  base_h, base_g, m_len = run(params, x, ctx)
  for e in (0, 5, 7, 12):
    h, g, _ = run(params, x.at[0, e].add(3.0), ctx)
    changed = np.abs(np.asarray(h - base_h)[0]).max(-1) > 1e-6
    m = e // fold
    assert not changed[:m].any(), (e, changed)
    assert changed[m:int(m_len[0])].all(), (e, changed)
    assert np.abs(np.asarray(g - base_g)[0]).max() > 1e-6          # the globals see all history
    np.testing.assert_array_equal(h[1:], base_h[1:])                 # other rows untouched
  h, g, _ = run(params, x.at[1, 8:].add(5.0), ctx)                   # row 1 has 6 events
  np.testing.assert_array_equal(h, base_h)
  np.testing.assert_array_equal(g, base_g)


def test_history_never_reads_the_global_queries():
  params, x, ctx, _, run = _setup(fold=2, num_global=3, context=1)
  h, g, _ = run(params, x, ctx)
  moved = dict(params, global_queries=params["global_queries"] + 1.0)
  h2, g2, _ = run(moved, x, ctx)
  np.testing.assert_array_equal(h, h2)
  assert np.abs(np.asarray(g - g2)).max() > 1e-4
  assert g.shape == (3, 3, D)
