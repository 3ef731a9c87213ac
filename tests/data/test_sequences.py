"""sequences_from_interactions / filter_min_length: ordering, ties, extras, filtering, speed."""
from __future__ import annotations

import logging

import numpy as np

from recjax.data.sequences import filter_min_length, select_users, sequences_from_interactions
from recjax.data.types import Interactions


def _inter(user, item, ts, **extras) -> Interactions:
  return Interactions(user=np.array(user, np.int64), item=np.array(item, np.int64),
                      timestamp=None if ts is None else np.array(ts, np.int64), source="unit",
                      num_items=100, candidate_items=np.array([1, 2, 3]),
                      extras={k: np.array(v) for k, v in extras.items()})


def test_groups_users_ascending_and_sorts_by_time():
  s = sequences_from_interactions(_inter([7, 3, 7, 3], [10, 11, 12, 13], [50, 20, 40, 10]))
  assert s.user_ids.tolist() == [3, 7]
  assert s.offsets.tolist() == [0, 2, 4]
  assert s.items.tolist() == [13, 11, 12, 10]
  assert s.timestamps.tolist() == [10, 20, 40, 50]
  assert s.items.dtype == np.int32 and s.timestamps.dtype == np.int64


def test_ties_keep_file_order():
  # user 1 has three events at t=5 in file order 21, 22, 23, and an earlier one.
  s = sequences_from_interactions(_inter([1, 2, 1, 1, 2, 1], [21, 30, 22, 23, 31, 20], [5, 1, 5, 5, 1, 4]))
  assert s.items_of(0).tolist() == [20, 21, 22, 23]
  assert s.items_of(1).tolist() == [30, 31]


def test_no_timestamps_keeps_file_order():
  s = sequences_from_interactions(_inter([2, 1, 2, 1], [9, 8, 7, 6], None))
  assert s.timestamps is None and not s.has_timestamps
  assert s.user_ids.tolist() == [1, 2]
  assert s.items.tolist() == [8, 6, 9, 7]


def test_extras_and_metadata_are_carried():
  inter = _inter([5, 5, 4], [1, 2, 3], [3, 1, 2], rating=[1.0, 2.0, 3.0], tab=[7, 8, 9])
  s = sequences_from_interactions(inter)
  assert s.extras["rating"].tolist() == [3.0, 2.0, 1.0]
  assert s.extras["tab"].tolist() == [9, 8, 7]
  assert s.num_items == 100 and s.source == "unit"
  assert s.candidate_items.tolist() == [1, 2, 3]


def test_empty_log():
  s = sequences_from_interactions(_inter([], [], []))
  assert s.num_users == 0 and len(s.items) == 0 and s.offsets.tolist() == [0]


def test_filter_min_length_drops_short_users(caplog):
  inter = _inter([1, 1, 1, 2, 3, 3], [1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], tab=[0, 1, 2, 3, 4, 5])
  s = sequences_from_interactions(inter)
  with caplog.at_level(logging.INFO):
    f, dropped = filter_min_length(s, 2)
  assert dropped == 1
  assert f.user_ids.tolist() == [1, 3]
  assert f.items.tolist() == [1, 2, 3, 5, 6]
  assert f.timestamps.tolist() == [1, 2, 3, 5, 6]
  assert f.extras["tab"].tolist() == [0, 1, 2, 4, 5]
  assert f.offsets.tolist() == [0, 3, 5]
  assert any("dropped 1 of 3 users and 1 of 6 events" in r.getMessage() for r in caplog.records)


def test_filter_min_length_keeps_everything_when_long_enough():
  s = sequences_from_interactions(_inter([1, 1], [1, 2], [1, 2]))
  f, dropped = filter_min_length(s, 1)
  assert dropped == 0 and f.items.tolist() == [1, 2]


def test_select_users_preserves_order():
  s = sequences_from_interactions(_inter([1, 2, 3], [4, 5, 6], [1, 1, 1]))
  out = select_users(s, np.array([True, False, True]))
  assert out.user_ids.tolist() == [1, 3] and out.items.tolist() == [4, 6]


def test_million_events_sorted_per_user():
  """A million events stay grouped by user and time-ordered (speed is for benchmarks, not tests)."""
  rng = np.random.default_rng(0)
  e = 1_000_000
  inter = Interactions(user=rng.integers(0, 50_000, e), item=rng.integers(1, 5000, e),
                       timestamp=rng.integers(0, 10**9, e), source="big", num_items=5000,
                       extras={"actions": rng.integers(0, 256, e)})
  s = sequences_from_interactions(inter)
  assert len(s.items) == e
  ts = s.timestamps
  same_user = np.repeat(np.arange(s.num_users), s.lengths)
  assert np.all((np.diff(ts) >= 0) | (np.diff(same_user) != 0))
