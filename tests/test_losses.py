"""The chunked sampled-softmax kernel equals the plain formula (loss and gradients); so does the
row-sharded `shard_map` loss (`recjax/sharded_losses.py`) on a one-device mesh (its 8-device
equality with the SPMD path: tests/train/test_mesh.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import losses


def _inputs(seed, t=300, d=8, v=40, n=16):
  k = jax.random.split(jax.random.key(seed), 5)
  user = jax.random.normal(k[0], (t, d))
  table = jax.random.normal(k[1], (v, d))
  pos = jax.random.randint(k[2], (t,), 1, v)
  neg = jax.random.randint(k[3], (t, n), 1, v)
  neg = neg.at[:, 0].set(pos)  # make sure duplicates of the positive occur
  w = (jax.random.uniform(k[4], (t,)) < 0.7).astype(jnp.float32)
  return user, table, pos, neg, w


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_sampled_softmax_matches_reference(chunk):
  user, table, pos, neg, w = _inputs(0)
  f = lambda u, e: losses.sampled_softmax_loss(u, e, pos, neg, w, temperature=0.05, chunk=chunk)
  g = lambda u, e: losses.sampled_softmax_loss_reference(u, e, pos, neg, w, temperature=0.05)
  (l1, (du1, de1)) = jax.value_and_grad(f, (0, 1))(user, table)
  (l2, (du2, de2)) = jax.value_and_grad(g, (0, 1))(user, table)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  np.testing.assert_allclose(du1, du2, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(de1, de2, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [3, 1000])
def test_sharded_sampled_softmax_matches_reference_on_one_device(chunk):
  """The shard_map loss's own arithmetic (owned-entry compaction, its loop over `chunk` x K entries,
  removed duplicates, normalisation of the rows it reads, hand-written backward) on a 1-device mesh;
  a table row shorter than eps among the candidates takes the eps branch of the normalisation."""
  from recjax import sharded_losses   # pylint: disable=import-outside-toplevel
  from recjax.train import mesh as mesh_lib   # pylint: disable=import-outside-toplevel
  mesh = mesh_lib.make_mesh(mesh_lib.mesh_spec({"shape": (1, 1)}, num_devices=1))
  user, table, pos, neg, w = _inputs(3, t=50)
  table = table.at[5].multiply(1e-8)
  neg = neg.at[:, 1].set(5)
  ids = jnp.concatenate([pos[:, None], neg], axis=1)
  f = lambda u, e: sharded_losses.sampled_softmax_loss_sharded(u, e, ids, w, mesh=mesh, axes=("data",),
                                                                temperature=0.05, chunk=chunk)
  g = lambda u, e: losses.sampled_softmax_loss_reference(u, e, pos, neg, w, temperature=0.05)
  (l1, (du1, de1)) = jax.jit(jax.value_and_grad(f, (0, 1)))(user, table)
  (l2, (du2, de2)) = jax.value_and_grad(g, (0, 1))(user, table)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  np.testing.assert_allclose(du1, du2, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(de1, de2, rtol=1e-4, atol=1e-6)
  assert float(jnp.abs(de2[5]).max()) > 1e3   # the short row's gradient is d / eps: large, and checked


def test_shard_map_impl_needs_a_mesh():
  user, table, pos, neg, w = _inputs(4, t=8)
  with pytest.raises(ValueError, match=r"loss.impl='shard_map' needs a device mesh"):
    losses.sampled_softmax_loss(user, table, pos, neg, w, temperature=0.05, impl="shard_map")


def test_sampled_softmax_by_hand():
  """One token, one negative: loss = log(1 + exp(s_neg - s_pos)) with cosine logits / T."""
  user = jnp.array([[1.0, 0.0]])
  table = jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
  loss = losses.sampled_softmax_loss(user, table, jnp.array([1]), jnp.array([[2]]), jnp.ones(1),
                                     temperature=0.5)
  np.testing.assert_allclose(loss, np.log1p(np.exp((0.0 - 1.0) / 0.5)), rtol=1e-6)
  # A negative equal to the positive is removed: the loss is then log(1) = 0.
  loss = losses.sampled_softmax_loss(user, table, jnp.array([1]), jnp.array([[1]]), jnp.ones(1),
                                     temperature=0.5)
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)


def test_zero_weight_tokens_do_not_count():
  user, table, pos, neg, w = _inputs(1)
  base = losses.sampled_softmax_loss(user, table, pos, neg, w, temperature=0.1)
  user2 = jnp.where(w[:, None] > 0, user, 1e3)   # garbage in padding rows
  np.testing.assert_allclose(losses.sampled_softmax_loss(user2, table, pos, neg, w, temperature=0.1), base,
                             rtol=1e-6)


def test_full_softmax_matches_dense():
  user, table, pos, _, w = _inputs(2)
  cat = jnp.arange(1, table.shape[0])
  f = lambda u, e: losses.full_softmax_loss(u, e, pos, w, temperature=0.1, catalogue=cat, item_chunk=7)

  def dense(u, e):
    u, e = losses.l2_normalize(u), losses.l2_normalize(e)
    s = u @ e[cat].T / 0.1
    per = jax.nn.logsumexp(s, -1) - jnp.sum(u * e[pos], -1) / 0.1
    return jnp.sum(per * w) / jnp.sum(w)

  (l1, g1) = jax.value_and_grad(f, (0, 1))(user, table)
  (l2, g2) = jax.value_and_grad(dense, (0, 1))(user, table)
  np.testing.assert_allclose(l1, l2, rtol=1e-5)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_negatives_come_from_catalogue():
  cat = jnp.array([3, 5, 9])
  neg = losses.sample_negatives(jax.random.key(0), 50, 20, cat)
  assert neg.shape == (50, 20)
  assert set(np.unique(neg).tolist()) == {3, 5, 9}
