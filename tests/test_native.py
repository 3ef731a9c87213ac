"""The fused C++ sampled-softmax kernel equals the pure-JAX reference, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import losses, native


@pytest.fixture(scope="module", autouse=True)
def _need_native():
  if not native.available():
    pytest.skip(f"recjax.native kernels unavailable here: {native.why_unavailable()}")


def _inputs(t=300, v=40, d=7, n=16, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  user = jax.random.normal(ks[0], (t, d))
  table = jax.random.normal(ks[1], (v, d))
  pos = jax.random.randint(ks[2], (t,), 1, v)
  neg = jax.random.randint(ks[3], (t, n), 1, v)
  neg = neg.at[::3, 2].set(pos[::3])                     # negatives equal to the positive: removed
  weights = (jnp.arange(t) % 7 != 0).astype(jnp.float32)  # weight-0 rows, as in a packed batch
  return user, table, pos, neg, weights


@pytest.mark.parametrize("normalize,temperature", [(True, 0.05), (False, 1.0)])
def test_native_equals_reference_loss_and_gradients(normalize, temperature):
  user, table, pos, neg, w = _inputs()
  def loss(impl):
    if impl == "reference":
      return lambda u, e: losses.sampled_softmax_loss_reference(u, e, pos, neg, w, temperature=temperature,
                                                                normalize=normalize)
    return lambda u, e: losses.sampled_softmax_loss(u, e, pos, neg, w, temperature=temperature,
                                                    normalize=normalize, impl=impl, chunk=64)
  ref_l, ref_g = jax.value_and_grad(loss("reference"), (0, 1))(user, table)
  for impl in ("native", "xla"):
    l, g = jax.jit(jax.value_and_grad(loss(impl), (0, 1)))(user, table)
    np.testing.assert_allclose(l, ref_l, rtol=1e-5)
    for a, b in zip(g, ref_g):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_native_scales_with_the_cotangent():
  user, table, pos, neg, w = _inputs(seed=1)
  f = lambda u: 3.0 * losses.sampled_softmax_loss(u, table, pos, neg, w, temperature=0.1, impl="native")
  g = lambda u: 3.0 * losses.sampled_softmax_loss_reference(u, table, pos, neg, w, temperature=0.1)
  np.testing.assert_allclose(jax.grad(f)(user), jax.grad(g)(user), rtol=1e-4, atol=1e-6)


def test_native_rejects_out_of_range_ids():
  user, table, pos, neg, w = _inputs()
  bad = neg.at[5, 3].set(table.shape[0] + 2)
  with pytest.raises(Exception, match=r"item id 42 at token 5, candidate 4 is outside the table \[0, 40\)"):
    jax.block_until_ready(losses.sampled_softmax_loss(user, table, pos, bad, w, temperature=0.1, impl="native"))


def test_unknown_impl_is_an_error():
  user, table, pos, neg, w = _inputs()
  with pytest.raises(ValueError, match="impl must be one of"):
    losses.sampled_softmax_loss(user, table, pos, neg, w, temperature=0.1, impl="cuda")
