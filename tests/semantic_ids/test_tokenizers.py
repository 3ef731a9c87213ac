"""RQ-KMeans and RQ-VAE: planted clusters recovered at level 1, usage diagnostics, estimators."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax.metrics.clustering import normalized_mutual_info
from recjax.semantic_ids import codes as codes_lib
from recjax.semantic_ids import rq_kmeans, rq_vae
from tests.semantic_ids.helpers import planted_clusters


def test_nmi_known_values():
  a = np.array([0, 0, 1, 1, 2, 2])
  assert normalized_mutual_info(a, [5, 5, 3, 3, 9, 9]) == pytest.approx(1.0)   # relabelled
  assert normalized_mutual_info([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
  # [0,0,1,1] vs [0,0,0,1]: H(A)=ln2, H(B)=H(1/4), I = H(B) - H(B|A) = H(B) - ln2/2.
  hb = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
  want = (hb - np.log(2) / 2) / np.sqrt(np.log(2) * hb)
  assert normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(want)


def test_codebook_usage_uniform_and_collapsed():
  k = 4
  uniform = np.stack([np.arange(8) % k, np.zeros(8, int)], 1)
  lv = codes_lib.codebook_usage(uniform, k)
  assert lv[0].utilisation == 1.0 and lv[0].perplexity == pytest.approx(k) and lv[0].max_load == 0.25
  assert lv[1].used == 1 and lv[1].perplexity == pytest.approx(1.0) and lv[1].max_load == 1.0
  with pytest.raises(ValueError, match="row 1 level 0"):
    codes_lib.codebook_usage([[0], [4]], k)
  np.testing.assert_array_equal(codes_lib.truncate(uniform, 1), uniform[:, :1])


def test_rq_kmeans_recovers_planted_clusters_and_is_deterministic():
  x, label = planted_clusters()
  cfg = rq_kmeans.RQKMeansConfig(num_levels=3, codebook_size=12, seed=3)
  tok = rq_kmeans.fit_rq_kmeans(x, cfg)
  codes = tok.encode(x)
  assert codes.shape == (len(x), 3)
  assert normalized_mutual_info(codes[:, 0], label) >= 0.9
  usage = codes_lib.codebook_usage(codes, 12)
  assert usage[0].used == len(np.unique(label)) and 1.0 < usage[0].perplexity <= 12
  assert all(u.perplexity > 1.5 for u in usage)   # deeper levels split the clusters, no collapse
  np.testing.assert_array_equal(rq_kmeans.fit_rq_kmeans(x, cfg).codebooks_LKD, tok.codebooks_LKD)
  # Each extra level lowers the reconstruction error.
  errs = [np.mean(np.sum((x - np.asarray(rq_kmeans.decode(codes[:, :d], tok.codebooks_LKD[:d]))) ** 2, 1))
          for d in (1, 2, 3)]
  assert errs[0] > errs[1] > errs[2]


def test_restarts_rescue_a_seeding_that_misses_a_cluster():
  """8 planted clusters, 8 codes: at seeds 6 and 11 one greedy k-means++ seeding puts two centres in
  one cluster (level-1 NMI < 0.99); with 4 restarts per level the lowest-Σ D² run finds them all, and
  restarts = 1 is exactly the earlier single run."""
  x, label = planted_clusters(num_clusters=8, n=240, dim=16, spread=0.5, seed=0)
  for seed in (6, 11):
    one, four = (rq_kmeans.fit_rq_kmeans(x, rq_kmeans.RQKMeansConfig(num_levels=1, codebook_size=8, seed=seed,
                                                                       max_iters=50, restarts=r))
                 for r in (1, 4))
    assert normalized_mutual_info(one.encode(x)[:, 0], label) < 0.99
    assert normalized_mutual_info(four.encode(x)[:, 0], label) == pytest.approx(1.0)
    inertia = [np.sum((x - np.asarray(t.decode(t.encode(x)))) ** 2) for t in (one, four)]
    assert inertia[1] < inertia[0]
  with pytest.raises(ValueError, match="restarts >= 1"):
    rq_kmeans.RQKMeansConfig(restarts=0)
  with pytest.raises(ValueError, match="kmeans_restarts must be >= 1"):
    rq_vae.RQVAEConfig(kmeans_restarts=0)
  # RQ-VAE's codebook initialisation takes the restarts too: at 0 training steps its codebooks are
  # the k-means fit of the first batch's latents, so 4 restarts never raise the latents' Σ D².
  x8 = x[:64]
  init = [rq_vae.fit_rq_vae(x8, rq_vae.RQVAEConfig(num_levels=1, codebook_size=8, latent_dim=4, hidden_dims=(8,),
                                                   batch_size=64, num_steps=0, seed=6, kmeans_restarts=r))
          for r in (1, 4)]
  z = [np.asarray(t.latent(x8)) for t in init]
  np.testing.assert_allclose(z[0], z[1])                     # same encoder: only the codebooks differ
  sse = [np.sum((z[i] - np.asarray(t.params["codebooks"])[0][t.encode(x8)[:, 0]]) ** 2) for i, t in enumerate(init)]
  assert sse[1] <= sse[0] * (1 + 1e-5)


def test_residual_encode_matches_brute_force():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(50, 5)).astype(np.float32)
  books = rng.normal(size=(3, 7, 5)).astype(np.float32)
  codes, res = rq_kmeans.residual_encode(jnp.asarray(x), jnp.asarray(books))
  r = x.astype(np.float64)
  for l in range(3):
    np.testing.assert_allclose(np.asarray(res)[:, l], r, atol=1e-5)
    want = np.argmin(((r[:, None, :] - books[l][None]) ** 2).sum(-1), 1)
    np.testing.assert_array_equal(np.asarray(codes)[:, l], want)
    r = r - books[l][want]


def test_kmeans_rejects_bad_input():
  with pytest.raises(ValueError, match="cannot seed"):
    rq_kmeans.fit_rq_kmeans(np.zeros((3, 2)), rq_kmeans.RQKMeansConfig(codebook_size=4))
  with pytest.raises(ValueError, match="row 1 is not finite"):
    rq_kmeans.fit_rq_kmeans(np.array([[0.0], [np.nan]]), rq_kmeans.RQKMeansConfig(codebook_size=1))


SMALL_VAE = rq_vae.RQVAEConfig(num_levels=3, codebook_size=12, latent_dim=8, hidden_dims=(32,), batch_size=128,
                               num_steps=240, dead_code_reset_every=40, learning_rate=3e-3, seed=0)


@pytest.mark.parametrize("estimator", rq_vae.ESTIMATORS)
def test_rq_vae_recovers_planted_clusters(estimator):
  x, label = planted_clusters()
  model = rq_vae.fit_rq_vae(x, dataclasses.replace(SMALL_VAE, estimator=estimator), log_every=80)
  codes = model.encode(x)
  assert normalized_mutual_info(codes[:, 0], label) >= 0.9
  h = model.history
  assert [e["step"] for e in h] == [80, 160, 240]
  assert h[-1]["recon"] < h[0]["recon"]
  for lv in h[-1]["levels"]:
    assert 1.0 < lv["perplexity"] <= 12 and 0 < lv["utilisation"] <= 1


def test_rotation_trick_value_and_gradient():
  rng = np.random.default_rng(2)
  z = jnp.asarray(rng.normal(size=(3,)))
  q = jnp.asarray(rng.normal(size=(3,)))
  np.testing.assert_allclose(rq_vae.rotate_onto(z[None], q[None])[0], q, rtol=1e-5, atol=1e-6)
  # Explicit λR: the rotation taking z/|z| to q/|q| in their plane (identity on the normal).
  e, qh = z / jnp.linalg.norm(z), q / jnp.linalg.norm(q)
  r = (e + qh) / jnp.linalg.norm(e + qh)
  big_r = jnp.eye(3) - 2 * jnp.outer(r, r) + 2 * jnp.outer(qh, e)
  np.testing.assert_allclose(big_r.T @ big_r, jnp.eye(3), atol=1e-5)          # orthogonal
  np.testing.assert_allclose(big_r @ e, qh, atol=1e-5)
  jac = jax.jacobian(lambda zz: rq_vae.rotate_onto(zz[None], q[None])[0])(z)
  np.testing.assert_allclose(jac, jnp.linalg.norm(q) / jnp.linalg.norm(z) * big_r, rtol=1e-4, atol=1e-5)
  # Straight-through would give the identity instead.
  assert not np.allclose(jac, np.eye(3), atol=1e-2)


def test_dead_code_reset_moves_unused_codes_onto_batch_residuals():
  x, _ = planted_clusters(n=256)
  cfg = dataclasses.replace(SMALL_VAE, num_levels=2, codebook_size=4, dead_code_reset_every=2)
  model = rq_vae.RQVAE(cfg, x.shape[1])
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  params = {"encoder": model.encoder.init(k1, jnp.zeros((1, x.shape[1]))),
            "decoder": model.decoder.init(k2, jnp.zeros((1, cfg.latent_dim))),
            "codebooks": jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, cfg.latent_dim)),
                                     jnp.float32).at[:, 3].set(1e4)}   # code 3: never chosen
  tx = optax.sgd(0.0)                                                        # isolate the reset
  step = rq_vae._make_train_step(model, tx)
  usage = jnp.zeros((2, 4), jnp.int32)
  xb = jnp.asarray(x[:64])
  p1, _, usage, _ = step(params, tx.init(params), usage, 0, jax.random.PRNGKey(1), xb)
  np.testing.assert_array_equal(p1["codebooks"], params["codebooks"])       # step 1: no reset yet
  used = np.asarray(usage) > 0
  assert not used[:, 3].any() and used.any(1).all() and np.all(np.asarray(usage).sum(1) == 64)
  p2, _, usage, _ = step(p1, tx.init(p1), usage, 1, jax.random.PRNGKey(1), xb)
  books0, books2 = np.asarray(params["codebooks"]), np.asarray(p2["codebooks"])
  np.testing.assert_array_equal(books2[used], books0[used])                 # used codes kept
  assert np.all(np.any(books2[~used] != books0[~used], axis=-1))            # every dead code moved
  z = model.encoder.apply(params["encoder"], xb)
  _, res = rq_kmeans.residual_encode(z, params["codebooks"])
  for l, c in zip(*np.nonzero(~used)):                                     # ... onto a batch residual
    assert np.min(np.abs(np.asarray(res)[:, l] - books2[l, c]).sum(1)) < 1e-5
  np.testing.assert_array_equal(usage, 0)                                    # window restarted


def test_rq_vae_config_validation():
  with pytest.raises(ValueError, match="estimator"):
    rq_vae.RQVAEConfig(estimator="gumbel")
