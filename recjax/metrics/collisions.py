"""Collision-aware item-level metrics (papers.md §6a, "collision-corrected evaluation").

When g items share the credited slot (a SID decoded by a generative retriever, or g items tied on
score), the target sits at one of the item positions p .. p+g-1 with equal probability, where
p = 1 + (items ranked strictly ahead). Its expected credit is

  ItemHit@K  = |{p..p+g-1} ∩ [1..K]| / g
  ItemNDCG@K = (1/g) Σ_{j=p}^{min(p+g-1, K)} 1 / log2(j + 1)
  ItemMRR    = (1/g) Σ_{j=p}^{p+g-1} 1 / j

With g = 1 everywhere these are `retrieval.metrics_from_ranks` of rank p; any g > 1 can only lower
them. Two front-ends compute (p, g): from ranked SID groups (`ranked_group_positions`) and from
item scores with ties (`tied_positions`). Plain numpy; no model.
"""
from __future__ import annotations

import numpy as np

from recjax.metrics.retrieval import DEFAULT_KS, MISS_RANK


def expected_item_metrics(start_B, size_B, ks=DEFAULT_KS) -> dict[str, float]:
  """Mean expected HR@K, NDCG@K, MRR for targets spread over positions start..start+size-1.

  Args:
    start_B: int [B] first item position of the target's group (1-based); MISS_RANK = not returned.
    size_B: int [B] group size g >= 1.
  """
  p = np.asarray(start_B, np.int64)
  g = np.asarray(size_B, np.int64)
  if p.shape != g.shape or p.ndim != 1 or p.size == 0:
    raise ValueError(f"expected_item_metrics: need equal non-empty [B] arrays, got {p.shape}, {g.shape}")
  if np.any(g < 1) or np.any(p < 1):
    raise ValueError("expected_item_metrics: group sizes and start positions must be >= 1")
  hit = p < MISS_RANK
  last = np.where(hit, p + g - 1, 0)
  out = {}
  kmax = max(ks)
  disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(1, kmax + 1) + 1.0))])  # disc[j] = Σ_{i≤j}
  for k in ks:
    lo = np.minimum(np.where(hit, p, k + 1), k + 1)          # positions lo..hi inside [1, K]
    hi = np.minimum(last, k)
    n_in = np.maximum(hi - lo + 1, 0)
    out[f"hr@{k}"] = float(np.mean(n_in / g))
    out[f"ndcg@{k}"] = float(np.mean(np.where(n_in > 0, (disc[np.maximum(hi, 0)] - disc[lo - 1]), 0.0) / g))
  top = int(last.max()) if hit.any() else 0
  harm = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, top + 1))])
  out["mrr"] = float(np.mean(np.where(hit, harm[last] - harm[np.where(hit, p - 1, 0)], 0.0) / g))
  return out


def ranked_group_positions(ranked_groups_BR, target_group_B, group_size_G) -> tuple[np.ndarray, np.ndarray]:
  """(p, g) for ranked lists of collision groups (e.g. decoded SIDs, best first; -1 = empty slot).

  p = 1 + Σ sizes of the groups listed before the target's group; MISS_RANK when it is not listed.
  """
  ranked = np.asarray(ranked_groups_BR, np.int64)
  target = np.asarray(target_group_B, np.int64)
  size = np.asarray(group_size_G, np.int64)
  if ranked.ndim != 2 or target.shape != (ranked.shape[0],):
    raise ValueError(f"ranked_group_positions: need ranked [B, R] and target [B], got {ranked.shape}, {target.shape}")
  if np.any(ranked >= len(size)) or np.any(target < 0) or np.any(target >= len(size)):
    raise ValueError(f"ranked_group_positions: group ids must lie in 0..{len(size) - 1}")
  sizes = np.where(ranked >= 0, size[np.maximum(ranked, 0)], 0)
  ahead = np.cumsum(sizes, axis=1) - sizes                     # items listed before slot r
  is_t = ranked == target[:, None]
  found = is_t.any(1)
  r = np.argmax(is_t, axis=1)
  start = np.where(found, 1 + ahead[np.arange(len(r)), r], MISS_RANK)
  return start, size[target]


def sid_level_ranks(ranked_groups_BR, target_group_B) -> np.ndarray:
  """The naive (uncorrected) rank: 1-based slot of the target's SID in the list, MISS_RANK if absent."""
  ranked = np.asarray(ranked_groups_BR)
  is_t = ranked == np.asarray(target_group_B)[:, None]
  return np.where(is_t.any(1), 1 + np.argmax(is_t, axis=1), MISS_RANK)


def tied_positions(scores_BC, target_scores_B, excluded_BC=None, target_excluded_B=None):
  """(p, g) for item scores where ties are broken uniformly at random: p = 1 + #strictly higher,
  g = #equal to the target (the target included), excluded candidates not counted."""
  s = np.asarray(scores_BC)
  t = np.asarray(target_scores_B)[:, None]
  keep = np.ones_like(s, bool) if excluded_BC is None else ~np.asarray(excluded_BC)
  start = 1 + np.sum((s > t) & keep, axis=1)
  size = np.maximum(np.sum((s == t) & keep, axis=1), 1)
  if target_excluded_B is not None:
    start = np.where(target_excluded_B, MISS_RANK, start)
  return start, size
