"""The pieces end to end: vectors -> RQ-KMeans -> collisions -> repair -> trie -> beam search ->
collision-aware metrics (the path a TIGER study takes)."""
import jax
import numpy as np

from recjax.metrics import collisions as cm
from recjax.metrics.retrieval import metrics_from_ranks
from recjax.semantic_ids import beam_search, collisions, rq_kmeans
from recjax.semantic_ids.trie import build_trie
from tests.semantic_ids.helpers import planted_clusters
from tests.semantic_ids.test_trie_beam_search import linear_scorer


def test_vectors_to_collision_aware_metrics():
  x, _ = planted_clusters(num_clusters=8, n=60, dim=8, spread=0.3, seed=5)
  k = 16
  tok = rq_kmeans.fit_rq_kmeans(x, rq_kmeans.RQKMeansConfig(num_levels=2, codebook_size=k, seed=0))
  codes = tok.encode(x)
  report = collisions.collision_report(codes)
  assert report["collision_rate"] > 0                       # 10% of the 60 items collide
  repair = collisions.reassign_last_level(codes, rq_kmeans.last_level_costs(tok.residuals(x), tok.codebooks_LKD))
  assert collisions.collision_rate(repair.codes) == 0 and repair.num_moved == report["min_moves_to_repair"]

  rng = np.random.default_rng(0)
  b = 16
  target_item = rng.integers(0, len(x), b)
  step_fn = linear_scorer(jax.random.PRNGKey(0), 2, k)
  state = {"user": jax.random.normal(jax.random.PRNGKey(1), (b, 8))}
  results = {}
  for name, table in (("colliding", codes), ("repaired", repair.codes)):
    trie = build_trie(table, k)
    beams = beam_search.constrained_beam_search(step_fn, trie.device_arrays(), state, 10)
    groups = np.asarray(beams.groups_BW)
    target_group = collisions.collision_groups(table).group_of_item[target_item]
    naive = metrics_from_ranks(cm.sid_level_ranks(groups, target_group), ks=(1, 5, 10))
    item = cm.expected_item_metrics(*cm.ranked_group_positions(groups, target_group, trie.leaf_size), ks=(1, 5, 10))
    results[name] = (naive, item)
    for key in naive:
      assert item[key] <= naive[key] + 1e-12
  naive, item = results["repaired"]                         # no collisions: the two agree
  for key in naive:
    np.testing.assert_allclose(item[key], naive[key], rtol=1e-12)
