"""Item-vector routes against hand computations, and their cluster structure on a synthetic world."""
import numpy as np
import pytest

from recjax.data import sequences, synthetic
from recjax.data.types import UserSequences
from recjax.metrics.clustering import normalized_mutual_info
from recjax.semantic_ids import item_vectors, rq_kmeans


def test_tfidf_by_hand():
  m, vocab = item_vectors.tfidf(["Toy Story (1995)", "toy soldiers", "Heat (1995)"])
  assert vocab == ["1995", "heat", "soldiers", "story", "toy"]
  idf = lambda df: np.log(4 / (1 + df)) + 1
  row0 = np.array([idf(2), 0, 0, idf(1), idf(2)])
  np.testing.assert_allclose(m[0], row0 / np.linalg.norm(row0), rtol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0, rtol=1e-6)
  m2, vocab2 = item_vectors.tfidf(["Toy Story (1995)", "toy soldiers", "Heat (1995)"], min_df=2)
  assert vocab2 == ["1995", "toy"]
  with pytest.raises(ValueError, match="row 1 is float"):
    item_vectors.tfidf(["a", 1.0])


def test_content_vectors_blocks_and_svd():
  titles = ["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)", "Heat Wave (2001)"]
  genres = [["Animation", "Comedy"], ["Animation"], ["Crime"], ["Crime", "Drama"]]
  v = item_vectors.content_vectors([1, 2, 3, 4], titles, genres, min_df=1)
  assert v.route == "content:tfidf" and v.vectors.shape == (4, 8 + 4)
  # Each block is row-normalised: the title block and the genre block both have norm 1.
  np.testing.assert_allclose(np.linalg.norm(v.vectors, axis=1), np.sqrt(2), rtol=1e-6)
  sim = v.vectors @ v.vectors.T
  assert sim[0, 1] > sim[0, 2] and sim[2, 3] > sim[1, 3]
  low = item_vectors.content_vectors([1, 2, 3, 4], titles, genres, min_df=1, dim=2)
  assert low.vectors.shape == (4, 2)
  with pytest.raises(ValueError, match="4 item ids, 3 titles"):
    item_vectors.content_vectors([1, 2, 3, 4], titles[:3])


def small_sequences():
  seqs = [[1, 2, 3, 1], [2, 3], [4]]
  return UserSequences(user_ids=np.arange(3), offsets=np.r_[0, np.cumsum([len(s) for s in seqs])],
                       items=np.concatenate(seqs).astype(np.int32), timestamps=None, num_items=5,
                       source="<test>")


def test_cooccurrence_counts_and_ppmi_by_hand():
  seqs = small_sequences()
  for window in (1, 2, 3):
    want = np.zeros((5, 5))
    for k in range(seqs.num_users):
      s = seqs.items_of(k)
      for i in range(len(s)):
        for j in range(i + 1, min(i + window + 1, len(s))):
          want[s[i], s[j]] += 1
          want[s[j], s[i]] += 1
    np.testing.assert_array_equal(item_vectors.cooccurrence_counts(seqs, window).toarray(), want)
  c = item_vectors.cooccurrence_counts(seqs, 2).toarray()
  rs = c.sum(1)
  with np.errstate(divide="ignore", invalid="ignore"):
    dense = np.log(c * c.sum() / np.outer(rs, rs))
  want = np.where((c > 0) & (dense > 0), dense, 0.0)
  np.testing.assert_allclose(item_vectors.ppmi(item_vectors.cooccurrence_counts(seqs, 2)).toarray(), want)


@pytest.fixture(scope="module")
def world():
  cfg = synthetic.WorldConfig(num_users=300, num_items=120, num_topics=6, mean_seq_len=40, seed=0)
  return cfg, synthetic.build_world(cfg)


def test_collaborative_route_recovers_topics(world):
  cfg, w = world
  seqs = sequences.sequences_from_interactions(synthetic.make_world_interactions(cfg))
  v = item_vectors.cooccurrence_vectors(seqs, dim=8, window=3)
  assert v.route == "collab:ppmi" and v.vectors.shape == (120, 8)
  np.testing.assert_array_equal(v.item_ids, np.arange(1, 121))
  np.testing.assert_array_equal(item_vectors.cooccurrence_vectors(seqs, dim=8, window=3).vectors, v.vectors)
  codes = rq_kmeans.fit_rq_kmeans(v.vectors, rq_kmeans.RQKMeansConfig(2, 6)).encode(v.vectors)
  assert normalized_mutual_info(codes[:, 0], w.item_topic[v.item_ids - 1]) >= 0.9


def test_synthetic_route_levels_follow_topic_then_author(world):
  _, w = world
  v = item_vectors.synthetic_vectors(w.item_topic, w.item_author, w.item_duration_ms)
  assert v.route == "synthetic" and v.vectors.shape == (120, 6 + len(np.unique(w.item_author)) + 1)
  codes = rq_kmeans.fit_rq_kmeans(v.vectors, rq_kmeans.RQKMeansConfig(2, 6)).encode(v.vectors)
  assert normalized_mutual_info(codes[:, 0], w.item_topic) >= 0.9
  # Without the topic column, the content alone (authors are topic-specific) is a harder route.
  v2 = item_vectors.synthetic_vectors(w.item_topic, w.item_author, w.item_duration_ms, include_topic=False)
  assert v2.vectors.shape[1] == v.vectors.shape[1] - 6


