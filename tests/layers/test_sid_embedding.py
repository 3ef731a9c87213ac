"""SID item embeddings: the layer against a per-item brute force, and HSTU / SASRec with the SID
table (it trains; the scores are dot products with the tied table)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax.layers.sid_embedding import SIDEmbedding, SIDTokens, item_embedding_layer
from recjax.models.hstu import HSTU
from recjax.models.sasrec import SASRec
from recjax.tasks import retrieval

V, D = 23, 8
SIZES = (5, 4, 3)


def _tokens(seed=0):
  rng = np.random.default_rng(seed)
  return SIDTokens(np.stack([rng.integers(0, n, V) for n in SIZES], 1), SIZES, f"test{seed}")


@pytest.mark.parametrize("combine,residual", [("sum", 0), ("sum", 7), ("concat", 0)])
def test_layer_equals_brute_force_per_item_rows(combine, residual):
  tokens = _tokens()
  layer = SIDEmbedding(V, D, tokens, combine, residual)
  ids = jnp.asarray([[3, 0, 22], [5, 5, 1]], jnp.int32)
  params = layer.init(jax.random.key(0), ids)["params"]
  got = np.asarray(layer.apply({"params": params}, ids))
  table = np.asarray(layer.apply({"params": params}, method=SIDEmbedding.item_table))
  p = jax.tree.map(np.asarray, params)
  want = np.zeros((V, D))
  for v in range(V):
    rows = [p[f"level_{l}"][tokens.tokens_VL[v, l]] for l in range(len(SIZES))]
    want[v] = np.sum(rows, 0) if combine == "sum" else np.concatenate(rows) @ p["project"]["kernel"]
    if residual:
      want[v] += p["residual"][(v * 2654435761) % 2**32 % residual]
  np.testing.assert_allclose(table, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got, want[np.asarray(ids)], rtol=1e-5, atol=1e-7)
  n_rows = sum(SIZES) + residual
  assert sum(x.size for x in jax.tree.leaves(params)) == n_rows * D + (len(SIZES) * D * D if combine == "concat" else 0)


def test_tokens_and_layer_reject_bad_input():
  with pytest.raises(ValueError, match="item 2 has level-1 token 4 outside 0..3"):
    SIDTokens(np.array([[0, 0], [1, 3], [2, 4]]), (3, 4), "x")
  with pytest.raises(ValueError, match=r"must be \[V, L\] with L = 3"):
    SIDTokens(np.zeros((4, 2), np.int32), (3, 4, 5), "x")
  with pytest.raises(ValueError, match="SID tokens cover 23 items, the model has 24"):
    SIDEmbedding(24, D, _tokens()).init(jax.random.key(0), jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match="needs SID tokens"):
    item_embedding_layer("sid", V, D)
  with pytest.raises(ValueError, match="model.item_table must be one of"):
    item_embedding_layer("hash", V, D)
  assert _tokens(0) == _tokens(0) and hash(_tokens(0)) == hash(_tokens(0)) and _tokens(0) != _tokens(1)


MODELS = {
    "hstu": lambda **kw: HSTU(num_items=V, dim=D, num_blocks=1, num_heads=1, dqk=D, dv=D, max_len=6,
                              attn_norm_len=6, dropout=0.0, use_time_bias=False, **kw),
    "sasrec": lambda **kw: SASRec(num_items=V, dim=D, num_blocks=1, num_heads=1, ffn_dim=D, max_len=6,
                                  dropout=0.0, **kw),
}


@pytest.mark.slow   # ≈ 10 s each on 2 cores (two compiles of a model and its gradient)
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_with_sid_table_trains_and_scores_with_the_tied_table(name):
  tokens = _tokens()
  model = MODELS[name](item_table="sid", sid_tokens=tokens)
  rng = np.random.default_rng(1)
  ids = rng.integers(1, V, (4, 6)).astype(np.int32)
  lengths = np.array([6, 4, 2, 5], np.int32)
  ids[np.arange(6)[None] >= lengths[:, None]] = 0
  labels = np.where(ids > 0, (ids % (V - 1)) + 1, 0).astype(np.int32)   # a learnable next item
  batch = {"ids": jnp.asarray(ids), "lengths": jnp.asarray(lengths)}
  params = model.init(jax.random.key(0), batch)["params"]
  assert "table" not in params["item_embedding"] and "level_2" in params["item_embedding"]

  @jax.jit
  def loss(p):
    out, table = model.apply({"params": p}, batch)
    logits = out @ table.T
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(labels))
    return jnp.sum(ce * (ids > 0)) / np.sum(ids > 0)

  tx = optax.adam(1e-2)
  opt, first = tx.init(params), float(loss(params))

  @jax.jit
  def step(p, o):
    updates, o = tx.update(jax.grad(loss)(p), o, p)
    return optax.apply_updates(p, updates), o

  for _ in range(30):
    params, opt = step(params, opt)
  assert float(loss(params)) < 0.7 * first
  # The returned table is the SID layer's vectors, and the evaluation ranks each target by its
  # cosine with the output: brute force over the catalogue from that table.
  out, table = jax.jit(lambda p: model.apply({"params": p}, batch))(params)
  layer_table = SIDEmbedding(V, D, tokens).apply({"params": params["item_embedding"]}, method=SIDEmbedding.item_table)
  np.testing.assert_allclose(table, layer_table, rtol=1e-6)
  catalogue = np.arange(1, V)
  targets = np.array([3, 9, 22, 1], np.int32)
  ranks = retrieval.make_eval_step(model, catalogue, V, exclude_history=False, item_chunk=8)(
      params, {**batch, "targets": jnp.asarray(targets)})
  out, table = np.asarray(out, np.float64), np.asarray(table, np.float64)
  for b in range(4):
    u = out[b, lengths[b] - 1]
    cos = [u @ table[v] / np.linalg.norm(table[v]) for v in catalogue]
    want = 1 + sum(c > u @ table[targets[b]] / np.linalg.norm(table[targets[b]]) + 1e-9 for c in cos)
    assert int(ranks[b]) == want
