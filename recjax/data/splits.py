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


def _mask(a, lens):
  return np.where(np.arange(a.shape[1])[None, :] < lens[:, None], a, 0).astype(np.int32)


def _holdout(protocol):
  if protocol not in PROTOCOLS:
    raise ValueError(f"split protocol must be one of {PROTOCOLS}, got {protocol!r}")
  return 1 if protocol == "last_item" else 2