def test_fill_from_content_maps_only_the_missing_rows():
  rng = np.random.default_rng(0)
  z = rng.standard_normal((200, 30))
  x = z @ rng.standard_normal((30, 8))
  missing = np.arange(0, 200, 10)
  x[missing] = 0.0
  fill = item_vectors.fill_from_content(item_vectors.ItemVectors("collab:ppmi", np.arange(1, 201), x.astype(np.float32)),
                                        z, ridge=0.1)
  v = fill.vectors
  assert v.route == "collab:ppmi+content:tfidf" and fill.filled == len(missing)
  known = np.setdiff1d(np.arange(200), missing)
  np.testing.assert_array_equal(v.vectors[known], x[known].astype(np.float32))   # real rows untouched
  truth = z[missing] @ np.linalg.lstsq(z[known], x[known], rcond=None)[0]
  cos = np.sum(v.vectors[missing] * truth, 1) / np.linalg.norm(v.vectors[missing], axis=1) / np.linalg.norm(truth, axis=1)
  assert cos.min() > 0.9
  # Filled rows sit at the real rows' median norm, and the held-out check beats the mean vector.
  np.testing.assert_allclose(np.linalg.norm(v.vectors[missing], axis=1), np.median(np.linalg.norm(x[known], axis=1)),
                             rtol=1e-5)
  assert fill.holdout_cosine > 0.9 > fill.holdout_cosine_mean_vector
  # Nothing missing: nothing changes.
  full = item_vectors.fill_from_content(item_vectors.ItemVectors("collab:ppmi", np.arange(1, 201), (z @ z[:8].T).astype(np.float32)), z)
  assert full.filled == 0


@pytest.mark.parametrize("content, ridge, known, message", [
    (np.ones((5, 3)), 1.0, 5, r"content \(5, 3\) for 6 collaborative rows"),
    (np.ones((6, 3)), 0.0, 5, r"ridge must be > 0"),
    (np.ones((6, 3)), 1.0, 1, r"1 items have a collaborative vector"),
])
def test_fill_from_content_rejects_bad_input(content, ridge, known, message):
  x = np.zeros((6, 4), np.float32)
  x[:known] = 1.0
  with pytest.raises(ValueError, match=message):
    item_vectors.fill_from_content(item_vectors.ItemVectors("collab:ppmi", np.arange(1, 7), x), content, ridge=ridge)


def test_hybrid_route_codes_cold_items_by_content(world):
  """Items without training events: the collaborative route gives them all the zero vector (one
  shared SID); the hybrid route puts each near the warm items of its topic."""
  from recjax.semantic_ids import catalogue_sids   # pylint: disable=import-outside-toplevel
  cfg, w = world
  seqs = sequences.sequences_from_interactions(synthetic.make_world_interactions(cfg))
  cold = np.arange(1, 121, 8)                       # 15 items, every topic
  keep = ~np.isin(seqs.items, cold)
  user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)[keep]
  offsets = np.concatenate([[0], np.cumsum(np.bincount(user_of, minlength=seqs.num_users))]).astype(np.int64)
  train = UserSequences(seqs.user_ids, offsets, seqs.items[keep], None, seqs.num_items, "train")
  catalogue = np.arange(1, 121)
  topic = w.item_topic[catalogue - 1]
  titles = [f"author{a} story" for a in w.item_author[catalogue - 1]]
  genres = [[f"topic{t}"] for t in topic]
  base = dict(vector_dim=8, window=3, num_levels=2, codebook_size=6, normalize=True, dedup="none", seed=0)
  collab = catalogue_sids.build_catalogue_sids(catalogue_sids.SIDSettings(vectors="collab:ppmi", **base),
                                               catalogue, train, (titles, genres))
  hybrid = catalogue_sids.build_catalogue_sids(catalogue_sids.SIDSettings(vectors="collab:ppmi+content:tfidf", **base),
                                               catalogue, train, (titles, genres))
  is_cold = np.isin(catalogue, cold)
  # Exactly zero, not ARPACK's round-off (which would normalise to an arbitrary direction).
  assert collab.report["zero_vectors"] == 15 and len({tuple(c) for c in collab.codes_NL[is_cold]}) == 1
  assert hybrid.report["zero_vectors"] == 0 and hybrid.report["content_filled"] == 15
  assert hybrid.report["content_map_holdout_cosine"] > hybrid.report["content_map_holdout_cosine_mean_vector"]
  # Warm items keep their collaborative level-1 codes' topic structure; each cold item lands in the
  # level-1 code most warm items of its topic hold.
  level1 = hybrid.codes_NL[:, 0]
  assert normalized_mutual_info(level1[~is_cold], topic[~is_cold]) >= 0.9
  majority = {t: np.bincount(level1[~is_cold & (topic == t)]).argmax() for t in np.unique(topic)}
  assert np.mean([level1[i] == majority[topic[i]] for i in np.flatnonzero(is_cold)]) >= 0.8
