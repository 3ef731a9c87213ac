"""Full-catalogue retrieval metrics with one relevant item per query.

rank    = 1 + #(candidates scoring strictly higher than the target, excluded ones not counted);
          a target that is itself excluded (e.g. already in the history window) is a miss (rank ∞).
HR@K    = 1[rank ≤ K]
NDCG@K  = 1[rank ≤ K] / log2(rank + 1)          (one relevant item, so IDCG = 1)
MRR     = 1 / rank

These match the HSTU reference evaluation (papers.md §3.5 items 34-38) except that the reference
truncates its candidate list at 2,500, so its MRR counts ranks > 2,500 as 1/2,501; ours is exact.

`catalogue_nll`: each target's cross-entropy under a softmax over the catalogue (a validation
loss, streamed the same way).

Two ways to get the ranks from user vectors and an item table: `catalogue_ranks` streams the
catalogue in chunks (what evaluation runs: memory O(B * item_chunk), never B x catalogue), and
`catalogue_ranks_reference` builds the dense [B, C] scores and [B, V] history mask (the old
evaluation path, kept as the test reference). Both give the same ranks.
"""
from __future__ import annotations

from typing import Callable

import jax
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


def _identity(x):
  return x


def catalogue_chunks(catalogue, num_items: int, item_chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """The catalogue sorted and cut into chunks -> (ids [N, K] int32, valid [N, K] bool).

  Sorted so that window ids can be found by one binary search over the whole catalogue; the last
  chunk is padded with copies of the largest id, marked invalid (never counted). Ranks do
  not depend on candidate order, so the sort changes nothing else.
  """
  cat = np.asarray(catalogue)
  if cat.ndim != 1 or cat.size == 0:
    raise ValueError(f"catalogue must be a non-empty 1-D array of item ids, got shape {cat.shape}")
  if not np.issubdtype(cat.dtype, np.integer):
    raise ValueError(f"catalogue ids must be integers, got dtype {cat.dtype}")
  if item_chunk < 1:
    raise ValueError(f"eval.item_chunk must be >= 1, got {item_chunk}")
  bad = cat[(cat < 1) | (cat >= num_items)]
  if bad.size:
    raise ValueError(f"catalogue holds id {int(bad[0])} outside the item table rows [1, {num_items}) "
                     "(row 0 is padding and is never ranked)")
  cat = np.sort(cat).astype(np.int64)
  dup = cat[1:][cat[1:] == cat[:-1]]
  if dup.size:
    raise ValueError(f"catalogue lists item {int(dup[0])} more than once")
  n = len(cat)
  k = min(item_chunk, n)
  pad = (-n) % k
  ids = np.concatenate([cat, np.full(pad, cat[-1])]).astype(np.int32)
  valid = np.arange(n + pad) < n
  return ids.reshape(-1, k), valid.reshape(-1, k)


def _window_slots(ids_NK, valid_NK, window_BL, targets_B):
  """Where each query's history items sit in the chunked catalogue -> (chunk [B, L], column [B, L]).

  One binary search of the B*L window ids in the sorted catalogue (not one per chunk). Slots that
  must not be subtracted from the count get chunk = N (matches no chunk): padding id 0, ids not in
  the catalogue, the target itself (never counted, see `catalogue_ranks`) and repeats of an id
  already in the row (each window item is removed once)."""
  n, k = ids_NK.shape
  flat_ids, flat_valid = ids_NK.reshape(-1), valid_NK.reshape(-1)
  w_BL = jnp.sort(window_BL, axis=1)
  first_BL = jnp.concatenate([jnp.ones_like(w_BL[:, :1], bool), w_BL[:, 1:] != w_BL[:, :-1]], axis=1)
  pos_BL = jnp.clip(jnp.searchsorted(flat_ids, w_BL), 0, n * k - 1)   # the first copy: a valid one
  keep_BL = (first_BL & (w_BL != 0) & (w_BL != targets_B[:, None])
             & (flat_ids[pos_BL] == w_BL) & flat_valid[pos_BL])
  return jnp.where(keep_BL, pos_BL // k, n), pos_BL % k


def _check_streamed_args(user_BD, items_VD, ids_NK, valid_NK, targets_B):
  """Shape checks shared by the streamed catalogue scorers (`catalogue_ranks`, `catalogue_nll`)."""
  if user_BD.ndim != 2 or items_VD.ndim != 2 or user_BD.shape[1] != items_VD.shape[1]:
    raise ValueError(f"user_BD [B, D] and items_VD [V, D] must share D, got {user_BD.shape} and {items_VD.shape}")
  if ids_NK.shape != valid_NK.shape or ids_NK.ndim != 2:
    raise ValueError(f"ids_NK and valid_NK must both be [N, K], got {ids_NK.shape} and {valid_NK.shape}")
  if targets_B.shape != user_BD.shape[:1]:
    raise ValueError(f"targets_B must be [{user_BD.shape[0]}], got {targets_B.shape}")


def catalogue_ranks(user_BD: jax.Array, items_VD: jax.Array, ids_NK: jax.Array, valid_NK: jax.Array,
                    targets_B: jax.Array, window_BL: jax.Array | None = None,
                    item_transform: Callable[[jax.Array], jax.Array] = _identity) -> jax.Array:
  """Rank of each target over the catalogue, streamed chunk by chunk -> [B] int32 (jit-able).

  user_BD: query vectors [B, D]; items_VD: the item table [V, D] (row 0 = padding);
  ids_NK, valid_NK: the catalogue from `catalogue_chunks`; targets_B: target ids (need not be in
  the catalogue); window_BL: each query's input ids [B, L] (0 = padding): when given, those items
  are not ranked and a target among them is a miss (`MISS_RANK`); item_transform: applied to item
  rows before scoring (e.g. L2 normalisation for cosine scores).

  Score = user . item_transform(item row). rank = 1 + #(non-excluded candidates scoring strictly
  higher than the target), summed over chunks by a `lax.scan`. Per chunk: count the higher
  candidates in the [B, K] scores, then subtract the window items of this chunk that were counted,
  read back from the same scores at their slots (so the subtraction cancels exactly what was
  counted). The largest live arrays are one chunk's [B, K] scores, whatever the catalogue size.
  """
  _check_streamed_args(user_BD, items_VD, ids_NK, valid_NK, targets_B)
  if window_BL is not None and (window_BL.ndim != 2 or window_BL.shape[0] != user_BD.shape[0]):
    raise ValueError(f"window_BL must be [{user_BD.shape[0]}, L], got {window_BL.shape}")
  b, n = user_BD.shape[0], ids_NK.shape[0]
  rows_B1 = jnp.arange(b)[:, None]
  target_score_B = jnp.sum(user_BD * item_transform(items_VD[targets_B]), axis=-1)
  if window_BL is not None:
    chunk_BL, col_BL = _window_slots(ids_NK, valid_NK, window_BL, targets_B)

  def chunk(count_B, xs):
    i, ids_K, valid_K = xs
    s_BK = user_BD @ item_transform(items_VD[ids_K]).T
    # The target itself is skipped by id: its score here and `target_score_B` may differ in the
    # last bit, and it must never count as higher than itself.
    higher_BK = (s_BK > target_score_B[:, None]) & valid_K[None, :] & (ids_K[None, :] != targets_B[:, None])
    count_B = count_B + jnp.sum(higher_BK, axis=1, dtype=jnp.int32)
    if window_BL is not None:
      seen_higher_BL = (chunk_BL == i) & (s_BK[rows_B1, col_BL] > target_score_B[:, None])
      count_B = count_B - jnp.sum(seen_higher_BL, axis=1, dtype=jnp.int32)
    return count_B, None

  count_B, _ = jax.lax.scan(chunk, jnp.zeros((b,), jnp.int32), (jnp.arange(n), ids_NK, valid_NK))
  rank = 1 + count_B
  if window_BL is not None:
    target_seen_B = jnp.any((window_BL == targets_B[:, None]) & (window_BL != 0), axis=1)
    rank = jnp.where(target_seen_B, MISS_RANK, rank)
  return rank


def catalogue_nll(user_BD: jax.Array, items_VD: jax.Array, ids_NK: jax.Array, valid_NK: jax.Array,
                  targets_B: jax.Array, *, scale: float = 1.0,
                  item_transform: Callable[[jax.Array], jax.Array] = _identity) -> jax.Array:
  """Cross-entropy of each target under a softmax over the whole catalogue -> [B] float32 (jit-able).

  nll = logsumexp_c(scale · s_c) − scale · s_target, s = user . item_transform(item row), c over the
  valid entries of the chunked catalogue (`catalogue_chunks`), streamed with a running max so memory
  is one chunk's [B, K] scores. No history filter: this is the loss the softmax training estimates
  (the sampled softmax samples this denominator), so it compares models trained with it.
  """
  _check_streamed_args(user_BD, items_VD, ids_NK, valid_NK, targets_B)
  b = user_BD.shape[0]
  target_B = scale * jnp.sum(user_BD * item_transform(items_VD[targets_B]), axis=-1)

  def chunk(carry, xs):
    m_B, s_B = carry
    ids_K, valid_K = xs
    z_BK = jnp.where(valid_K[None, :], scale * (user_BD @ item_transform(items_VD[ids_K]).T), -jnp.inf)
    new_m_B = jnp.maximum(m_B, jnp.max(z_BK, axis=1))
    s_B = s_B * jnp.exp(m_B - new_m_B) + jnp.sum(jnp.exp(z_BK - new_m_B[:, None]), axis=1)
    return (new_m_B, s_B), None

  init = (jnp.full((b,), -jnp.inf, jnp.float32), jnp.zeros((b,), jnp.float32))
  (m_B, s_B), _ = jax.lax.scan(chunk, init, (ids_NK, valid_NK))
  return m_B + jnp.log(s_B) - target_B


def catalogue_ranks_reference(user_BD, items_VD, catalogue_C, targets_B, window_BL=None,
                              item_transform=_identity):
  """The dense form of `catalogue_ranks` (the evaluation path before streaming): [B, C] scores and
  a [B, V] history mask; ≈ B * (4C + V) bytes, 9 GB at B = 512 and 4.4M items. Tests only."""
  catalogue_C = jnp.asarray(catalogue_C, jnp.int32)
  b, v = user_BD.shape[0], items_VD.shape[0]
  rows = jnp.arange(b)
  col_of_item = jnp.full((v,), -1, jnp.int32).at[catalogue_C].set(jnp.arange(len(catalogue_C), dtype=jnp.int32))
  scores_BC = user_BD @ item_transform(items_VD[catalogue_C]).T
  col = col_of_item[targets_B]
  direct = jnp.sum(user_BD * item_transform(items_VD[targets_B]), axis=-1)
  target_scores = jnp.where(col >= 0, scores_BC[rows, jnp.maximum(col, 0)], direct)
  excluded = target_excluded = None
  if window_BL is not None:
    seen_BV = jnp.zeros((b, v), bool).at[rows[:, None], window_BL].set(True)
    seen_BV = seen_BV.at[:, 0].set(False)
    excluded = seen_BV[:, catalogue_C]
    target_excluded = seen_BV[rows, targets_B]
  return target_ranks(scores_BC, target_scores, excluded, target_excluded)


def per_query(ranks, k: int) -> dict[str, np.ndarray]:
  """HR@k and NDCG@k of each query -> {"hr": [N], "ndcg": [N]} (their means are `metrics_from_ranks`'s;
  per query for resampling the queries, e.g. a bootstrap over users)."""
  r = np.asarray(ranks, np.float64)
  hit = r <= k
  return {"hr": hit.astype(np.float64), "ndcg": np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)}


def metrics_from_ranks(ranks, ks=DEFAULT_KS) -> dict[str, float]:
  """Mean HR@K, NDCG@K and MRR over queries."""
  r = np.asarray(ranks, np.float64)
  if r.size == 0:
    raise ValueError("no queries to evaluate")
  out = {}
  for k in ks:
    q = per_query(r, k)
    out[f"hr@{k}"] = float(np.mean(q["hr"]))
    out[f"ndcg@{k}"] = float(np.mean(q["ndcg"]))
  out["mrr"] = float(np.mean(np.where(r < MISS_RANK, 1.0 / r, 0.0)))
  return out
