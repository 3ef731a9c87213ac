"""From a flat event log to per-user, time-ordered sequences (and simple filtering of them)."""
from __future__ import annotations

import numpy as np
from absl import logging

from recjax.data.types import Interactions, UserSequences


def _user_time_order(inter: Interactions) -> np.ndarray:
  """Event permutation sorting by (user, timestamp); ties keep file order.

  np.lexsort and argsort(kind="stable") are both stable, which is what makes tied timestamps (and
  sources without timestamps) keep the order in which the events appear in the file.

  Returns:
    int64 [E] permutation.
  """
  if inter.timestamp is None:
    return np.argsort(inter.user, kind="stable")
  return np.lexsort((inter.timestamp, inter.user))


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
  """Start index of every run of equal values in a sorted [E] array -> int64 [U]."""
  if len(sorted_keys) == 0:
    return np.zeros(0, np.int64)
  change = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
  return np.concatenate([[0], change]).astype(np.int64)


def sequences_from_interactions(inter: Interactions) -> UserSequences:
  """Groups an event log by user and orders each user's events by time.

  Users come out in ascending raw-id order. Events with equal timestamps (or all events when the
  source has no timestamps) keep their file order. Extras are permuted along with the events;
  num_items, candidate_items and source are kept.

  Args:
    inter: E events.
  Returns:
    UserSequences over the U distinct users, E events.
  """
  order = _user_time_order(inter)
  users = inter.user[order]
  starts = _segment_starts(users)
  offsets = np.concatenate([starts, [len(users)]]).astype(np.int64)
  return UserSequences(
      user_ids=users[starts].astype(np.int64),
      offsets=offsets,
      items=inter.item[order].astype(np.int32),
      timestamps=None if inter.timestamp is None else inter.timestamp[order].astype(np.int64),
      num_items=inter.num_items,
      source=inter.source,
      candidate_items=inter.candidate_items,
      extras={k: v[order] for k, v in inter.extras.items()},
  )


def select_users(seqs: UserSequences, keep: np.ndarray) -> UserSequences:
  """Keeps the users where `keep` is True (order preserved), with their events and extras.

  Args:
    keep: bool [U].
  """
  lengths = seqs.lengths
  event_keep = np.repeat(keep, lengths)
  kept_lengths = lengths[keep]
  return UserSequences(
      user_ids=seqs.user_ids[keep],
      offsets=np.concatenate([[0], np.cumsum(kept_lengths)]).astype(np.int64),
      items=seqs.items[event_keep],
      timestamps=None if seqs.timestamps is None else seqs.timestamps[event_keep],
      num_items=seqs.num_items,
      source=seqs.source,
      candidate_items=seqs.candidate_items,
      extras={k: v[event_keep] for k, v in seqs.extras.items()},
  )


def filter_min_length(seqs: UserSequences, min_len: int) -> tuple[UserSequences, int]:
  """Drops users with fewer than `min_len` events and logs how many users/events went.

  Returns:
    (filtered sequences, number of users dropped).
  """
  keep = seqs.lengths >= min_len
  n_dropped = int((~keep).sum())
  n_events_dropped = int(seqs.lengths[~keep].sum())
  logging.info("%s: filter_min_length(%d) dropped %d of %d users and %d of %d events",
               seqs.source, min_len, n_dropped, seqs.num_users, n_events_dropped, len(seqs.items))
  if n_dropped == 0:
    return seqs, 0
  return select_users(seqs, keep), n_dropped
