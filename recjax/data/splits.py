"""Train / validation / test examples from per-user sequences, as fixed-shape arrays.

Protocols (`protocol` in config):
  "last_item" (the HSTU reference code, papers.md §3.5 items 4-8): training drops each user's
      last item; the eval set predicts the last item from the ≤ max_len items before it. The
      reference has no validation split and scores this set after every epoch.
  "last_two": training drops the last two items; validation predicts the second-to-last item,
      test the last (the maintainer's intended split, generative-recommenders issue #8).

A training example is the user's most recent window of max_len + 1 items (of the training part):
inputs are its first max_len, labels its last max_len (position i predicts item i + 1), so every
position is supervised. An eval example is the ≤ max_len items before the target.

Arrays are right-padded with 0 (items) and 0 (times); times are seconds relative to the dataset's
first event, as int32.
"""
from __future__ import annotations

import dataclasses

from absl import logging
import numpy as np

from recjax.data.types import UserSequences

PROTOCOLS = ("last_item", "last_two")


@dataclasses.dataclass(frozen=True)
class TrainExamples:
  user_ids: np.ndarray            # [U]
  ids: np.ndarray                 # [U, L] int32 inputs
  labels: np.ndarray              # [U, L] int32 next items (0 = padding)
  lengths: np.ndarray             # [U] int32
  times: np.ndarray | None        # [U, L] int32 input times
  next_times: np.ndarray | None   # [U, L] int32 times of the labels

  def __len__(self):
    return len(self.user_ids)


@dataclasses.dataclass(frozen=True)
class EvalExamples:
  user_ids: np.ndarray            # [U]
  ids: np.ndarray                 # [U, L] int32 history window
  lengths: np.ndarray             # [U] int32
  targets: np.ndarray             # [U] int32
  times: np.ndarray | None        # [U, L] int32
  next_times: np.ndarray | None   # [U, L] int32; next_times[u, len-1] = the target's time

  def __len__(self):
    return len(self.user_ids)


def _windows(seqs: UserSequences, ends: np.ndarray, width: int, keep: np.ndarray):
  """For kept users k: the items (and times) of [max(0, end_k - width), end_k), right-padded."""
  idx = np.flatnonzero(keep)
  starts = np.maximum(ends[idx] - width, 0)
  lens = (ends[idx] - starts).astype(np.int32)
  cols = np.arange(width)[None, :]
  pos = seqs.offsets[idx][:, None] + starts[:, None] + cols
  valid = cols < lens[:, None]
  pos = np.where(valid, pos, 0)
  items = np.where(valid, seqs.items[pos], 0).astype(np.int32)
  times = None
  if seqs.timestamps is not None:
    t0 = seqs.timestamps.min() if len(seqs.timestamps) else 0
    times = np.where(valid, seqs.timestamps[pos] - t0, 0).astype(np.int32)
  return idx, items, times, lens


def _drop_short(seqs, keep, need, what):
  dropped = int(np.sum(~keep))
  if dropped:
    logging.warning("%s: %d of %d users have fewer than %d items and get no %s example",
                    seqs.source, dropped, seqs.num_users, need, what)


def train_examples(seqs: UserSequences, max_len: int, protocol: str = "last_item") -> TrainExamples:
  holdout = _holdout(protocol)
  usable = seqs.lengths - holdout            # items available for training
  keep = usable >= 2                         # at least one input and one label
  _drop_short(seqs, keep, holdout + 2, "training")
  idx, items, times, lens = _windows(seqs, usable, max_len + 1, keep)
  lens = lens - 1
  ids = items[:, :-1].copy()
  labels = items[:, 1:].copy()
  ids[np.arange(max_len)[None, :] >= lens[:, None]] = 0   # the last window item is a label only
  return TrainExamples(seqs.user_ids[idx], ids, labels, lens,
                       None if times is None else _mask(times[:, :-1], lens),
                       None if times is None else _mask(times[:, 1:], lens))


def eval_examples(seqs: UserSequences, max_len: int, split: str, protocol: str = "last_item") -> EvalExamples:
  """The validation or test examples of `protocol`."""
  holdout = _holdout(protocol)
  if split == "test":
    target_from_end = 1
  elif split == "valid" and holdout == 2:
    target_from_end = 2
  else:
    raise ValueError(f"protocol {protocol!r} has no {split!r} split (splits: "
                     f"{'valid, test' if holdout == 2 else 'test'})")
  lengths = seqs.lengths
  keep = lengths - target_from_end >= 1      # at least one history item
  _drop_short(seqs, keep, target_from_end + 1, split)
  ends = lengths - target_from_end
  idx, hist, htimes, hist_len = _windows(seqs, ends, max_len, keep)
  targets = seqs.items[seqs.offsets[idx] + ends[idx]].astype(np.int32)
  next_times = None
  if htimes is not None:
    t0 = seqs.timestamps.min()
    tt = (seqs.timestamps[seqs.offsets[idx] + ends[idx]] - t0).astype(np.int32)
    next_times = np.zeros_like(htimes)
    next_times[:, :-1] = htimes[:, 1:]
    next_times[np.arange(len(idx)), hist_len - 1] = tt
    next_times = _mask(next_times, hist_len)
  return EvalExamples(seqs.user_ids[idx], hist, hist_len, targets, htimes, next_times)


