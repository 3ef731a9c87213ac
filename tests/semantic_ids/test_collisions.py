"""Collision diagnosis and repair against brute force on small cases."""
import itertools

import numpy as np
import pytest

from recjax.semantic_ids import collisions


def test_rate_and_prefix_load_known_example():
  codes = np.array([[0, 1], [0, 1], [0, 2], [1, 0], [1, 0], [1, 0], [2, 2]])
  assert collisions.collision_rate(codes) == pytest.approx(5 / 7)
  prefixes, counts = collisions.prefix_load(codes, 1)
  np.testing.assert_array_equal(prefixes[:, 0], [0, 1, 2])   # tie 3-3 broken in prefix order
  np.testing.assert_array_equal(counts, [3, 3, 1])
  rep = collisions.collision_report(codes)
  assert rep["distinct_sids"] == 4 and rep["colliding_groups"] == 2 and rep["max_group_size"] == 3
  assert rep["min_moves_to_repair"] == 3 and rep["max_load_depth2"] == 3
  g = collisions.collision_groups(codes)
  np.testing.assert_array_equal(g.group_size[g.group_of_item], [2, 2, 1, 3, 3, 3, 1])
  assert collisions.collision_rate(np.arange(5)[:, None]) == 0.0


def brute_force_repair(codes, cost):
  """All collision-free last-level assignments that leave prefixes without collisions untouched:
  -> (fewest moves, least cost among fewest moves, least cost overall)."""
  k = cost.shape[1]
  g = collisions.collision_groups(codes)
  prefix = [tuple(r) for r in codes[:, :-1]]
  bad = {prefix[i] for i in range(len(codes)) if g.group_size[g.group_of_item[i]] > 1}
  best_moves, best_cost_at_min_moves, best_cost = None, None, None
  per_prefix = []
  for p in bad:
    items = [i for i in range(len(codes)) if prefix[i] == p]
    options = []
    for assign in itertools.permutations(range(k), len(items)):
      moves = sum(a != codes[i, -1] for i, a in zip(items, assign))
      c = sum(cost[i, a] - cost[i, codes[i, -1]] for i, a in zip(items, assign))
      options.append((moves, c))
    per_prefix.append(options)
  best_moves = sum(min(o[0] for o in opts) for opts in per_prefix)
  best_cost_at_min_moves = sum(min(c for m, c in opts if m == min(o[0] for o in opts)) for opts in per_prefix)
  best_cost = sum(min(o[1] for o in opts) for opts in per_prefix)
  return best_moves, best_cost_at_min_moves, best_cost


@pytest.mark.parametrize("seed", range(12))
def test_reassignment_is_collision_free_and_optimal(seed):
  rng = np.random.default_rng(seed)
  k = int(rng.integers(3, 6))
  n = int(rng.integers(4, 10))
  codes = np.stack([rng.integers(0, 2, n), rng.integers(0, 2, n)], 1)     # dense -> many collisions
  cost = rng.random((n, k))
  prefix_sizes = np.unique(codes[:, 0], return_counts=True)[1]
  if prefix_sizes.max() > k:
    with pytest.raises(ValueError, match="more than the"):
      collisions.reassign_last_level(codes, cost)
    return
  want_moves, want_cost_min_moves, want_cost = brute_force_repair(codes, cost)
  for min_moves in (True, False):
    rep = collisions.reassign_last_level(codes, cost, min_moves=min_moves)
    assert collisions.collision_rate(rep.codes) == 0.0
    np.testing.assert_array_equal(rep.codes[:, :-1], codes[:, :-1])      # only the last level changes
    np.testing.assert_array_equal(rep.moved, rep.codes[:, -1] != codes[:, -1])
    if min_moves:
      assert rep.num_moved == want_moves == collisions.collision_report(codes)["min_moves_to_repair"]
      assert rep.cost_increase == pytest.approx(want_cost_min_moves)
    else:
      assert rep.num_moved >= want_moves
      assert rep.cost_increase == pytest.approx(want_cost)


def test_reassignment_single_level_and_errors():
  codes = np.array([[1], [1], [0]])
  cost = np.array([[0.0, 0.1, 5.0], [0.0, 3.0, 0.2], [0.0, 9.0, 9.0]])
  rep = collisions.reassign_last_level(codes, cost)
  np.testing.assert_array_equal(rep.codes[:, 0], [1, 2, 0])   # item 1 to code 2 (cost 0.2 < 5.0)
  assert rep.num_moved == 1 and rep.cost_increase == pytest.approx(0.2 - 3.0)
  with pytest.raises(ValueError, match="2 code rows but 3 cost rows"):
    collisions.reassign_last_level(codes[:2], cost)
  with pytest.raises(ValueError, match="cost row 1 is not finite"):
    collisions.reassign_last_level(codes, np.where(np.arange(3)[:, None] == 1, np.nan, cost))


def test_disambiguation_level():
  codes = np.array([[0, 1], [0, 1], [2, 2], [0, 1], [2, 2], [1, 1]])
  out = collisions.append_disambiguation_level(codes)
  np.testing.assert_array_equal(out[:, :2], codes)
  np.testing.assert_array_equal(out[:, 2], [0, 1, 0, 2, 1, 0])
  assert collisions.collision_rate(out) == 0.0
