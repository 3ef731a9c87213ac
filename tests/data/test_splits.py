"""The HSTU protocol split and the grain pipeline."""
import numpy as np
import pytest

from recjax.data import pipeline, splits
from recjax.data.types import UserSequences


def _seqs(with_times=True):
  items = [np.array([5, 6, 7, 8]), np.array([9, 3]), np.array([1, 2, 3, 4, 5, 6, 7])]
  offsets = np.concatenate([[0], np.cumsum([len(x) for x in items])])
  flat = np.concatenate(items).astype(np.int32)
  times = (np.arange(len(flat)) * 10 + 1000).astype(np.int64) if with_times else None
  return UserSequences(np.array([1, 2, 3]), offsets, flat, times, 10, "test")


def test_train_examples_last_item_protocol():
  ex = splits.train_examples(_seqs(), max_len=3, protocol="last_item")
  # user 1: items 5 6 7 8 -> train part 5 6 7 -> inputs 5 6, labels 6 7
  np.testing.assert_array_equal(ex.ids[0], [5, 6, 0])
  np.testing.assert_array_equal(ex.labels[0], [6, 7, 0])
  assert ex.lengths[0] == 2
  # user 2 has 2 items: only 1 left for training -> no example; user 3: window of the last 4 of 1..6
  np.testing.assert_array_equal(ex.user_ids, [1, 3])
  np.testing.assert_array_equal(ex.ids[1], [3, 4, 5])
  np.testing.assert_array_equal(ex.labels[1], [4, 5, 6])
  # times: each label's time is the next item's time
  np.testing.assert_array_equal(ex.next_times[1][:2], ex.times[1][1:])


def test_eval_examples_and_target_times():
  s = _seqs()
  ex = splits.eval_examples(s, max_len=3, split="test")
  np.testing.assert_array_equal(ex.targets, [8, 3, 7])
  np.testing.assert_array_equal(ex.ids[0], [5, 6, 7])
  np.testing.assert_array_equal(ex.ids[1], [9, 0, 0])
  np.testing.assert_array_equal(ex.ids[2], [4, 5, 6])
  # the query's time (last real position) is the target's own timestamp
  t0 = s.timestamps.min()
  assert ex.next_times[1][0] == s.timestamps[5] - t0
  assert ex.next_times[2][2] == s.timestamps[-1] - t0


def test_last_two_protocol_has_valid_split():
  s = _seqs(with_times=False)
  v = splits.eval_examples(s, 3, "valid", "last_two")
  # user 2 ([9, 3]): the validation target 9 has no history before it, so the user is dropped
  np.testing.assert_array_equal(v.targets, [7, 6])
  assert v.times is None


def test_unknown_protocol_and_split_raise():
  with pytest.raises(ValueError, match="protocol"):
    splits.train_examples(_seqs(), 3, "random")
  with pytest.raises(ValueError, match="no 'valid'"):
    splits.eval_examples(_seqs(), 3, "valid", "last_item")


def test_pipeline_batches_pack_tokens_and_resume():
  ex = splits.train_examples(_seqs(), max_len=3)
  ds = pipeline.train_dataset(ex, batch_size=4, num_epochs=3, seed=0, token_bucket=4)
  assert len(ds) == 3  # one (padded) batch per epoch
  b = ds[0]
  assert b["ids"].shape == (4, 3)
  assert b["token_index"].shape == (8,)  # 5 real tokens -> padded to a multiple of 4
  real = b["token_weight"] > 0
  assert real.sum() == ex.lengths.sum()
  np.testing.assert_array_equal(np.sort(b["labels"].reshape(-1)[b["token_index"][real]]),
                                np.sort(ex.labels[ex.labels > 0]))
  it = pipeline.TrainIterator(ds)
  first = next(it)
  state = it.get_state()
  second = next(it)
  it2 = pipeline.TrainIterator(ds)
  it2.set_state(state)
  np.testing.assert_array_equal(next(it2)["ids"], second["ids"])
  assert first["ids"].shape == second["ids"].shape


