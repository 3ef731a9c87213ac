"""Collision-aware item-level metrics: equal to the naive ones without collisions, lower with
them, and equal to averaging over every order of the tied / colliding items (brute force)."""
import itertools

import numpy as np
import pytest

from recjax.metrics import collisions as cm
from recjax.metrics.retrieval import MISS_RANK, metrics_from_ranks, target_ranks

KS = (1, 3, 5, 10)


def random_ranked_lists(rng, b, num_groups, r):
  ranked = np.stack([rng.permutation(num_groups)[:r] for _ in range(b)])
  ranked[rng.random((b, r)) < 0.1] = -1                  # empty beams
  target = rng.integers(0, num_groups, b)
  return ranked, target


def test_equals_naive_without_collisions():
  rng = np.random.default_rng(0)
  ranked, target = random_ranked_lists(rng, 200, 30, 12)
  size = np.ones(30, np.int64)
  # Empty slots before the target take no item position: the naive rank counts slots, so compare
  # on lists without empty slots for exact equality.
  full = ~(ranked < 0).any(1)
  got = cm.expected_item_metrics(*cm.ranked_group_positions(ranked[full], target[full], size), ks=KS)
  want = metrics_from_ranks(cm.sid_level_ranks(ranked[full], target[full]), ks=KS)
  assert set(got) == set(want)
  for k in want:
    assert got[k] == pytest.approx(want[k], rel=1e-12), k


def brute_force_group_credit(ranked, target, size, ks):
  """Expand every listed group into its items, try every position of the target inside its own
  group (uniform), and average the plain HR/NDCG/MRR of the resulting item rank."""
  vals = {f"hr@{k}": [] for k in ks} | {f"ndcg@{k}": [] for k in ks} | {"mrr": []}
  for row, t in zip(ranked, target):
    items = []
    for grp in row:
      if grp >= 0:
        items += [(grp, j) for j in range(size[grp])]
    per = []
    for j in range(size[t]):
      pos = items.index((t, 0)) + 1 + j if (t, 0) in items else None
      per.append(pos)
    for k in ks:
      vals[f"hr@{k}"].append(np.mean([p is not None and p <= k for p in per]))
      vals[f"ndcg@{k}"].append(np.mean([1 / np.log2(p + 1) if p is not None and p <= k else 0.0 for p in per]))
    vals["mrr"].append(np.mean([1 / p if p is not None else 0.0 for p in per]))
  return {k: float(np.mean(v)) for k, v in vals.items()}


def test_collisions_lower_the_metrics_and_match_brute_force():
  rng = np.random.default_rng(1)
  ranked, target = random_ranked_lists(rng, 300, 30, 12)
  size = rng.integers(1, 4, 30)
  got = cm.expected_item_metrics(*cm.ranked_group_positions(ranked, target, size), ks=KS)
  want = brute_force_group_credit(ranked, target, size, KS)
  for k in want:
    assert got[k] == pytest.approx(want[k], rel=1e-9), k
  full = ~(ranked < 0).any(1)
  naive = metrics_from_ranks(cm.sid_level_ranks(ranked[full], target[full]), ks=KS)
  corrected = cm.expected_item_metrics(*cm.ranked_group_positions(ranked[full], target[full], size), ks=KS)
  for k in naive:
    assert corrected[k] < naive[k], k


def test_tied_scores_match_average_over_tie_orders():
  rng = np.random.default_rng(2)
  b, c = 6, 7
  scores = rng.integers(0, 4, (b, c)).astype(np.float32)     # many ties
  tgt = rng.integers(0, c, b)
  ex = rng.random((b, c)) < 0.2
  t_ex = ex[np.arange(b), tgt]
  got = cm.expected_item_metrics(*cm.tied_positions(scores, scores[np.arange(b), tgt], ex, t_ex), ks=(1, 3))
  # Brute force: every permutation as tie-breaker, plain ranks, averaged.
  acc = []
  for perm in itertools.permutations(range(c)):
    brk = scores - 1e-3 * np.argsort(perm)[None, :]            # distinct, same order between levels
    acc.append(metrics_from_ranks(target_ranks(brk, brk[np.arange(b), tgt], ex, t_ex), ks=(1, 3)))
  for k in got:
    assert got[k] == pytest.approx(np.mean([a[k] for a in acc]), rel=1e-9), k
  # Without ties the corrected metrics are the plain ones.
  s = rng.normal(size=(b, c))
  plain = metrics_from_ranks(target_ranks(s, s[np.arange(b), tgt], ex, t_ex), ks=(1, 3))
  got = cm.expected_item_metrics(*cm.tied_positions(s, s[np.arange(b), tgt], ex, t_ex), ks=(1, 3))
  assert got == pytest.approx(plain, rel=1e-12)


def test_validation():
  with pytest.raises(ValueError, match=">= 1"):
    cm.expected_item_metrics(np.array([1]), np.array([0]))
  with pytest.raises(ValueError, match="group ids"):
    cm.ranked_group_positions(np.array([[0, 5]]), np.array([0]), np.ones(3, int))
  m = cm.expected_item_metrics(np.array([MISS_RANK]), np.array([2]), ks=(1,))
  assert m == {"hr@1": 0.0, "ndcg@1": 0.0, "mrr": 0.0}
