"""Full-catalogue metrics against a brute-force numpy implementation; streamed ranks against the dense path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.metrics.retrieval import (MISS_RANK, catalogue_chunks, catalogue_ranks, catalogue_ranks_reference,
                                      metrics_from_ranks, target_ranks)


def brute_force(scores, targets, excluded, ks):
  """Sort each row, drop excluded candidates, find the target's 1-based position."""
  hr = {k: [] for k in ks}
  ndcg = {k: [] for k in ks}
  mrr = []
  for s, t, ex in zip(scores, targets, excluded):
    if ex[t]:
      rank = None
    else:
      order = [c for c in np.argsort(-s, kind="stable") if not ex[c]]
      rank = order.index(t) + 1
    for k in ks:
      hr[k].append(1.0 if rank is not None and rank <= k else 0.0)
      ndcg[k].append(1.0 / np.log2(rank + 1) if rank is not None and rank <= k else 0.0)
    mrr.append(0.0 if rank is None else 1.0 / rank)
  out = {}
  for k in ks:
    out[f"hr@{k}"] = np.mean(hr[k])
    out[f"ndcg@{k}"] = np.mean(ndcg[k])
  out["mrr"] = np.mean(mrr)
  return out


def test_metrics_match_brute_force():
  rng = np.random.default_rng(0)
  u, c, ks = 200, 60, (1, 5, 10, 50)
  scores = rng.normal(size=(u, c)).astype(np.float32)
  targets = rng.integers(0, c, u)
  excluded = rng.random((u, c)) < 0.2
  ranks = target_ranks(scores, scores[np.arange(u), targets], excluded, excluded[np.arange(u), targets])
  got = metrics_from_ranks(ranks, ks)
  want = brute_force(scores, targets, excluded, ks)
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-9, err_msg=k)


def test_jax_and_numpy_ranks_agree():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(30, 20)).astype(np.float32)
  t = rng.integers(0, 20, 30)
  ex = rng.random((30, 20)) < 0.3
  a = target_ranks(scores, scores[np.arange(30), t], ex, ex[np.arange(30), t])
  b = target_ranks(jnp.asarray(scores), jnp.asarray(scores[np.arange(30), t]), jnp.asarray(ex),
                   jnp.asarray(ex[np.arange(30), t]))
  np.testing.assert_array_equal(a, np.asarray(b))


def test_known_ranks():
  m = metrics_from_ranks(np.array([1, 3, MISS_RANK]), ks=(1, 10))
  np.testing.assert_allclose(m["hr@1"], 1 / 3)
  np.testing.assert_allclose(m["hr@10"], 2 / 3)
  np.testing.assert_allclose(m["ndcg@10"], (1 + 1 / np.log2(4)) / 3)
  np.testing.assert_allclose(m["mrr"], (1 + 1 / 3) / 3)


# --- the streamed catalogue ranks (evaluation) against the dense reference and a brute force ---

def _ranks_brute_force(user, items, catalogue, targets, window):
  """Python sets and exact integer scores: rank = 1 + #(catalogue items not in the window, other
  than the target, scoring strictly higher); a target in the window is a miss."""
  out = []
  for b in range(len(targets)):
    seen = set(int(x) for x in window[b]) - {0} if window is not None else set()
    t = int(targets[b])
    if t in seen:
      out.append(MISS_RANK)
      continue
    ts = int(user[b] @ items[t])
    out.append(1 + sum(1 for c in catalogue if c not in seen and c != t and int(user[b] @ items[c]) > ts))
  return np.array(out)


