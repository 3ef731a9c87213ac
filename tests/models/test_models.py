"""Model shapes, causality (no position sees its future) and config validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models import build_model, init_params
from recjax.models.hstu import HSTU
from recjax.models.sasrec import SASRec

B, L, V = 3, 12, 40


def _batch(seed=0, with_times=True):
  rng = np.random.default_rng(seed)
  lengths = np.array([L, 7, 1], np.int32)
  ids = rng.integers(1, V, (B, L)).astype(np.int32)
  ids[np.arange(L)[None] >= lengths[:, None]] = 0
  batch = {"ids": jnp.asarray(ids), "lengths": jnp.asarray(lengths)}
  if with_times:
    t = np.cumsum(rng.integers(1, 10_000, (B, L)), axis=1).astype(np.int32)
    batch["times"] = jnp.asarray(t)
    batch["next_times"] = jnp.asarray(np.concatenate([t[:, 1:], t[:, -1:] + 5], axis=1))
  return batch


MODELS = {
    "hstu": lambda: HSTU(num_items=V, dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_len=L,
                         attn_norm_len=L + 3, dropout=0.0),
    "hstu_no_time": lambda: HSTU(num_items=V, dim=16, num_blocks=1, num_heads=1, dqk=8, dv=8, max_len=L,
                                 attn_norm_len=L, dropout=0.0, use_time_bias=False),
    "sasrec": lambda: SASRec(num_items=V, dim=16, num_blocks=2, num_heads=2, ffn_dim=16, max_len=L, dropout=0.0),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shapes_and_tied_table(name):
  model, batch = MODELS[name](), _batch()
  params = model.init(jax.random.key(0), batch)
  out, table = model.apply(params, batch)
  assert out.shape == (B, L, 16)
  assert table.shape == (V, 16)
  assert np.all(np.isfinite(out))


@pytest.mark.parametrize("name", ["hstu", "sasrec"])   # one per model class
def test_item_table_is_tied(name):
  """The output side scores with the input embedding table itself: one [V, D] parameter, and the
  gradient of a score reaches that table's row of the scored item, even for an item that is not in
  the input (so no input path leads there), alongside the rows the input used."""
  model, batch = MODELS[name](), _batch()
  params = init_params(model, jax.random.key(2), batch)   # jitted: eager init is slow
  tables = [p for p, x in jax.tree_util.tree_leaves_with_path(params) if x.shape == (V, 16)]
  assert len(tables) == 1, f"expected one item table, found {tables}"
  out, table = jax.jit(model.apply)({"params": params}, batch)
  np.testing.assert_array_equal(table, params["item_embedding"]["table"])
  in_input = set(np.asarray(batch["ids"]).ravel().tolist()) - {0}
  j = next(i for i in range(1, V) if i not in in_input)

  def score(p):
    out, table = model.apply({"params": p}, batch)
    return out[0, 3] @ table[j]

  g = np.asarray(jax.jit(jax.grad(score))(params)["item_embedding"]["table"])
  np.testing.assert_allclose(g[j], out[0, 3], rtol=1e-6)   # d score / d E[j] = the user vector
  assert np.abs(g[np.asarray(batch["ids"])[0, :4]]).sum(axis=1).min() > 0   # the inputs it read
  untouched = [i for i in range(V) if i not in in_input and i != j]
  assert not np.any(g[untouched]), "a gradient reached rows neither read nor scored"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_causal(name):
  """Changing item (and time) at position p never changes outputs at positions < p."""
  model, batch = MODELS[name](), _batch()
  params = model.init(jax.random.key(1), batch)
  out, _ = model.apply(params, batch)
  p = 5
  ids = batch["ids"].at[0, p:].set((batch["ids"][0, p:] + 7) % (V - 1) + 1)
  changed = dict(batch, ids=ids)
  if "times" in batch:
    changed["times"] = batch["times"].at[0, p:].add(12345)
    changed["next_times"] = batch["next_times"].at[0, p:].add(12345)
  out2, _ = model.apply(params, changed)
  np.testing.assert_allclose(out2[0, :p], out[0, :p], rtol=1e-5, atol=1e-6)
  assert not np.allclose(out2[0, p:], out[0, p:])   # the change does reach later positions


def test_time_bias_needs_timestamps():
  model = MODELS["hstu"]()
  with pytest.raises(ValueError, match="timestamps"):
    model.init(jax.random.key(0), _batch(with_times=False))


def test_build_model_rejects_unknown_keys():
  with pytest.raises(ValueError, match="unknown model config key"):
    build_model({"name": "hstu", "dimm": 3}, V)
  with pytest.raises(ValueError, match="unknown model.name"):
    build_model({"name": "bert"}, V)


def test_dropout_only_in_training():
  model = HSTU(num_items=V, dim=16, num_blocks=1, dqk=8, dv=8, max_len=L, attn_norm_len=L, dropout=0.5,
               use_time_bias=False)
  batch = _batch(with_times=False)
  params = model.init(jax.random.key(0), batch)
  a, _ = model.apply(params, batch)
  b, _ = model.apply(params, batch)
  c, _ = model.apply(params, batch, train=True, rngs={"dropout": jax.random.key(3)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


# SASRec's case is slow-marked to keep the default suite under 10 minutes; the attention-level
# tiled == dense tests (tests/test_attention_xla.py) cover its softmax path.
@pytest.mark.parametrize("name", ["hstu", pytest.param("sasrec", marks=pytest.mark.slow)])
def test_attention_tiling_changes_nothing_in_training_mode(name):
  """The tiled causal path (default) and the dense one give the same outputs and gradients, dropout on."""
  make = {"hstu": lambda t: HSTU(num_items=V, dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_len=L,
                                 attn_norm_len=L + 3, dropout=0.2, attention_tiling=t),
          "sasrec": lambda t: SASRec(num_items=V, dim=16, num_blocks=2, num_heads=2, ffn_dim=16, max_len=L,
                                     dropout=0.2, attention_tiling=t)}[name]
  batch = _batch(3)
  params = make(True).init(jax.random.key(2), batch)

  def loss(p, tiled):
    out, table = make(tiled).apply(p, batch, train=True, rngs={"dropout": jax.random.key(7)})
    return jnp.sum(jnp.tanh(out)) + jnp.sum(table ** 2)

  (la, ga), (lb, gb) = (jax.value_and_grad(loss)(params, t) for t in (True, False))
  np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-5)   # float summation order only
  # SASRec's eps-1e-8 layer norms amplify summation-order noise to ~1e-4 relative; a wrong mask is ~1e-1.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5), ga, gb)
