"""Comparisons over seeds (recjax/scaling/seeds.py): mean ± std, paired differences, the verdict rule."""
import math

import numpy as np
import pytest

from recjax.scaling import seeds


def test_summarise_is_mean_and_sample_std():
  s = seeds.summarise([1.0, 2.0, 4.0])
  assert s.n == 3 and s.mean == pytest.approx(7 / 3)
  assert s.std == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))   # n - 1, not n
  assert seeds.summarise([5.0]).std == 0.0
  cols = seeds.summarise_columns([[1.0, 10.0], [3.0, 10.0]])
  assert cols["mean"] == [2.0, 10.0] and cols["std"][1] == 0.0 and cols["std"][0] == pytest.approx(math.sqrt(2))
  with pytest.raises(ValueError, match="non-empty"):
    seeds.summarise([])
  with pytest.raises(ValueError, match="finite"):
    seeds.summarise([1.0, float("nan")])


def test_paired_difference_pairs_by_seed_and_uses_the_t_interval():
  a = {1: 5.0, 2: 5.2, 3: 5.1, 9: 0.0}     # seed 9 has no partner: left out
  b = {1: 4.9, 2: 5.0, 3: 5.05}
  d = seeds.paired_difference(a, b)
  assert d["seeds"] == [1, 2, 3] and d["n"] == 3
  np.testing.assert_allclose(d["diffs"], [0.1, 0.2, 0.05])
  half = 4.302653 * np.std([0.1, 0.2, 0.05], ddof=1) / math.sqrt(3)   # t(0.975, 2)
  np.testing.assert_allclose(d["ci"], [d["mean"] - half, d["mean"] + half], rtol=1e-5)
  # The interval [-0.06, 0.30] holds 0: within noise, so "no worse", though the mean is above 0.
  assert d["verdict"] == "within noise" and d["no_worse"] and not d["mean_no_worse"]


@pytest.mark.parametrize("diffs, verdict, no_worse", [
    ([0.10, 0.11, 0.12], "worse", False),
    ([-0.10, -0.11, -0.12], "better", True),
    ([0.03, -0.02, 0.01], "within noise", True),
])
def test_verdict_rule(diffs, verdict, no_worse):
  d = seeds.paired_difference({s: x for s, x in enumerate(diffs)}, {s: 0.0 for s in range(len(diffs))})
  assert d["verdict"] == verdict and d["no_worse"] is no_worse


def test_one_paired_seed_is_the_sign_alone_and_no_common_seed_fails():
  d = seeds.paired_difference({42: 6.0}, {42: 5.9, 1: 5.0})
  assert d["ci"] is None and d["verdict"] == "one seed: sign only" and not d["no_worse"]
  with pytest.raises(ValueError, match="no seed in common"):
    seeds.paired_difference({1: 1.0}, {2: 1.0})
