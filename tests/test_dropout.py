"""The hash dropout: the right keep rate, independent masks per seed, no structure along the index."""
import jax
import jax.numpy as jnp
import numpy as np

from recjax import counter_rng
from recjax.layers.dropout import hash_dropout, keep_mask


def test_keep_rate_and_scaling():
  x = jnp.ones((400, 500))
  y = hash_dropout(x, 0.2, jax.random.key(0))
  kept = np.asarray(y) > 0
  assert abs(kept.mean() - 0.8) < 0.005
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.8, rtol=1e-6)
  np.testing.assert_allclose(float(jnp.mean(y)), 1.0, atol=0.01)


def test_masks_differ_across_seeds_and_are_uncorrelated():
  a = np.asarray(keep_mask(jnp.uint32(1), (200_000,), 0.5), np.float64)
  b = np.asarray(keep_mask(jnp.uint32(2), (200_000,), 0.5), np.float64)
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
  # neighbouring elements are not correlated either (no stripes along rows or columns)
  assert abs(np.corrcoef(a[:-1], a[1:])[0, 1]) < 0.01
  m = a.reshape(400, 500)
  assert abs(np.corrcoef(m[:-1].ravel(), m[1:].ravel())[0, 1]) < 0.01


def test_works_under_jit():
  y = jax.jit(lambda k: hash_dropout(jnp.ones((8, 9)), 0.5, k))(jax.random.key(1))
  assert y.shape == (8, 9) and 0 < float((y > 0).mean()) < 1


def test_same_rng_same_mask():
  x = jnp.ones((64, 64))
  np.testing.assert_array_equal(hash_dropout(x, 0.3, jax.random.key(5)), hash_dropout(x, 0.3, jax.random.key(5)))


def test_attention_masks_do_not_repeat_past_2_32_elements():
  """[n, L, L] weight dropout at L = 8192: element (n=64, i, j) sits 2^32 after (0, i, j).

  A 32-bit element index wraps there and gives both the same mask; the 64-bit index must not.
  Checked on 16 query rows of each (no 2^32-element mask is built), with the keep rate intact.
  """
  l, rate, seed = 8192, 0.2, jnp.uint32(3)
  row0 = jnp.arange(16, dtype=jnp.uint32)[:, None]          # rows n * L + i of (n=0, i < 16)
  row64 = row0 + jnp.uint32(64 * l)                          # (n=64, i < 16): flat index + 2^32
  col = jnp.arange(l, dtype=jnp.uint32)[None, :]
  wrapped = (row64 * l + col)                                # uint32 arithmetic wraps to row0's index
  np.testing.assert_array_equal(counter_rng.bits_at(seed, wrapped), counter_rng.bits_at(seed, row0 * l + col))
  a = np.asarray(counter_rng.keep_at_rows(seed, row0, l, col, rate), np.float64).ravel()
  b = np.asarray(counter_rng.keep_at_rows(seed, row64, l, col, rate), np.float64).ravel()
  assert abs(np.corrcoef(a, b)[0, 1]) < 0.02                # independent, not equal
  assert abs(a.mean() - 0.8) < 0.01 and abs(b.mean() - 0.8) < 0.01
  assert abs(np.corrcoef(b[:-1], b[1:])[0, 1]) < 0.02       # no structure along the high page either
