"""UserSequences -> TFDS array_record -> UserSequences is lossless; the data source is random access."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from recjax.data import synthetic as sy
from recjax.data import tfds_builder as tb
from recjax.data.sequences import sequences_from_interactions
from recjax.data.types import UserSequences


def _assert_same(a: UserSequences, b: UserSequences) -> None:
  assert np.array_equal(a.user_ids, b.user_ids) and np.array_equal(a.offsets, b.offsets)
  assert np.array_equal(a.items, b.items) and a.items.dtype == b.items.dtype
  assert a.has_timestamps == b.has_timestamps
  if a.has_timestamps:
    assert np.array_equal(a.timestamps, b.timestamps)
  assert a.num_items == b.num_items and a.source == b.source
  assert (a.candidate_items is None) == (b.candidate_items is None)
  if a.candidate_items is not None:
    assert np.array_equal(a.candidate_items, b.candidate_items)
  assert a.extras.keys() == b.extras.keys()
  for k in a.extras:
    assert np.array_equal(a.extras[k], b.extras[k]) and a.extras[k].dtype == b.extras[k].dtype, k


def test_round_trip_with_timestamps_and_extras(tmp_path):
  cfg = sy.WorldConfig(num_users=60, num_items=50, num_topics=5, mean_seq_len=20, max_seq_len=100, seed=4)
  seqs = sequences_from_interactions(sy.make_world_interactions(cfg))
  path = tb.write_sequences_array_record(seqs, tmp_path, "synthetic_small")
  assert path == tb.version_dir(tmp_path, "synthetic_small")
  assert os.path.exists(os.path.join(path, tb.META_FILE))
  _assert_same(seqs, tb.read_sequences_array_record(path))
  _assert_same(seqs, tb.read_sequences_array_record(tmp_path, "synthetic_small"))


def test_round_trip_without_timestamps_keeps_unsorted_user_order(tmp_path):
  seqs = UserSequences(user_ids=np.array([9, 2, 5]), offsets=np.array([0, 2, 3, 6]),
                       items=np.array([3, 1, 4, 1, 5, 9], np.int32), timestamps=None, num_items=12,
                       source="hand-made", candidate_items=np.array([1, 3, 4, 5, 9]),
                       extras={"rating": np.array([1.5, 2, 3, 4, 5, 0.5], np.float32)})
  path = tb.write_sequences_array_record(seqs, tmp_path, "hand_made")
  back = tb.read_sequences_array_record(path)
  _assert_same(seqs, back)
  meta = tb.read_metadata(path)
  assert meta["has_timestamps"] is False and meta["candidate_items"] == [1, 3, 4, 5, 9]


def test_data_source_random_access(tmp_path):
  seqs = UserSequences(user_ids=np.arange(20), offsets=np.arange(21) * 2,
                       items=np.arange(1, 41, dtype=np.int32), timestamps=np.arange(40), num_items=41,
                       source="ramp")
  path = tb.write_sequences_array_record(seqs, tmp_path, "ramp")
  src = tb.sequences_data_source(path)
  assert len(src) == 20
  rec = src[7]
  assert {"index", "user_id", "items", "timestamps"} <= set(rec)
  k = int(rec["index"])
  assert np.asarray(rec["items"]).tolist() == seqs.items_of(k).tolist()
  batch = src.__getitems__([0, 1])
  assert len(batch) == 2


def test_overwrite_and_name_checks(tmp_path):
  seqs = UserSequences(user_ids=np.array([1]), offsets=np.array([0, 1]), items=np.array([1], np.int32),
                       timestamps=None, num_items=2, source="one")
  tb.write_sequences_array_record(seqs, tmp_path, "one_user")
  with pytest.raises(FileExistsError):
    tb.write_sequences_array_record(seqs, tmp_path, "one_user")
  bigger = UserSequences(user_ids=np.array([1, 2]), offsets=np.array([0, 1, 2]),
                         items=np.array([1, 1], np.int32), timestamps=None, num_items=2, source="two")
  path = tb.write_sequences_array_record(bigger, tmp_path, "one_user", overwrite=True)
  assert tb.read_sequences_array_record(path).num_users == 2
  with open(os.path.join(path, tb.META_FILE)) as f:
    assert json.load(f)["source"] == "two"
  with pytest.raises(ValueError, match="snake_case"):
    tb.write_sequences_array_record(seqs, tmp_path, "Bad-Name")
