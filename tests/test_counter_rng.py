"""Counter-based draws: exact multiply-shift, uniform on [0, n), independent neighbours and seeds."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import counter_rng, losses


@pytest.mark.parametrize("n", [1, 2, 3, 3706, 65536, 65537, 1_000_003, 2 ** 31 - 1])
def test_mulhi_matches_exact_integer_arithmetic(n):
  a = np.random.default_rng(n).integers(0, 2 ** 32, 5000, dtype=np.uint64)
  a = np.concatenate([a, [0, 1, 2 ** 32 - 1, 2 ** 31]]).astype(np.uint64)
  got = np.asarray(counter_rng._mulhi32(jnp.asarray(a.astype(np.uint32)), n), np.uint64)
  np.testing.assert_array_equal(got, (a * np.uint64(n)) >> np.uint64(32))


def test_uniform_ints_in_range_and_uniform():
  n = 37
  x = np.asarray(counter_rng.uniform_ints(jnp.uint32(7), (400, 500), n))
  assert x.min() == 0 and x.max() == n - 1
  counts = np.bincount(x.ravel(), minlength=n)
  expected = x.size / n
  chi2 = float(((counts - expected) ** 2 / expected).sum())
  assert chi2 < 80, chi2   # 36 degrees of freedom: P(chi2 > 80) < 1e-4


def test_uniform_ints_uncorrelated_across_neighbours_and_seeds():
  a = np.asarray(counter_rng.uniform_ints(jnp.uint32(1), (400, 500), 1000), np.float64)
  b = np.asarray(counter_rng.uniform_ints(jnp.uint32(2), (400, 500), 1000), np.float64)
  assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
  assert abs(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]) < 0.01   # along a row
  assert abs(np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1]) < 0.01         # across rows


def test_uniform_ints_rejects_bad_n():
  with pytest.raises(ValueError, match="0 < n"):
    counter_rng.uniform_ints(jnp.uint32(0), (3,), 0)


def test_sample_negatives_deterministic_per_key_and_covers_catalogue():
  cat = jnp.arange(10, 30)
  a = losses.sample_negatives(jax.random.key(3), 300, 16, cat)
  b = losses.sample_negatives(jax.random.key(3), 300, 16, cat)
  c = losses.sample_negatives(jax.random.key(4), 300, 16, cat)
  np.testing.assert_array_equal(a, b)
  assert np.mean(np.asarray(a) == np.asarray(c)) < 0.1   # ≈ 1/20 by chance
  assert set(np.unique(a).tolist()) == set(range(10, 30))


def _lowbias32_np(x):
  x = x ^ (x >> np.uint32(16))
  x = x * np.uint32(0x7FEB352D)
  x = x ^ (x >> np.uint32(15))
  x = x * np.uint32(0x846CA68B)
  return x ^ (x >> np.uint32(16))


def _bits_np(seed, index):
  """The definition with a true 64-bit index: hash(lo, key(seed, hi)), hi/lo its uint32 words."""
  index = np.asarray(index, np.uint64)
  hi, lo = (index >> np.uint64(32)).astype(np.uint32), (index & np.uint64(0xFFFFFFFF)).astype(np.uint32)
  key = _lowbias32_np(np.uint32(seed) + _lowbias32_np(hi * np.uint32(0x9E3779B9)))
  return _lowbias32_np(lo * np.uint32(0x9E3779B9) + key)


@pytest.mark.parametrize("width", [8192, 40_001, 2 ** 31 + 5])
def test_bits_at_rows_equals_64_bit_reference_across_the_2_32_boundary(width):
  """Rows that straddle 2^32 (carry into the high word mid-row) hash their exact 64-bit index."""
  seed = 12345
  first = 2 ** 32 // width                     # the row holding element 2^32
  rows = np.array([0, 1, first - 1, first, first + 1, 3 * first + 2], np.uint64)[:, None]
  cols = np.unique(np.r_[0, 1, (2 ** 32 - 1) % width, 2 ** 32 % width, width - 1,
                         np.random.default_rng(0).integers(0, width, 50)]).astype(np.uint64)[None, :]
  got = counter_rng.bits_at_rows(jnp.uint32(seed), jnp.asarray(rows.astype(np.uint32)), width,
                                 jnp.asarray(cols.astype(np.uint32)))
  np.testing.assert_array_equal(np.asarray(got), _bits_np(seed, rows * np.uint64(width) + cols))


def test_bits_below_2_32_are_the_32_bit_hash():
  """Masks that fit in 2^32 elements did not change: page 0 is the 32-bit scheme."""
  row, col = jnp.arange(300, dtype=jnp.uint32)[:, None], jnp.arange(700, dtype=jnp.uint32)[None, :]
  np.testing.assert_array_equal(counter_rng.bits_at_rows(jnp.uint32(9), row, 700, col),
                                counter_rng.bits_at(jnp.uint32(9), row * 700 + col))
  np.testing.assert_array_equal(counter_rng.random_bits(jnp.uint32(9), (3, 100, 700)).reshape(300, 700),
                                counter_rng.bits_at(jnp.uint32(9), row * 700 + col))


def test_rejects_widths_beyond_32_bits():
  with pytest.raises(ValueError, match="0 < width < 2"):
    counter_rng.bits_at_rows(jnp.uint32(0), jnp.zeros((1, 1), jnp.uint32), 2 ** 32, jnp.zeros((1, 1), jnp.uint32))
