"""Multi-task BCE (+ watch-ratio regression) against the plain formula in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import losses


def _naive(logits, labels, w, tw, wp=None, wt=None, lam=0.0):
  x = np.asarray(logits, np.float64)
  s = 1 / (1 + np.exp(-x))
  bce = -(labels * np.log(s) + (1 - labels) * np.log(1 - s))
  per_task = (bce * w[:, None]).sum(0) / w.sum()
  loss = (np.asarray(tw) * per_task).sum()
  if lam:
    loss += lam * (w * (wp - wt) ** 2).sum() / w.sum()
  return loss, per_task


def _inputs(seed, n=50, t=3):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 3, (n, t)).astype(np.float32)
  labels = (rng.random((n, t)) < 0.3).astype(np.float32)
  w = (rng.random(n) < 0.8).astype(np.float32)
  return logits, labels, w


@pytest.mark.parametrize("seed", range(3))
def test_multitask_bce_matches_formula_and_gradient(seed):
  logits, labels, w = _inputs(seed)
  tw = [1.0, 0.5, 2.0]
  loss, aux = losses.multitask_bce_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w), tw)
  want, per_task = _naive(logits, labels, w, tw)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(aux["bce_T"], per_task, rtol=1e-5)
  # d loss / d x_nt = τ_t w_n (σ(x) − y) / Σ w
  g = jax.grad(lambda x: losses.multitask_bce_loss(x, jnp.asarray(labels), jnp.asarray(w), tw)[0])(
      jnp.asarray(logits))
  want_g = np.asarray(tw)[None] * w[:, None] * (1 / (1 + np.exp(-logits.astype(np.float64))) - labels) / w.sum()
  np.testing.assert_allclose(g, want_g, rtol=1e-4, atol=1e-7)


def test_padding_and_zero_task_weight_are_ignored():
  logits, labels, w = _inputs(5)
  base, _ = losses.multitask_bce_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w), [1.0, 0.0, 1.0])
  logits2 = logits.copy()
  logits2[w == 0] = 50.0                    # padding candidates
  logits2[:, 1] = -7.0                      # the zero-weight task
  moved, _ = losses.multitask_bce_loss(jnp.asarray(logits2), jnp.asarray(labels), jnp.asarray(w), [1.0, 0.0, 1.0])
  np.testing.assert_allclose(base, moved, rtol=1e-6)


def test_extreme_logits_are_finite():
  loss, _ = losses.multitask_bce_loss(jnp.array([[100.0], [-100.0]]), jnp.array([[0.0], [1.0]]),
                                      jnp.ones(2), [1.0])
  np.testing.assert_allclose(loss, 100.0, rtol=1e-6)


def test_watch_ratio_head():
  logits, labels, w = _inputs(1)
  rng = np.random.default_rng(2)
  wp, wt = rng.random(len(w)).astype(np.float32), rng.random(len(w)).astype(np.float32)
  tw = [1.0, 1.0, 1.0]
  loss, aux = losses.multitask_bce_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w), tw,
                                        watch_pred_N=jnp.asarray(wp), watch_target_N=jnp.asarray(wt),
                                        watch_weight=0.3)
  want, _ = _naive(logits, labels, w, tw, wp, wt, 0.3)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  assert float(aux["watch_mse"]) > 0
  with pytest.raises(ValueError, match="watch_pred_N"):
    losses.multitask_bce_loss(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(w), tw, watch_weight=1.0)


def test_shape_errors():
  with pytest.raises(ValueError, match="one task weight per task"):
    losses.multitask_bce_loss(jnp.zeros((4, 2)), jnp.zeros((4, 2)), jnp.ones(4), [1.0])
  with pytest.raises(ValueError, match=r"\[N, T\]"):
    losses.multitask_bce_loss(jnp.zeros((4, 2)), jnp.zeros((4, 3)), jnp.ones(4), [1.0, 1.0])