def _case(seed, b=24, v=90, d=6, l=9, integer=False):
  """Random queries over a catalogue ⊂ table rows 1..V-1; windows with padding, duplicates, and
  targets inside them, outside them and outside the catalogue. Row 0 (padding) gets the top score."""
  rng = np.random.default_rng(seed)
  if integer:   # small integers: every score is exact in float32, ties included
    user = rng.integers(-3, 4, (b, d)).astype(np.float32)
    items = rng.integers(-3, 4, (v, d)).astype(np.float32)
  else:
    user = rng.normal(size=(b, d)).astype(np.float32)
    items = rng.normal(size=(v, d)).astype(np.float32)
  items[0] = 50 * user.mean(0)   # padding row: would outscore everything if it were ever ranked
  catalogue = np.sort(rng.choice(np.arange(1, v), size=v * 2 // 3, replace=False))
  targets = rng.integers(1, v, b)
  window = rng.integers(1, v, (b, l))
  window[:, 1] = window[:, 0]                          # duplicates in every window
  window[rng.random((b, l)) < 0.25] = 0               # padding scattered through
  window[b // 4:b // 2, -1] = targets[b // 4:b // 2]   # a quarter of the targets inside their window
  window[b // 2, :] = 0                               # a window of padding only
  return user, items, catalogue, targets.astype(np.int32), window.astype(np.int32)


def _streamed(user, items, catalogue, targets, window, chunk, transform=None):
  ids, valid = catalogue_chunks(catalogue, items.shape[0], chunk)
  kwargs = {} if transform is None else {"item_transform": transform}
  return np.asarray(catalogue_ranks(jnp.asarray(user), jnp.asarray(items), jnp.asarray(ids), jnp.asarray(valid),
                                    jnp.asarray(targets), None if window is None else jnp.asarray(window), **kwargs))


@pytest.mark.parametrize("exclude", [True, False])
def test_streamed_ranks_match_brute_force_exactly(exclude):
  user, items, catalogue, targets, window = _case(0, integer=True)
  window = window if exclude else None
  want = _ranks_brute_force(user.astype(np.int64), items.astype(np.int64), catalogue, targets, window)
  assert (want == MISS_RANK).sum() >= (6 if exclude else 0)
  for chunk in (1, 7, 16, len(catalogue), 10 ** 6):   # 7 and 16 do not divide C = 59; C and more: one chunk
    np.testing.assert_array_equal(_streamed(user, items, catalogue, targets, window, chunk), want,
                                  err_msg=f"item_chunk={chunk}")
  ref = catalogue_ranks_reference(jnp.asarray(user), jnp.asarray(items), catalogue, jnp.asarray(targets),
                                  None if window is None else jnp.asarray(window))
  np.testing.assert_array_equal(np.asarray(ref), want)


@pytest.mark.parametrize("seed", [1, 2])
def test_streamed_ranks_equal_dense_reference_with_cosine_scores(seed):
  """The evaluation's setting (L2-normalised items, float scores) against the old dense path."""
  from recjax.losses import l2_normalize
  user, items, catalogue, targets, window = _case(seed, b=40, v=300, d=8, l=15)
  user = np.asarray(l2_normalize(jnp.asarray(user)))
  for w in (window, None):
    ref = np.asarray(catalogue_ranks_reference(jnp.asarray(user), jnp.asarray(items), catalogue,
                                               jnp.asarray(targets), None if w is None else jnp.asarray(w),
                                               item_transform=l2_normalize))
    for chunk in (13, 50, 64, len(catalogue)):
      np.testing.assert_array_equal(_streamed(user, items, catalogue, targets, w, chunk, l2_normalize), ref,
                                    err_msg=f"item_chunk={chunk}, window={w is not None}")


def test_padding_id_is_never_ranked_nor_excludes_a_candidate():
  """Row 0 outscores every item but is not in the catalogue; a window of zeros removes nothing,
  even the first candidate of each chunk (where a lookup of 0 in a sorted chunk lands)."""
  user = np.array([[1.0, 0.0]], np.float32)
  items = np.array([[9, 0], [5, 0], [4, 0], [3, 0], [2, 0], [1, 0]], np.float32)   # score = first column
  catalogue = np.arange(1, 6)
  target = np.array([4], np.int32)   # score 2: items 1..3 (scores 5, 4, 3) are higher
  zeros = np.zeros((1, 4), np.int32)
  for chunk in (1, 2, 5):
    assert _streamed(user, items, catalogue, target, zeros, chunk)[0] == 4
    assert _streamed(user, items, catalogue, target, None, chunk)[0] == 4


def test_window_items_never_outrank_the_target_and_a_seen_target_is_a_miss():
  user = np.array([[1.0, 0.0]] * 3, np.float32)
  items = np.array([[0, 0], [5, 0], [4, 0], [3, 0], [2, 0], [1, 0]], np.float32)
  catalogue = np.arange(1, 6)
  targets = np.array([3, 3, 3], np.int32)   # score 3; items 1 and 2 score higher
  window = np.array([[1, 2, 0], [1, 1, 0], [4, 3, 0]], np.int32)
  for chunk in (2, 5):
    got = _streamed(user, items, catalogue, targets, window, chunk)
    # row 0: both outscoring items are history -> rank 1; row 1: one of them (twice) -> rank 2;
    # row 2: the target itself is history -> miss.
    np.testing.assert_array_equal(got, [1, 2, MISS_RANK])
    np.testing.assert_array_equal(_streamed(user, items, catalogue, targets, None, chunk), [3, 3, 3])


def test_catalogue_chunks_validate_and_pad():
  ids, valid = catalogue_chunks(np.array([9, 3, 5, 7, 1]), 10, 2)
  np.testing.assert_array_equal(ids, [[1, 3], [5, 7], [9, 9]])
  np.testing.assert_array_equal(valid, [[True, True], [True, True], [True, False]])
  with pytest.raises(ValueError, match="row 0 is padding"):
    catalogue_chunks(np.array([0, 1, 2]), 10, 2)
  with pytest.raises(ValueError, match="outside the item table"):
    catalogue_chunks(np.array([1, 10]), 10, 2)
  with pytest.raises(ValueError, match="more than once"):
    catalogue_chunks(np.array([1, 4, 4]), 10, 2)
  with pytest.raises(ValueError, match="item_chunk"):
    catalogue_chunks(np.array([1, 2]), 10, 0)
  with pytest.raises(ValueError, match="non-empty"):
    catalogue_chunks(np.array([], np.int64), 10, 2)


def test_streamed_ranks_hold_only_chunk_sized_buffers():
  """XLA's own memory analysis: temporaries grow with the chunk, not with the catalogue."""
  b, d, chunk = 64, 8, 256

  def temp_bytes(c):
    items = jax.ShapeDtypeStruct((c + 1, d), jnp.float32)
    ids, valid = catalogue_chunks(np.arange(1, c + 1), c + 1, chunk)
    fn = jax.jit(catalogue_ranks)
    compiled = fn.lower(jax.ShapeDtypeStruct((b, d), jnp.float32), items, ids, valid,
                        jax.ShapeDtypeStruct((b,), jnp.int32), jax.ShapeDtypeStruct((b, 20), jnp.int32)).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  small, large = temp_bytes(4 * chunk), temp_bytes(64 * chunk)
  assert large < 1.5 * small + 64 * 1024, (small, large)
  assert large < b * 64 * chunk, "a [B, C] buffer was materialised"


@pytest.mark.parametrize("item_chunk", [1, 3, 7, 50])
def test_catalogue_nll_matches_dense_log_softmax(item_chunk):
  """Streamed catalogue cross-entropy == a numpy log-softmax over the catalogue's columns only
  (row 0 and the ids outside the catalogue never enter the denominator), at any chunk size."""
  from recjax.metrics.retrieval import catalogue_nll  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  b, v, d, scale = 5, 13, 4, 7.0
  user = rng.normal(size=(b, d)).astype(np.float32)
  items = rng.normal(size=(v, d)).astype(np.float32)
  catalogue = np.array([2, 3, 5, 6, 7, 9, 10, 12])
  targets = rng.choice(catalogue, b)
  ids, valid = catalogue_chunks(catalogue, v, item_chunk)
  got = np.asarray(catalogue_nll(jnp.asarray(user), jnp.asarray(items), jnp.asarray(ids), jnp.asarray(valid),
                                 jnp.asarray(targets), scale=scale))
  z = scale * (user.astype(np.float64) @ items[catalogue].T.astype(np.float64))
  lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
  want = lse - z[np.arange(b), np.searchsorted(catalogue, targets)]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert np.all(got > 0)
