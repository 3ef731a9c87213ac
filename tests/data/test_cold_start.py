"""The cold-start split: held-out items never reach training, targets stay what they were."""
import numpy as np
import pytest

from recjax.data import splits
from recjax.data.types import UserSequences


def _random_seqs(seed=0, users=60, items=40):
  rng = np.random.default_rng(seed)
  seqs = [rng.integers(1, items, rng.integers(2, 25)) for _ in range(users)]
  offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
  flat = np.concatenate(seqs).astype(np.int32)
  times = np.arange(len(flat), dtype=np.int64) * 7 + 100
  return UserSequences(np.arange(1, users + 1), offsets, flat, times, items, "random",
                       extras={"rating": (flat % 5 + 1).astype(np.float32)})


@pytest.mark.parametrize("protocol", splits.PROTOCOLS)
def test_cold_items_never_reach_training_and_targets_are_unchanged(protocol):
  seqs = _random_seqs()
  out, cold = splits.cold_start_split(seqs, 0.25, seed=3, protocol=protocol)
  assert len(cold) == 10 and len(np.unique(cold)) == 10 and np.all(np.isin(cold, seqs.catalogue()))
  tr = splits.train_examples(out, max_len=8, protocol=protocol)
  assert not np.isin(tr.ids, cold).any() and not np.isin(tr.labels, cold).any()
  assert not np.isin(splits.training_sequences(out, protocol).items, cold).any()
  for split in ("test",) + (("valid",) if protocol == "last_two" else ()):
    before = splits.eval_examples(seqs, 8, split, protocol)
    after = splits.eval_examples(out, 8, split, protocol)
    np.testing.assert_array_equal(after.user_ids, before.user_ids)
    np.testing.assert_array_equal(after.targets, before.targets)
    assert np.isin(after.targets, cold).any()          # the protocol does evaluate cold targets
    if protocol == "last_item":
      assert not np.isin(after.ids, cold).any()
  # Brute force per user: the warm items in order, then the untouched evaluated tail.
  hold = 1 if protocol == "last_item" else 2
  for k in range(seqs.num_users):
    s = seqs.items_of(k)
    keep = np.r_[~np.isin(s[:-hold], cold), np.ones(hold, bool)]
    np.testing.assert_array_equal(out.items_of(k), s[keep])
    lo, hi = seqs.offsets[k], seqs.offsets[k + 1]
    np.testing.assert_array_equal(out.timestamps[out.offsets[k]:out.offsets[k + 1]], seqs.timestamps[lo:hi][keep])
    np.testing.assert_array_equal(out.extras["rating"][out.offsets[k]:out.offsets[k + 1]],
                                  seqs.extras["rating"][lo:hi][keep])


def test_cold_split_is_seeded_and_validated():
  seqs = _random_seqs()
  a = splits.cold_start_split(seqs, 0.2, seed=1)[1]
  np.testing.assert_array_equal(a, splits.cold_start_split(seqs, 0.2, seed=1)[1])
  assert not np.array_equal(a, splits.cold_start_split(seqs, 0.2, seed=2)[1])
  assert len(splits.cold_start_split(seqs, 0.0, seed=1)[1]) == 0
  with pytest.raises(ValueError, match=r"data.cold_items must lie in \[0, 1\), got 1.0"):
    splits.cold_start_split(seqs, 1.0, seed=1)
