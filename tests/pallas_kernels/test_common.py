"""The kernels' shared helpers against the model-side definitions they must reproduce."""
import math

import jax
import numpy as np

from pallas_kernels import common
from recjax.layers.relative_bias import time_buckets


def _edge_gaps() -> np.ndarray:
  """0 and every integer gap within ±3 of a bucket edge below 2^31 (where rounding decides)."""
  edges = [int(math.exp(common.TIME_BUCKET_DIVISOR * k)) for k in range(1, 72)]
  return np.array(sorted({e + d for e in edges for d in range(-3, 4) if 1 <= e + d < 2**31} | {0}),
                  np.int32)


def test_kernel_time_bucket_equals_model_bucket_at_every_edge():
  # relative_bias.time_buckets is checked against the PyTorch reference bucket by bucket
  # (tests/models/test_reference_parity.py); the kernels' bucket must agree under jit, where XLA
  # would turn the division by 0.301 into a multiply and move 13 of these gaps up a bucket.
  gaps = _edge_gaps()
  kernel = np.asarray(jax.jit(lambda g: common.time_bucket(g, 129))(gaps))
  model = np.asarray(time_buckets(gaps[None, :], np.zeros((1, 1), np.int32), 129))[0, :, 0]
  assert len(np.unique(model)) > 60                   # the gaps really span the buckets
  np.testing.assert_array_equal(kernel, model)
  np.testing.assert_array_equal(np.asarray(jax.jit(lambda g: common.time_bucket(g, 129))(-gaps)),
                                model)               # |dt|: the sign of the gap does not matter


def test_kernel_time_bucket_clamps_to_the_table():
  gaps = np.array([0, 1, 2, 3, 10**6, 2**31 - 1], np.int32)
  got = np.asarray(common.time_bucket(gaps, 8))
  assert got.min() == 0 and got.max() == 7
  np.testing.assert_array_equal(got[:3], [0, 0, 2])   # ln 1 = 0, ln 2 / 0.301 = 2.3
