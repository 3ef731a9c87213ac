"""backend="pallas" (interpret mode on CPU) gives the same model outputs, gradients and loss curve as "xla"."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax import losses
from recjax.models.hstu import HSTU
from recjax.models.sasrec import SASRec
from tests.models.test_models import L, V, _batch


def _hstu(backend, dropout=0.0):
  return HSTU(num_items=V, dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_len=L, attn_norm_len=L + 3,
              dropout=dropout, backend=backend)


@pytest.mark.parametrize("make", [
    lambda b: _hstu(b),
    lambda b: SASRec(num_items=V, dim=16, num_blocks=1, num_heads=2, ffn_dim=16, max_len=L, dropout=0.0, backend=b),
], ids=["hstu", "sasrec"])
def test_outputs_and_gradients_match(make):
  batch = _batch(with_times=True)
  xla, pallas = make("xla"), make("pallas")
  params = xla.init(jax.random.key(0), batch)

  def f(model):
    def g(p):
      out, _ = model.apply(p, batch)
      valid = (batch["ids"] != 0)[..., None]
      return jnp.sum(jnp.where(valid, out, 0.0) ** 2), out
    return jax.jit(jax.value_and_grad(g, has_aux=True))

  (la, oa), ga = f(xla)(params)
  (lb, ob), gb = f(pallas)(params)
  valid = np.asarray(batch["ids"] != 0)
  np.testing.assert_allclose(np.asarray(ob)[valid], np.asarray(oa)[valid], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(lb, la, rtol=1e-5)
  # fp32, two summation orders: the absolute tolerance follows each gradient's own scale.
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(a).max())))


@pytest.mark.slow   # ≈ 15 s idle; outputs and gradients are compared in the default suite above
def test_hstu_20_steps_same_loss_curve():
  batch = _batch(with_times=True)
  labels = jnp.roll(batch["ids"], -1, axis=1) * (batch["ids"] != 0)
  idx = jnp.flatnonzero(labels.reshape(-1), size=int((labels != 0).sum()))
  tx = optax.adam(1e-2)

  def curve(model):
    params = model.init(jax.random.key(0), batch)
    opt = tx.init(params)

    def loss(p, key):
      out, table = model.apply(p, batch, train=True, rngs={"dropout": key})
      u = out.reshape(-1, out.shape[-1])[idx]
      neg = losses.sample_negatives(key, idx.shape[0], 8, jnp.arange(1, V))
      return losses.sampled_softmax_loss(u, table, labels.reshape(-1)[idx], neg, jnp.ones(idx.shape[0]),
                                         temperature=0.05)

    @jax.jit
    def step(p, o, key):
      l, g = jax.value_and_grad(loss)(p, key)
      u, o = tx.update(g, o, p)
      return optax.apply_updates(p, u), o, l

    out = []
    for i in range(20):
      params, opt, l = step(params, opt, jax.random.key(i))
      out.append(float(l))
    return np.array(out)

  a, b = curve(_hstu("xla", 0.2)), curve(_hstu("pallas", 0.2))
  assert a[-1] < a[0]      # it trains
  np.testing.assert_allclose(b, a, rtol=2e-4)