def test_pipeline_reshuffles_every_epoch_and_resumes_in_the_same_order():
  """Each epoch is a fresh permutation of all users (epoch 2's order is not epoch 1's); an iterator
  rebuilt from a saved state (JSON round trip, as in a checkpoint), mid-epoch or at an epoch
  boundary, yields exactly the batches of an uninterrupted one, through the later reshuffles."""
  import json
  n_users, batch, epochs = 40, 8, 3
  items = np.concatenate([[u, 100 + u, 200 + u] for u in range(1, n_users + 1)]).astype(np.int32)
  seqs = UserSequences(np.arange(1, n_users + 1), np.arange(0, 3 * n_users + 1, 3), items, None, 301, "test")
  ex = splits.train_examples(seqs, max_len=3)   # inputs [u], labels [100 + u]: ids[:, 0] names the user

  def dataset(seed=0):
    return pipeline.train_dataset(ex, batch_size=batch, num_epochs=epochs, seed=seed, token_bucket=4)

  def users(batches):
    u = np.concatenate([b["ids"][:, 0] for b in batches])
    return u[u > 0]

  full = list(pipeline.TrainIterator(dataset()))
  spe = pipeline.steps_per_epoch(ex, batch)
  assert len(full) == spe * epochs
  orders = [users(full[e * spe:(e + 1) * spe]) for e in range(epochs)]
  for order in orders:
    np.testing.assert_array_equal(np.sort(order), np.arange(1, n_users + 1))
  assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
  assert not np.array_equal(users(list(pipeline.TrainIterator(dataset(seed=1)))[:spe]), orders[0])

  for stop in (3, spe, spe + 2):   # mid epoch 1, the epoch boundary, mid epoch 2
    it = pipeline.TrainIterator(dataset())
    for _ in range(stop):
      next(it)
    state = json.loads(json.dumps(it.get_state()))
    resumed = pipeline.TrainIterator(dataset())   # a fresh process: new dataset, new iterator
    resumed.set_state(state)
    rest = list(resumed)
    assert len(rest) == len(full) - stop, stop
    for k, (a, b) in enumerate(zip(full[stop:], rest)):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"resumed after {stop}: batch {stop + k}, {key}")


def test_per_process_parts_laid_side_by_side_are_the_whole_batch():
  """Multi-process runs: each process builds only its slots of every global batch. The parts
  concatenated must be the 1-process batch, field by field, including the short last batch of an
  epoch (part 3 of it is all padding); the packed token fields index the whole batch on every part."""
  n_users, batch, epochs = 13, 8, 2   # 13 = 8 + 5: the second batch of each epoch is short
  items = np.concatenate([[u, 100 + u, 200 + u] for u in range(1, n_users + 1)]).astype(np.int32)
  times = np.arange(3 * n_users, dtype=np.int64) * 7
  seqs = UserSequences(np.arange(1, n_users + 1), np.arange(0, 3 * n_users + 1, 3), items, times, 301, "test")
  ex = splits.train_examples(seqs, max_len=3)
  full = pipeline.train_dataset(ex, batch_size=batch, num_epochs=epochs, seed=3, token_bucket=4)
  parts = [pipeline.train_dataset(ex, batch_size=batch, num_epochs=epochs, seed=3, token_bucket=4, part=p)
           for p in [(0, 2), (2, 6), (6, 8)]]
  assert len(full) == 2 * epochs and all(len(p) == len(full) for p in parts)
  for k in range(len(full)):
    whole, pieces = full[k], [p[k] for p in parts]
    assert set(whole) == set(pieces[0]) and "times" in whole
    assert [len(x["ids"]) for x in pieces] == [2, 4, 2]
    for key in whole:
      if key in pipeline.PACKED_FIELDS:
        for x in pieces:
          np.testing.assert_array_equal(x[key], whole[key], err_msg=f"batch {k}, {key}")
      else:
        np.testing.assert_array_equal(np.concatenate([x[key] for x in pieces]), whole[key],
                                      err_msg=f"batch {k}, {key}")
  assert not parts[2][1]["lengths"].any()   # slots 6, 7 of a 5-row batch: padding only
  with pytest.raises(ValueError, match=r"part \(6, 10\) is not a slice of a batch of 8 rows"):
    parts = pipeline.train_dataset(ex, batch_size=batch, num_epochs=1, seed=3, token_bucket=4, part=(6, 10))[0]
