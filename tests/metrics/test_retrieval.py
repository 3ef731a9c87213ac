"""Full-catalogue metrics against a brute-force numpy implementation."""
import jax.numpy as jnp
import numpy as np

from recjax.metrics.retrieval import MISS_RANK, metrics_from_ranks, target_ranks


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
