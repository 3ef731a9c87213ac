"""The two in-memory shapes every reader produces.

`Interactions` is a flat event log (one row per event, any order). `UserSequences` is the per-user,
time-ordered form every model trains on, stored CSR-style (`offsets` into flat `items`).

Item ids inside recjax are *model ids*: 1..num_items-1, with 0 reserved for padding. Readers whose
source ids already start at 1 (MovieLens) keep them unchanged, so results stay comparable with
the HSTU reference code; readers whose ids start at 0 (KuaiRand) shift them by +1 and say so.
"""
from __future__ import annotations

import dataclasses

import numpy as np

PADDING_ID = 0


@dataclasses.dataclass(frozen=True)
class Interactions:
  """A flat event log. All arrays have length E (one entry per event)."""
  user: np.ndarray                   # int64 [E] raw user ids
  item: np.ndarray                   # int64 [E] model item ids (>= 1)
  timestamp: np.ndarray | None       # int64 [E] unix seconds, or None when the source has none
  source: str                        # where it came from (paths), for error messages and results files
  num_items: int                     # embedding rows: max model id + 1 (row 0 = padding)
  candidate_items: np.ndarray | None = None   # int64 ids the catalogue holds (e.g. every movies.dat id)
  extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # rating, actions, tab, ...

  def __post_init__(self):
    n = len(self.user)
    for name in ("item", "timestamp"):
      a = getattr(self, name)
      if a is not None and len(a) != n:
        raise ValueError(f"{self.source}: column '{name}' has {len(a)} rows, 'user' has {n}")
    for name, a in self.extras.items():
      if len(a) != n:
        raise ValueError(f"{self.source}: column '{name}' has {len(a)} rows, 'user' has {n}")

  def __len__(self) -> int:
    return len(self.user)


@dataclasses.dataclass(frozen=True)
class UserSequences:
  """Per-user time-ordered sequences (oldest first), CSR layout.

  user `u_k = user_ids[k]` owns items[offsets[k]:offsets[k+1]].
  """
  user_ids: np.ndarray               # int64 [U]
  offsets: np.ndarray                # int64 [U+1], offsets[0] == 0, non-decreasing
  items: np.ndarray                  # int32 [E] model ids in 1..num_items-1
  timestamps: np.ndarray | None      # int64 [E] unix seconds, or None
  num_items: int                     # embedding rows (row 0 = padding)
  source: str
  candidate_items: np.ndarray | None = None   # ids ranked at evaluation; None = 1..num_items-1
  extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # per-event, length E

  def __post_init__(self):
    if len(self.offsets) != len(self.user_ids) + 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.items):
      raise ValueError(f"{self.source}: offsets do not describe {len(self.user_ids)} users / {len(self.items)} events")
    if np.any(np.diff(self.offsets) < 0):
      raise ValueError(f"{self.source}: offsets decrease")
    if len(self.items) and (self.items.min() < 1 or self.items.max() >= self.num_items):
      raise ValueError(f"{self.source}: item ids must lie in 1..{self.num_items - 1}, "
                       f"found {self.items.min()}..{self.items.max()}")

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  @property
  def has_timestamps(self) -> bool:
    return self.timestamps is not None

  def items_of(self, k: int) -> np.ndarray:
    return self.items[self.offsets[k]:self.offsets[k + 1]]

  def catalogue(self) -> np.ndarray:
    """Ids ranked at evaluation (full-catalogue ranking)."""
    if self.candidate_items is not None:
      return np.asarray(self.candidate_items, np.int64)
    return np.arange(1, self.num_items, dtype=np.int64)
