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
