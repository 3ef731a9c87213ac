"""TIGER: shapes, decoder causality, encoder padding invariance, teacher forcing = step-by-step
decoding, trie-constrained beam search = brute-force scoring of every catalogue SID, the next-SID
loss against a numpy reference, and a few training steps that lower the loss."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax import losses
from recjax.models.tiger import TIGER, BeamScorer, decode_context
from recjax.semantic_ids import beam_search
from recjax.semantic_ids.trie import build_trie

K, L, H, B = 4, 3, 5, 3
USERS = 7


def make_model(**kw):
  cfg = dict(max_history=H, dim=16, num_heads=2, head_dim=8, ffn_dim=32, num_encoder_layers=2,
             num_decoder_layers=2, dropout=0.0, num_user_tokens=USERS)
  cfg.update(kw)
  return TIGER(K, L, **cfg)


def make_batch(seed=0, b=B, h=H, lengths=(1, 3, 5)):
  rng = np.random.default_rng(seed)
  return {"history_codes": jnp.asarray(rng.integers(0, K, (b, h, L)), jnp.int32),
          "history_lengths": jnp.asarray(lengths[:b], jnp.int32),
          "target_codes": jnp.asarray(rng.integers(0, K, (b, L)), jnp.int32),
          "user_ids": jnp.asarray(rng.integers(0, 1000, b), jnp.int32)}


@pytest.fixture(scope="module")
def setup():
  model = make_model()
  params = jax.jit(lambda k, b: model.init({"params": k}, b)["params"])(jax.random.PRNGKey(0), make_batch())
  # Perturb the RMSNorm scales away from 1 so that every parameter matters in the checks.
  params = jax.tree.map(lambda p: p * (1 + 0.3 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape)), params)
  apply = jax.jit(lambda p, b: model.apply({"params": p}, b))
  return model, params, apply


def encode(model, params, batch):
  return jax.jit(lambda p, b: model.apply({"params": p}, b, method=TIGER.encode))(params, batch)


def test_shapes_and_validation(setup):
  model, params, apply = setup
  assert apply(params, make_batch()).shape == (B, L, K)
  mem, mem_len = encode(model, params, make_batch())
  assert mem.shape == (B, 1 + H * L, 16)
  np.testing.assert_array_equal(mem_len, 1 + np.array([1, 3, 5]) * L)
  np.testing.assert_array_equal(np.asarray(mem)[0, 1 + L:], 0.0)             # padding rows are zero
  bad = dict(make_batch(), target_codes=jnp.zeros((B, L + 1), jnp.int32))
  with pytest.raises(ValueError, match="target_codes must be"):
    model.apply({"params": params}, bad)
  with pytest.raises(ValueError, match="max_history"):
    model.apply({"params": params}, make_batch(h=H + 1))
  with pytest.raises(ValueError, match="user_ids"):
    model.apply({"params": params}, {k: v for k, v in make_batch().items() if k != "user_ids"})
  with pytest.raises(ValueError, match="history_lengths must be"):
    model.apply({"params": params}, dict(make_batch(), history_lengths=jnp.ones((B + 1,), jnp.int32)))


def test_decoder_is_causal(setup):
  """Changing target level j moves the logits of levels > j and leaves levels <= j unchanged."""
  _, params, apply = setup
  batch = make_batch(1)
  base = np.asarray(apply(params, batch))
  for j in range(L - 1):
    changed = dict(batch, target_codes=batch["target_codes"].at[:, j].set((batch["target_codes"][:, j] + 1) % K))
    out = np.asarray(apply(params, changed))
    np.testing.assert_allclose(out[:, :j + 1], base[:, :j + 1], rtol=1e-5, atol=1e-6)
    assert np.abs(out[:, j + 1:] - base[:, j + 1:]).max() > 1e-3
  # The last target code is never an input.
  last = dict(batch, target_codes=batch["target_codes"].at[:, L - 1].set(0))
  np.testing.assert_allclose(apply(params, last), base, rtol=1e-5, atol=1e-6)


def test_encoder_ignores_padding_but_not_history_or_user(setup):
  _, params, apply = setup
  batch = make_batch(2)
  base = np.asarray(apply(params, batch))
  lengths = np.asarray(batch["history_lengths"])
  pad = np.arange(H)[None, :, None] >= lengths[:, None, None]
  garbage = np.where(pad, np.random.default_rng(9).integers(0, K, (B, H, L)), np.asarray(batch["history_codes"]))
  np.testing.assert_allclose(apply(params, dict(batch, history_codes=jnp.asarray(garbage))), base,
                             rtol=1e-5, atol=1e-6)
  narrow = dict(batch, history_codes=batch["history_codes"][:, :4])          # less padding: row 2 is full
  narrow["history_lengths"] = jnp.minimum(batch["history_lengths"], 4)
  np.testing.assert_allclose(np.asarray(apply(params, narrow))[:2], base[:2], rtol=1e-5, atol=1e-6)
  # Real history and the user token do matter; users equal mod U share their token.
  first = dict(batch, history_codes=batch["history_codes"].at[:, 0, 0].add(1) % K)
  assert np.abs(np.asarray(apply(params, first)) - base).max(axis=(1, 2)).min() > 1e-3
  other_user = np.asarray(apply(params, dict(batch, user_ids=batch["user_ids"] + 1)))
  assert np.abs(other_user - base).max(axis=(1, 2)).min() > 1e-3
  np.testing.assert_allclose(apply(params, dict(batch, user_ids=batch["user_ids"] + USERS)), base,
                             rtol=1e-5, atol=1e-6)


def test_teacher_forcing_equals_step_by_step_decoding(setup):
  """The beam-search step_fn, fed the true prefix (and junk past it), gives the teacher-forced logits."""
  model, params, apply = setup
  batch = make_batch(3)
  forced = np.asarray(apply(params, batch))
  mem, mem_len = encode(model, params, batch)
  context = decode_context(mem, mem_len)                                     # one beam per query
  step_fn = jax.jit(BeamScorer(model)(params), static_argnums=2)
  for level in range(L):
    junk = jnp.asarray(np.random.default_rng(level).integers(0, K, (B, L)), jnp.int32)
    tokens = jnp.where(jnp.arange(L) < level, batch["target_codes"], junk)[:, None]
    logits, _ = step_fn({}, tokens, level, context)
    assert logits.shape == (B, 1, K)
    np.testing.assert_allclose(logits[:, 0], forced[:, level], rtol=1e-5, atol=1e-5)


def test_decoding_beams_against_one_memory_row_equals_tiled_memory(setup):
  """`decode(beams=W)`: W prefixes per query against its single memory row (cross-attention keys and
  values projected once) give the logits of decoding each prefix against its own copy of the memory."""
  model, params, _ = setup
  mem, mem_len = encode(model, params, make_batch(6))
  w, t = 4, 2
  prefix_NT = jnp.asarray(np.random.default_rng(0).integers(0, K, (B * w, t)), jnp.int32)
  decode = jax.jit(lambda p, m, ml, x, beams: model.apply({"params": p}, m, ml, x, method=TIGER.decode, beams=beams),
                   static_argnums=4)
  folded = decode(params, mem, mem_len, prefix_NT, w)
  tiled = decode(params, jnp.repeat(mem, w, axis=0), jnp.repeat(mem_len, w), prefix_NT, 1)
  assert folded.shape == (B * w, t + 1, K)
  np.testing.assert_allclose(folded, tiled, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="beams=3"):
    model.apply({"params": params}, mem, mem_len, prefix_NT, method=TIGER.decode, beams=3)


def brute_force_sid_logprobs(apply, params, batch, sids_GL):
  """log p(SID | history) of every catalogue SID, by teacher forcing each one as the target."""
  g = len(sids_GL)
  rep = {k: jnp.repeat(v, g, axis=0) for k, v in batch.items() if k != "target_codes"}
  rep["target_codes"] = jnp.tile(jnp.asarray(sids_GL, jnp.int32), (B, 1))
  logp = np.asarray(jax.nn.log_softmax(apply(params, rep), axis=-1))
  per_level = np.take_along_axis(logp, np.asarray(rep["target_codes"])[..., None], axis=-1)[..., 0]
  return per_level.sum(-1).reshape(B, g)


def catalogue():
  rng = np.random.default_rng(5)
  codes = rng.integers(0, K, (14, L))
  codes[3] = codes[7] = codes[11]                                              # a 3-item collision group
  item_ids = rng.permutation(500)[:14] + 1
  return codes, item_ids, build_trie(codes, K, item_ids)


def test_beam_search_equals_brute_force_and_returns_catalogue_items(setup):
  model, params, apply = setup
  codes, item_ids, trie = catalogue()
  batch = make_batch(4)
  want = brute_force_sid_logprobs(apply, params, batch, trie.sids)           # [B, G]
  mem, mem_len = encode(model, params, batch)
  context = decode_context(mem, mem_len)
  widest = max(max(t.shape[0] for t in trie.next_node), trie.num_leaves)
  full = beam_search.model_beam_search(BeamScorer(model), params, trie.device_arrays(), {}, widest, context)
  g = trie.num_leaves
  order = np.argsort(-want, axis=1, kind="stable")
  np.testing.assert_array_equal(np.asarray(full.groups_BW)[:, :g], order)
  np.testing.assert_allclose(np.asarray(full.scores_BW)[:, :g], np.take_along_axis(want, order, 1),
                             rtol=1e-4, atol=1e-4)
  # A narrow beam: only real, distinct SIDs, each scored with its exact log-probability.
  narrow = beam_search.model_beam_search(BeamScorer(model), params, trie.device_arrays(), {}, 3, context)
  groups = np.asarray(narrow.groups_BW)
  assert np.all(groups >= 0) and all(len(set(r)) == 3 for r in groups.tolist())
  np.testing.assert_allclose(narrow.scores_BW, np.take_along_axis(want, groups, 1), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(narrow.tokens_BWL, trie.sids[groups])
  items = trie.items_of_groups(groups)                                        # [B, 3, largest group]
  assert items.shape == (B, 3, 3)
  catalogue_codes = {int(i): tuple(c) for i, c in zip(item_ids, codes)}
  for b in range(B):
    for w in range(3):
      listed = items[b, w][items[b, w] >= 0]
      assert sorted(listed) == sorted(item_ids[(codes == trie.sids[groups[b, w]]).all(1)])
      assert all(catalogue_codes[int(i)] == tuple(trie.sids[groups[b, w]]) for i in listed)
  np.testing.assert_array_equal(trie.items_of_groups(np.array([-1])), -1)


TRACES = []


@dataclasses.dataclass(frozen=True)
class CountingScorer(BeamScorer):
  """BeamScorer that records each time a search is traced (it builds the step_fn only then)."""

  def __call__(self, params):
    TRACES.append(1)
    return super().__call__(params)


def test_beam_search_takes_weights_as_arguments(setup):
  """New weights reuse the compiled search (weights are not baked-in constants) and change its scores."""
  model, params, _ = setup
  _, _, trie = catalogue()
  mem, mem_len = encode(model, params, make_batch(4))
  context = decode_context(mem, mem_len)
  search = lambda p: beam_search.model_beam_search(CountingScorer(model), p, trie.device_arrays(), {}, 2, context)
  a = search(params)
  b = search(jax.tree.map(lambda p: p * 1.1, params))
  assert len(TRACES) == 1
  assert np.abs(np.asarray(a.scores_BW) - np.asarray(b.scores_BW)).max() > 1e-4


def test_next_sid_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(4, L, K)).astype(np.float32) * 3
  target = rng.integers(0, K, (4, L))
  weights = np.array([1.0, 0.0, 2.0, 1.0], np.float32)
  loss, aux = losses.next_sid_loss(jnp.asarray(logits), jnp.asarray(target), jnp.asarray(weights))
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, target[..., None], -1)[..., 0]             # [4, L]
  np.testing.assert_allclose(aux["nll_L"], (weights[:, None] * nll).sum(0) / weights.sum(), rtol=1e-5)
  np.testing.assert_allclose(loss, (weights[:, None] * nll).sum() / (L * weights.sum()), rtol=1e-5)
  hit = logits.argmax(-1) == target
  np.testing.assert_allclose(aux["accuracy_L"], (weights[:, None] * hit).sum(0) / weights.sum(), rtol=1e-6)
  with pytest.raises(ValueError, match="need logits"):
    losses.next_sid_loss(jnp.asarray(logits), jnp.asarray(target[:, :2]))


def test_a_few_training_steps_lower_the_loss():
  """The next item's SID is a function of the last history item's SID: learnable from the encoder."""
  model = make_model(dropout=0.1, num_encoder_layers=1, num_decoder_layers=1)
  rng = np.random.default_rng(6)
  hist = rng.integers(0, K, (32, H, L))
  lengths = rng.integers(1, H + 1, 32)
  last = hist[np.arange(32), lengths - 1]
  batch = {"history_codes": jnp.asarray(hist), "history_lengths": jnp.asarray(lengths),
           "target_codes": jnp.asarray((last[:, ::-1] + 1) % K), "user_ids": jnp.arange(32)}
  params = jax.jit(lambda k: model.init({"params": k}, batch)["params"])(jax.random.PRNGKey(1))
  opt = optax.adam(1e-2)

  def loss_fn(p, rng, train):
    logits = model.apply({"params": p}, batch, train=train, rngs={"dropout": rng} if train else None)
    return losses.next_sid_loss(logits, batch["target_codes"])[0]

  @jax.jit
  def train(p, s):
    def body(carry, rng):
      p, s = carry
      g = jax.grad(loss_fn)(p, rng, True)
      u, s = opt.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(body, (p, s), jax.random.split(jax.random.PRNGKey(2), 60))[0][0]

  eval_loss = jax.jit(lambda p: loss_fn(p, None, False))
  before, after = float(eval_loss(params)), float(eval_loss(train(params, opt.init(params))))
  assert np.isfinite(after) and after < 0.5 * before, (before, after)
