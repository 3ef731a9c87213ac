"""Full-catalogue retrieval metrics with one relevant item per query.

rank    = 1 + #(candidates scoring strictly higher than the target, excluded ones not counted);
          a target that is itself excluded (e.g. already in the history window) is a miss (rank ∞).
HR@K    = 1[rank ≤ K]
NDCG@K  = 1[rank ≤ K] / log2(rank + 1)          (one relevant item, so IDCG = 1)
MRR     = 1 / rank

These match the HSTU reference evaluation (papers.md §3.5 items 34-38) except that the reference
truncates its candidate list at 2,500, so its MRR counts ranks > 2,500 as 1/2,501; ours is exact.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

DEFAULT_KS = (1, 10, 50, 200)
MISS_RANK = np.iinfo(np.int32).max


def target_ranks(scores_BC, target_scores_B, excluded_BC=None, target_excluded_B=None):
  """1-based rank of each target among the non-excluded candidates -> [B] int32 (jnp or numpy)."""
  xp = jnp if isinstance(scores_BC, jnp.ndarray) and not isinstance(scores_BC, np.ndarray) else np
  higher = scores_BC > target_scores_B[:, None]
  if excluded_BC is not None:
    higher = higher & ~excluded_BC
  rank = 1 + xp.sum(higher, axis=1).astype(xp.int32)
  if target_excluded_B is not None:
    rank = xp.where(target_excluded_B, MISS_RANK, rank)
  return rank


def metrics_from_ranks(ranks, ks=DEFAULT_KS) -> dict[str, float]:
  """Mean HR@K, NDCG@K and MRR over queries."""
  r = np.asarray(ranks, np.float64)
  if r.size == 0:
    raise ValueError("no queries to evaluate")
  out = {}
  for k in ks:
    hit = r <= k
    out[f"hr@{k}"] = float(np.mean(hit))
    out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)))
  out["mrr"] = float(np.mean(np.where(r < MISS_RANK, 1.0 / r, 0.0)))
  return out
