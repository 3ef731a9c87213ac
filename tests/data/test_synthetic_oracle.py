"""The synthetic world's oracle: true feedback probabilities, calibrated, aligned to the reader."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.data import kuairand as kr
from recjax.data import synthetic as sy
from recjax.metrics import ranking

CFG = sy.WorldConfig(num_users=500, num_items=200, num_topics=10, mean_seq_len=60, max_seq_len=400,
                     num_tabs=2, seed=11)


@pytest.fixture(scope="module")
def world():
  return sy.build_world(CFG)


def test_click_and_long_view_probability_matches_simulation():
  """Φ((μ − ln threshold)/σ) against the generator's own play-time rule, Monte Carlo per cell."""
  rng = np.random.default_rng(0)
  n = 200_000
  for log_aff in (-2.0, 0.0, 1.5):
    for dur in (3000, 7000, 7001, 12_000, 18_000, 40_000):
      aff = np.full(n, log_aff)
      d = np.full(n, dur, np.int64)
      oracle = sy.feedback_probabilities(aff, d)
      fb = sy._feedback(rng, aff, d, oracle)   # pylint: disable=protected-access
      for name in ("is_click", "long_view"):
        p = oracle[name][0]
        se = np.sqrt(p * (1 - p) / n) + 1e-9
        assert abs(fb[name].mean() - p) < 5 * se + 1e-4, (name, log_aff, dur, fb[name].mean(), p)


def test_oracle_is_calibrated_in_bins(world):
  """Empirical frequency of each feedback in bins of oracle probability matches the bin's mean."""
  for name in kr.ACTION_BITS:
    p, y = world.oracle[name], world.log[name]
    edges = np.quantile(p, np.linspace(0, 1, 6)[1:-1])
    b = np.searchsorted(edges, p)
    for k in np.unique(b):
      sel = b == k
      mean_p = p[sel].mean()
      se = np.sqrt((p[sel] * (1 - p[sel])).sum()) / sel.sum()
      assert abs(y[sel].mean() - mean_p) < 4.5 * se + 1e-4, (name, k, y[sel].mean(), mean_p)


def test_oracle_ne_beats_base_rate(world):
  for name in kr.ACTION_BITS:
    ne = ranking.normalized_entropy(world.oracle[name], world.log[name])
    assert ne < 1.0, (name, ne)
  # The watch-driven feedbacks carry the most signal.
  assert ranking.normalized_entropy(world.oracle["is_click"], world.log["is_click"]) < 0.97


def test_a_wrong_oracle_fails_the_calibration_check(world):
  """The bin check can fail: a shifted oracle is visibly miscalibrated on is_click."""
  p, y = np.clip(world.oracle["is_click"] * 1.3, 0, 1), world.log["is_click"]
  sel = p > np.median(p)
  se = np.sqrt((p[sel] * (1 - p[sel])).sum()) / sel.sum()
  assert abs(y[sel].mean() - p[sel].mean()) > 4.5 * se


@pytest.mark.parametrize("logs", ["standard", "random", "all"])
def test_load_oracle_aligns_with_reader(tmp_path, logs):
  small = sy.WorldConfig(num_users=60, num_items=50, num_topics=5, mean_seq_len=30, max_seq_len=200,
                         random_exposure_rate=0.05, seed=3)
  world = sy.build_world(small)
  out = sy.write_world(world, tmp_path / "w")
  seqs = kr.load_kuairand(out, variant="synth", logs=logs)
  oracle = sy.load_oracle(out, seqs, logs=logs)
  # The world's events of the chosen logs, user by user; the reader's seconds must agree with them.
  users = np.repeat(seqs.user_ids, seqs.lengths)
  chosen = {"standard": world.log["is_rand"] == 0, "random": world.log["is_rand"] == 1,
            "all": np.ones(len(world.log["is_rand"]), bool)}[logs]
  idx = np.concatenate([np.flatnonzero((world.log["user_id"] == u) & chosen) for u in seqs.user_ids])
  assert np.array_equal(world.log["user_id"][idx], users)
  assert np.array_equal(world.log["time_ms"][idx] // 1000, seqs.timestamps)
  for name in kr.ACTION_BITS:
    np.testing.assert_array_equal(oracle[name], world.oracle[name][idx])
  # The loaded labels are draws from these probabilities' own events.
  decoded = kr.decode_actions(seqs.extras["actions"])
  assert np.array_equal(decoded["is_like"], world.log["is_like"][idx] == 1)


def test_load_oracle_rejects_other_sequences_and_old_worlds(tmp_path):
  a = sy.write_world(sy.build_world(sy.WorldConfig(num_users=30, num_items=40, num_topics=4, seed=1)),
                     tmp_path / "a")
  b = sy.write_world(sy.build_world(sy.WorldConfig(num_users=30, num_items=40, num_topics=4, seed=2)),
                     tmp_path / "b")
  seqs_b = kr.load_kuairand(b, variant="synth", logs="all")
  with pytest.raises(ValueError, match="world_oracle.npz"):
    sy.load_oracle(a, seqs_b, logs="all")
  (tmp_path / "a" / sy.ORACLE_FILE).unlink()
  with pytest.raises(ValueError, match="generate the world again"):
    sy.load_oracle(a, seqs_b, logs="all")