def train_label_events(seqs: UserSequences, max_len: int, protocol: str = "last_item") -> np.ndarray:
  """[U, L] int64: the event index (into `seqs.items`, `seqs.extras`) of each label of
  `train_examples(seqs, max_len, protocol)`, row for row; -1 where the label is padding. Per-event
  fields (e.g. the tab of a KuaiRand event) of the training targets are `field[idx]` where idx >= 0."""
  usable = seqs.lengths - _holdout(protocol)
  idx = np.flatnonzero(usable >= 2)          # the users train_examples keeps
  starts = np.maximum(usable[idx] - (max_len + 1), 0)
  n_labels = np.minimum(usable[idx], max_len + 1) - 1
  cols = np.arange(max_len)[None, :]
  pos = seqs.offsets[idx][:, None] + starts[:, None] + 1 + cols   # label j is window item j + 1
  return np.where(cols < n_labels[:, None], pos, -1).astype(np.int64)


def eval_target_events(seqs: UserSequences, split: str, protocol: str = "last_item") -> np.ndarray:
  """[N] int64: the event index of each target of `eval_examples(seqs, _, split, protocol)`, row for row."""
  target_from_end = 1 if split == "test" else 2
  eval_examples_check = split == "test" or (split == "valid" and _holdout(protocol) == 2)
  if not eval_examples_check:
    raise ValueError(f"protocol {protocol!r} has no {split!r} split")
  keep = seqs.lengths - target_from_end >= 1
  idx = np.flatnonzero(keep)
  return (seqs.offsets[idx] + seqs.lengths[idx] - target_from_end).astype(np.int64)


def _mask(a, lens):
  return np.where(np.arange(a.shape[1])[None, :] < lens[:, None], a, 0).astype(np.int32)


def _holdout(protocol):
  if protocol not in PROTOCOLS:
    raise ValueError(f"split protocol must be one of {PROTOCOLS}, got {protocol!r}")
  return 1 if protocol == "last_item" else 2


def cold_start_split(seqs: UserSequences, fraction: float, seed: int, protocol: str = "last_item"
                     ) -> tuple[UserSequences, np.ndarray]:
  """Holds a random `fraction` of the catalogue out of training entirely -> (sequences, cold ids).

  Choices (the cold-start protocol of `data.cold_items`):
    * cold items are drawn uniformly (without replacement, `seed`) from `seqs.catalogue()`, so
      popular and long-tail items are both held out in proportion to their number, not their events;
    * every event of a cold item is removed from each user's sequence except in the evaluated tail
      (the last item for "last_item", the last two for "last_two"), so a cold item is never a
      training input nor a training label, and under "last_item" never an evaluation input either;
      under "last_two" the validation target (cold or not) stays in the test window, as it does
      for every item in that protocol;
    * the evaluated targets are unchanged: each user's test (and validation) target is the item it
      was before the split, cold or warm, so cold and warm targets come from the same users.
  The caller keeps cold items out of the training catalogue (sampled negatives), so an ID
  table's cold rows get no gradient and stay at their initialisation.
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"data.cold_items must lie in [0, 1), got {fraction}")
  holdout = _holdout(protocol)
  catalogue = seqs.catalogue()
  n_cold = int(round(fraction * len(catalogue)))
  cold = np.sort(np.random.default_rng(seed).choice(catalogue, n_cold, replace=False)).astype(np.int64)
  user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)
  from_end = seqs.offsets[user_of + 1] - 1 - np.arange(len(seqs.items))   # 0 = the user's last item
  keep = ~np.isin(seqs.items, cold) | (from_end < holdout)
  kept_per_user = np.bincount(user_of[keep], minlength=seqs.num_users)
  offsets = np.concatenate([[0], np.cumsum(kept_per_user)]).astype(np.int64)
  out = dataclasses.replace(
      seqs, offsets=offsets, items=seqs.items[keep],
      timestamps=None if seqs.timestamps is None else seqs.timestamps[keep],
      extras={k: v[keep] for k, v in seqs.extras.items()},
      source=f"{seqs.source} (cold start: {n_cold} of {len(catalogue)} items held out of training, seed {seed})")
  return out, cold


def training_sequences(seqs: UserSequences, protocol: str = "last_item") -> UserSequences:
  """Each user's sequence without the evaluated tail of `protocol` (what training may see)."""
  holdout = _holdout(protocol)
  user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)
  keep = seqs.offsets[user_of + 1] - 1 - np.arange(len(seqs.items)) >= holdout
  offsets = np.concatenate([[0], np.cumsum(np.bincount(user_of[keep], minlength=seqs.num_users))]).astype(np.int64)
  return dataclasses.replace(seqs, offsets=offsets, items=seqs.items[keep],
                             timestamps=None if seqs.timestamps is None else seqs.timestamps[keep],
                             extras={k: v[keep] for k, v in seqs.extras.items()})


def prefix_examples(seqs: UserSequences, max_len: int, protocol: str = "last_item") -> EvalExamples:
  """Every next-item example of the training part: for each user and each training position t >= 1,
  the <= max_len items before it -> item t (TIGER trains on all of them). Shaped as EvalExamples
  (history window, length, target), user-major, in time order."""
  if max_len < 1:
    raise ValueError(f"prefix_examples: max_len must be >= 1, got {max_len}")
  usable = np.maximum(seqs.lengths - _holdout(protocol), 0)
  per_user = np.maximum(usable - 1, 0)                 # targets per user: positions 1..usable-1
  user = np.repeat(np.arange(seqs.num_users), per_user)
  first = np.r_[0, np.cumsum(per_user)][:-1]
  t = np.arange(len(user)) - np.repeat(first, per_user) + 1   # position of the target in its user
  lens = np.minimum(t, max_len).astype(np.int32)
  cols = np.arange(max_len)[None, :]
  valid = cols < lens[:, None]
  pos = np.where(valid, (seqs.offsets[user] + t - lens)[:, None] + cols, 0)
  ids = np.where(valid, seqs.items[pos], 0).astype(np.int32)
  targets = seqs.items[seqs.offsets[user] + t].astype(np.int32)
  return EvalExamples(seqs.user_ids[user], ids, lens, targets, None, None)
