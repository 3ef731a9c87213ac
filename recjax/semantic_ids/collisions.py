"""SID collisions: diagnosis (collision rate, per-prefix load) and repair at minimum cost.

A collision group is a set of items sharing a full SID; a model that decodes SIDs cannot tell
them apart (papers.md §6a: up to 30% of items, Hit@10 overstated up to 2x). Two repairs:

  * `reassign_last_level` (zero-collision reassignment): keep levels 0..L-2, give every item
    under a colliding prefix a distinct last-level code by a min-cost assignment
    (scipy's Hungarian `linear_sum_assignment`) on the quantisation cost [N, K] of each item
    against each last-level code (`rq_kmeans.last_level_costs`). With `min_moves=True` (default)
    the objective is lexicographic: fewest moved items first (that is exactly Σ_groups (g - 1),
    the least any repair can move), then the least total cost increase among those; with
    `min_moves=False` it is the least cost increase alone, which may move non-colliding items
    of the same prefix to make room.
  * `append_disambiguation_level` (TIGER): an extra level holding each item's index inside its
    group; always possible, lengthens every SID by one token.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment

from recjax.semantic_ids.codes import group_ids, validate_codes


@dataclasses.dataclass(frozen=True)
class Groups:
  group_of_item: np.ndarray   # int64 [N] collision group (= distinct full SID) of each item
  group_size: np.ndarray      # int64 [G] items per group
  sids: np.ndarray            # int64 [G, L] the group's SID


def collision_groups(codes_NL) -> Groups:
  gid, sids = group_ids(codes_NL)
  return Groups(gid, np.bincount(gid, minlength=len(sids)).astype(np.int64), sids.astype(np.int64))


def collision_rate(codes_NL) -> float:
  """Share of items whose full SID is shared with at least one other item."""
  g = collision_groups(codes_NL)
  return float(np.mean(g.group_size[g.group_of_item] > 1))


def prefix_load(codes_NL, depth: int) -> tuple[np.ndarray, np.ndarray]:
  """Items per distinct prefix of `depth` levels -> (prefixes [P, depth], counts [P]), most
  loaded first (ties in lexicographic prefix order)."""
  codes = np.asarray(codes_NL)
  if not 1 <= depth <= codes.shape[1]:
    raise ValueError(f"prefix_load: depth must lie in 1..{codes.shape[1]}, got {depth}")
  prefixes, counts = np.unique(codes[:, :depth], axis=0, return_counts=True)
  order = np.argsort(-counts, kind="stable")
  return prefixes[order], counts[order]


def collision_report(codes_NL) -> dict:
  """Summary numbers for a results file."""
  codes = np.asarray(codes_NL)
  g = collision_groups(codes)
  colliding = g.group_size > 1
  out = {"items": int(codes.shape[0]), "levels": int(codes.shape[1]), "distinct_sids": int(len(g.sids)),
         "collision_rate": float(np.mean(colliding[g.group_of_item])),
         "colliding_groups": int(colliding.sum()), "max_group_size": int(g.group_size.max()),
         "min_moves_to_repair": int(np.sum(g.group_size - 1))}
  for d in range(1, codes.shape[1] + 1):
    _, counts = prefix_load(codes, d)
    out[f"max_load_depth{d}"] = int(counts[0])
  return out


@dataclasses.dataclass(frozen=True)
class Repair:
  codes: np.ndarray          # int64 [N, L] collision-free codes
  moved: np.ndarray          # bool [N] items whose last-level code changed
  cost_increase: float       # Σ cost[n, new] - Σ cost[n, old]

  @property
  def num_moved(self) -> int:
    return int(self.moved.sum())


def reassign_last_level(codes_NL, cost_NK, min_moves: bool = True) -> Repair:
  """Zero-collision reassignment of last-level codes (see the module docstring).

  Args:
    codes_NL: int [N, L] SIDs (with collisions).
    cost_NK: float [N, K] cost of giving item n last-level code k (e.g. squared distance of its
      last residual to code k); K is the last level's codebook size.
  Raises ValueError when some prefix holds more than K items (use `append_disambiguation_level`).
  """
  cost = np.asarray(cost_NK, np.float64)
  if cost.ndim != 2:
    raise ValueError(f"reassign_last_level: cost must be [N, K], got shape {cost.shape}")
  n, k = cost.shape
  codes = validate_codes(codes_NL, k)
  if codes.shape[0] != n:
    raise ValueError(f"reassign_last_level: {codes.shape[0]} code rows but {n} cost rows")
  if not np.all(np.isfinite(cost)):
    raise ValueError(f"reassign_last_level: cost row {int(np.argwhere(~np.isfinite(cost))[0, 0])} is not finite")
  g = collision_groups(codes)
  prefix_id = group_ids(codes[:, :-1])[0] if codes.shape[1] > 1 else np.zeros(n, np.int64)
  bad_prefixes = np.unique(prefix_id[g.group_size[g.group_of_item] > 1])
  new = codes.copy()
  for p in bad_prefixes:
    items = np.flatnonzero(prefix_id == p)
    if len(items) > k:
      raise ValueError(f"reassign_last_level: prefix {codes[items[0], :-1].tolist()} holds {len(items)} items, "
                       f"more than the {k} last-level codes; append a disambiguation level instead")
    c = cost[items]
    if min_moves:
      # One extra move must cost more than any achievable saving in total cost inside the prefix.
      penalty = len(items) * (c.max() - c.min()) + 1.0
      c = c + penalty * (np.arange(k)[None, :] != codes[items, -1][:, None])
    rows, cols = linear_sum_assignment(c)
    new[items[rows], -1] = cols
  moved = new[:, -1] != codes[:, -1]
  rows = np.arange(n)
  return Repair(new, moved, float(cost[rows, new[:, -1]].sum() - cost[rows, codes[:, -1]].sum()))


def append_disambiguation_level(codes_NL) -> np.ndarray:
  """TIGER's repair: an extra last level = the item's index inside its collision group (in item
  order), 0 for items without a collision -> [N, L + 1]."""
  codes = np.asarray(codes_NL, np.int64)
  gid = collision_groups(codes).group_of_item
  order = np.argsort(gid, kind="stable")
  starts = np.r_[0, np.flatnonzero(np.diff(gid[order])) + 1]
  rank_sorted = np.arange(len(gid)) - np.repeat(starts, np.diff(np.r_[starts, len(gid)]))
  extra = np.empty(len(gid), np.int64)
  extra[order] = rank_sorted
  return np.concatenate([codes, extra[:, None]], axis=1)
