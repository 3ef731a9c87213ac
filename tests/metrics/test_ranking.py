"""Ranking metrics against brute force: O(n²) pair counts, per-user loops, NE from its definition."""
import math

import numpy as np
import pytest

from recjax.metrics import ranking


def _random_case(rng, n, num_users=None, weighted=True):
  # Coarse predictions so that ties are common; labels from a noisy link so AUC is not trivial.
  p = rng.integers(0, 8, n) / 8.0
  y = (rng.random(n) < 0.2 + 0.6 * p).astype(np.int64)
  w = rng.choice([0.0, 0.5, 1.0, 2.0], n) if weighted else None
  user = rng.integers(0, num_users or 1, n)
  return p, y, w, user


def _auc_pairs(p, y, w):
  """O(n²): every (positive, negative) pair with weight w_i w_j, ties one half."""
  w = np.ones(len(p)) if w is None else w
  num = den = 0.0
  for i in range(len(p)):
    for j in range(len(p)):
      if y[i] == 1 and y[j] == 0:
        pair = w[i] * w[j]
        num += pair * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
        den += pair
  return num / den if den > 0 else float("nan")


def _log_loss_loop(p, y, w):
  w = np.ones(len(p)) if w is None else w
  total = sum(w)
  loss = 0.0
  for pi, yi, wi in zip(p, y, w):
    q = min(max(pi, ranking.EPS), 1 - ranking.EPS)
    loss -= wi * (math.log(q) if yi else math.log(1 - q))
  return loss / total


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weighted", [False, True])
def test_auc_matches_pair_count(seed, weighted):
  p, y, w, _ = _random_case(np.random.default_rng(seed), 60, weighted=weighted)
  np.testing.assert_allclose(ranking.auc(p, y, w), _auc_pairs(p, y, w), rtol=1e-12)


def test_auc_edge_cases():
  assert ranking.auc([0.3, 0.3], [1, 0]) == 0.5                       # a tie counts one half
  assert ranking.auc([0.9, 0.1], [1, 0]) == 1.0
  assert ranking.auc([0.1, 0.9], [1, 0]) == 0.0
  assert math.isnan(ranking.auc([0.1, 0.9], [1, 1]))                  # one class: undefined
  # A zero weight removes the example: only (0.9 pos, 0.5 neg) is left.
  assert ranking.auc([0.9, 0.5, 0.95], [1, 0, 0], [1, 1, 0]) == 1.0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weighted", [False, True])
def test_gauc_matches_per_user_loop(seed, weighted):
  rng = np.random.default_rng(100 + seed)
  p, y, w, user = _random_case(rng, 120, num_users=15, weighted=weighted)
  # Force all-one-class users: user 0 all positive, user 1 all negative.
  user[:3], user[3:6] = 0, 1
  y[user == 0] = 1
  y[user == 1] = 0
  if w is not None:
    w[user < 2] = 1.0
  ww = np.ones(len(p)) if w is None else w
  num = den = 0.0
  skipped = scored = 0
  for u in np.unique(user):
    sel = (user == u) & (ww > 0)
    if not sel.any():
      continue
    if len(np.unique(y[sel])) < 2:
      skipped += 1
      continue
    scored += 1
    wu = ww[sel].sum()
    num += wu * _auc_pairs(p[sel], y[sel], ww[sel])
    den += wu
  got = ranking.gauc(p, y, user, w)
  np.testing.assert_allclose(got["gauc"], num / den, rtol=1e-12)
  assert (got["users"], got["skipped_users"]) == (scored, skipped)
  assert skipped >= 2


def test_gauc_all_users_one_class_is_nan():
  got = ranking.gauc([0.2, 0.4, 0.6], [1, 1, 0], [7, 7, 8])
  assert math.isnan(got["gauc"]) and got["skipped_users"] == 2 and got["users"] == 0


@pytest.mark.parametrize("weighted", [False, True])
def test_log_loss_ne_and_calibration_from_definition(weighted):
  p, y, w, _ = _random_case(np.random.default_rng(7), 200, weighted=weighted)
  p = np.clip(p, 0.0, 1.0)   # includes exact 0 and 1: the clip must keep the loss finite
  ww = np.ones(len(p)) if w is None else w
  ll = _log_loss_loop(p, y, w)
  rate = sum(wi * yi for wi, yi in zip(ww, y)) / sum(ww)
  h = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
  np.testing.assert_allclose(ranking.log_loss(p, y, w), ll, rtol=1e-12)
  np.testing.assert_allclose(ranking.normalized_entropy(p, y, w), ll / h, rtol=1e-12)
  mean_p = sum(wi * pi for wi, pi in zip(ww, p)) / sum(ww)
  np.testing.assert_allclose(ranking.calibration(p, y, w), mean_p / rate, rtol=1e-12)


def test_base_rate_prediction_has_ne_one_and_gap_closed():
  y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  assert ranking.normalized_entropy(np.full(10, 0.2), y) == pytest.approx(1.0)
  assert ranking.calibration(np.full(10, 0.2), y) == pytest.approx(1.0)
  assert ranking.gap_closed(0.95, 0.9) == pytest.approx(0.5)
  assert ranking.gap_closed(1.0, 0.9) == pytest.approx(0.0)


def test_multitask_metrics_per_task_and_mean():
  rng = np.random.default_rng(3)
  n = 80
  p = rng.random((n, 2))
  y = (rng.random((n, 2)) < p).astype(int)
  mask = (rng.random(n) < 0.9).astype(float)
  user = rng.integers(0, 6, n)
  oracle = np.clip(p + 0.01, 0, 1)
  out = ranking.multitask_metrics(p, y, ("click", "like"), mask_N=mask, user_N=user, oracle_NT=oracle)
  for t, name in enumerate(("click", "like")):
    assert out[name]["auc"] == pytest.approx(_auc_pairs(p[:, t], y[:, t], mask))
    assert out[name]["ne"] == pytest.approx(ranking.normalized_entropy(p[:, t], y[:, t], mask))
    assert out[name]["gap_closed"] == pytest.approx(
        (1 - out[name]["ne"]) / (1 - out[name]["oracle_ne"]))
    assert out[name]["count"] == int(mask.sum())
  for k in ("ne", "auc", "gauc", "log_loss", "calibration", "oracle_ne", "gap_closed"):
    assert out["mean"][k] == pytest.approx((out["click"][k] + out["like"][k]) / 2)


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="labels must be 0 or 1"):
    ranking.auc([0.1, 0.2], [0, 2])
  with pytest.raises(ValueError, match="probabilities"):
    ranking.log_loss([1.5, 0.2], [0, 1])
  with pytest.raises(ValueError, match="same length"):
    ranking.auc([0.1, 0.2, 0.3], [0, 1])
  with pytest.raises(ValueError, match="weights"):
    ranking.auc([0.1, 0.2], [0, 1], [1.0, -1.0])
  with pytest.raises(ValueError, match="task names"):
    ranking.multitask_metrics(np.zeros((3, 2)), np.zeros((3, 2)), ("a",))
