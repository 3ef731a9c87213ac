"""HSTU with token packing equals HSTU on the padded grid: outputs at real positions and every
parameter gradient, with dropout on (the packed path draws the padded path's masks, so the
comparison is exact up to float summation order), with and without the time bias, 1 and 2 heads,
ragged lengths with a zero-length row, and bucket padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.data.pipeline import _pack_tokens
from recjax.models import init_params
from recjax.models.hstu import HSTU
from recjax.train.step import loss_fn

B, L, V = 4, 12, 40
LENGTHS = np.array([L, 7, 0, 3], np.int32)      # a full row, ragged rows and an empty one


def _batch(bucket, seed=0):
  rng = np.random.default_rng(seed)
  valid = np.arange(L)[None] < LENGTHS[:, None]
  ids = np.where(valid, rng.integers(1, V, (B, L)), 0).astype(np.int32)
  labels = np.where(valid, rng.integers(1, V, (B, L)), 0).astype(np.int32)
  t = np.where(valid, np.cumsum(rng.integers(1, 10_000, (B, L)), axis=1), 0).astype(np.int32)
  nt = np.where(valid, np.concatenate([t[:, 1:], t[:, -1:] + 5], axis=1), 0).astype(np.int32)
  index, weight = _pack_tokens(labels, bucket)
  return {"ids": ids, "labels": labels, "lengths": LENGTHS, "times": t, "next_times": nt,
          "token_index": index, "token_weight": weight}


def _model(packing, heads, time_bias, dropout=0.3, blocks=2):
  return HSTU(num_items=V, dim=16, num_blocks=blocks, num_heads=heads, dqk=8, dv=8, max_len=L, attn_norm_len=L + 3,
              dropout=dropout, use_time_bias=time_bias, token_packing=packing)


CASES = [  # (heads, time bias, token bucket: 0 = capacity B*L, else a multiple of the bucket)
    (1, False, 8),     # 22 tokens -> capacity 24
    pytest.param(2, True, 64, marks=pytest.mark.slow),   # capacity 48: more bucket padding than real tokens
    pytest.param(2, False, 0, marks=pytest.mark.slow),   # capacity B*L (train/loop.py's init batch)
    pytest.param(1, True, 8, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("heads, time_bias, bucket", CASES)
def test_packed_equals_padded_outputs_and_gradients(heads, time_bias, bucket):
  batch = jax.tree.map(jnp.asarray, _batch(bucket))
  valid = (np.arange(L)[None] < LENGTHS[:, None])[..., None]
  params = init_params(_model(True, heads, time_bias), jax.random.key(0), batch)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(B, L, 16)), jnp.float32)

  def loss(p, packed):
    out, table = _model(packed, heads, time_bias).apply({"params": p}, batch, train=True,
                                                        rngs={"dropout": jax.random.key(7)})
    # Real positions only: the padded path's padding rows hold values nothing reads.
    return jnp.sum(jnp.where(valid, jnp.tanh(out) * w, 0.0)) + jnp.sum(table ** 2), out

  grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
  (la, out_a), ga = grad(params, True)
  (lb, out_b), gb = grad(params, False)
  np.testing.assert_allclose(np.where(valid, out_a, 0), np.where(valid, out_b, 0), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(np.where(valid, 0, out_a), 0.0)   # packed: padding rows are zero
  np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ga, gb)
  # The comparison has teeth: dropout did act (outputs differ from the eval-mode ones).
  out_eval, _ = jax.jit(_model(False, heads, time_bias).apply)({"params": params}, batch)
  assert not np.allclose(np.where(valid, out_a, 0), np.where(valid, out_eval, 0), atol=1e-3)


def test_training_loss_and_gradients_through_the_step():
  """The training step's loss (packed supervised rows, sampled softmax) is the same either way."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  batch = jax.tree.map(jnp.asarray, _batch(8, seed=4))
  cfg = ml_collections.ConfigDict(dict(kind="sampled_softmax", num_negatives=16, temperature=0.05, chunk=8,
                                       impl="xla"))
  catalogue = jnp.arange(1, V, dtype=jnp.int32)
  params = init_params(_model(True, 2, True, blocks=1), jax.random.key(3), batch)
  key = jax.random.key(5)
  grad = jax.jit(jax.value_and_grad(lambda p, packed: loss_fn(p, _model(packed, 2, True, blocks=1), batch, key, cfg,
                                                              catalogue)), static_argnums=1)
  la, ga = grad(params, True)
  lb, gb = grad(params, False)
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ga, gb)


def test_without_token_index_runs_padded():
  """Evaluation batches carry no `token_index`: the packed model then runs the padded path."""
  batch = jax.tree.map(jnp.asarray, _batch(8))
  eval_batch = {k: batch[k] for k in ("ids", "lengths", "times", "next_times")}
  params = init_params(_model(True, 1, True, blocks=1), jax.random.key(0), batch)
  a, _ = jax.jit(_model(True, 1, True, blocks=1).apply)({"params": params}, eval_batch)
  b, _ = jax.jit(_model(False, 1, True, blocks=1).apply)({"params": params}, eval_batch)
  np.testing.assert_array_equal(a, b)


def test_capacity_smaller_than_the_real_tokens_raises():
  batch = jax.tree.map(jnp.asarray, _batch(8))
  batch["token_index"], batch["token_weight"] = batch["token_index"][:16], batch["token_weight"][:16]
  model = _model(True, 1, False, blocks=1)
  params = init_params(model, jax.random.key(0), _batch(8))
  with pytest.raises(Exception, match="22 real tokens .* capacity is 16"):
    jax.block_until_ready(jax.jit(lambda p, b: model.apply({"params": p}, b)[0])(params, batch))
