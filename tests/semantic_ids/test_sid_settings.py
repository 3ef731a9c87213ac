"""`config.sid` validation of the one SID builder (`semantic_ids.catalogue_sids.SIDSettings`)."""
import ml_collections
import pytest

from recjax.semantic_ids.catalogue_sids import SIDSettings


def test_from_config_fills_defaults_and_rejects_unknown_keys_by_name():
  s = SIDSettings.from_config(ml_collections.ConfigDict({"vectors": "content:tfidf", "codebook_size": 8}))
  assert (s.vectors, s.codebook_size, s.num_levels, s.dedup) == ("content:tfidf", 8, 3, "append_level")
  assert SIDSettings.from_config(None) == SIDSettings()
  for old_key in ("route", "disambiguate"):   # the two former builders' names for vectors / dedup
    with pytest.raises(ValueError, match=rf"unknown config.sid key\(s\) \['{old_key}'\]"):
      SIDSettings.from_config({old_key: "content", "num_levels": 2})
  assert "tokens" not in s.construction() and s.construction()["vectors"] == "content:tfidf"
  # One k-means run is what every earlier cache was built with: its fingerprint is unchanged.
  assert "kmeans_restarts" not in s.construction()
  assert SIDSettings(kmeans_restarts=4).construction()["kmeans_restarts"] == 4
  # content_ridge shapes only the hybrid route's codes: the other routes' fingerprints ignore it.
  for route in ("content:tfidf", "collab:ppmi"):
    assert SIDSettings(vectors=route, content_ridge=9.0).construction() == SIDSettings(vectors=route).construction()
  hybrid = SIDSettings(vectors="collab:ppmi+content:tfidf")
  assert hybrid.needs_content and hybrid.construction()["content_ridge"] == 3.0
  assert not SIDSettings(vectors="collab:ppmi").needs_content and SIDSettings(vectors="content:tfidf").needs_content


@pytest.mark.parametrize("bad, message", [
    ({"vectors": "content"}, r"sid.vectors must be one of"),
    ({"dedup": "disambiguate"}, r"sid.dedup must be one of"),
    ({"tokens": "ids"}, r"sid.tokens must be one of"),
    ({"tokenizer": "kmeans"}, r"sid.tokenizer must be one of"),
    ({"codebook_size": 1}, r"codebook_size >= 2"),
    ({"vectors": "collab:ppmi", "vector_dim": 0}, r"sid.vector_dim must be >= 1"),
    ({"kmeans_restarts": 0}, r"sid.kmeans_restarts must be >= 1"),
    ({"content_ridge": 0.0}, r"sid.content_ridge must be > 0"),
    ({"vectors": "collab:ppmi+content:tfidf", "vector_dim": 0}, r"sid.vector_dim must be >= 1"),
])
def test_bad_values_fail_naming_the_key(bad, message):
  with pytest.raises(ValueError, match=message):
    SIDSettings.from_config(bad)
  assert SIDSettings(vectors="content:tfidf", vector_dim=0).vector_dim == 0   # content: 0 = raw vectors


def test_rq_vae_reassignment_leaves_no_collision_and_moves_items_to_cheap_codes():
  """RQ-VAE + dedup='reassign': the latent residuals' last-level costs drive the min-cost repair."""
  import numpy as np   # pylint: disable=import-outside-toplevel
  from recjax.semantic_ids import catalogue_sids as cs   # pylint: disable=import-outside-toplevel
  from tests.semantic_ids.helpers import planted_clusters   # pylint: disable=import-outside-toplevel
  x, _ = planted_clusters(num_clusters=8, n=120, dim=8, spread=0.3, seed=2)
  s = SIDSettings(tokenizer="rq_vae", dedup="reassign", num_levels=2, codebook_size=32, rq_vae_steps=60)
  codes, costs = cs.tokenize(x, s)
  assert costs.shape == (len(x), 32) and np.all(np.isfinite(costs))
  # Unrepaired, each item's last code is its cheapest (nearest) one.
  np.testing.assert_array_equal(codes[:, -1], np.argmin(costs, 1))
  assert len({tuple(c) for c in codes}) < len(x)   # collisions to repair
  fixed, report = cs.handle_collisions(codes, costs, s)
  assert len({tuple(c) for c in fixed}) == len(x) and report["reassigned_items"] > 0
  np.testing.assert_array_equal(fixed[:, :-1], codes[:, :-1])   # only the last level moves
