"""Rankers (HSTU, DLRM, DIN): shapes, target isolation and leakage, and a jitted training smoke."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax import losses
from recjax.data import kuairand as kr
from recjax.data import ranking as rk
from recjax.data import synthetic as sy
from recjax.models import init_params
from recjax.models.din import DIN
from recjax.models.dlrm import DLRM
from recjax.models.hstu_ranker import HSTURanker, merge_history_and_candidates

WORLD = sy.WorldConfig(num_users=60, num_items=50, num_topics=5, mean_seq_len=30, max_seq_len=150,
                       num_tabs=2, seed=4)
SPLIT = rk.RankingSplit(mode="last_k", history_len=16, request_size=4, test_k=8, valid_k=0)
T = len(rk.TASK_SETS["kuairand"])


@pytest.fixture(scope="module")
def world():
  return sy.build_world(WORLD)


@pytest.fixture(scope="module")
def data(tmp_path_factory, world):
  out = sy.write_world(world, tmp_path_factory.mktemp("ranker_world"))
  seqs = kr.load_kuairand(out, variant="synth", logs="all")
  return out, seqs, rk.kuairand_context(out, "synth", seqs)


def _models(ctx):
  kw = dict(num_items=WORLD.num_items + 1, num_tasks=T, user_vocab=ctx.user_vocab, item_vocab=ctx.item_vocab,
            dim=16, dropout=0.0)
  return {
      "hstu": HSTURanker(**kw, num_blocks=2, num_heads=2, dqk=8, dv=8, max_history=16, attn_norm_len=20,
                         watch_head=True),
      "hstu_ctx": HSTURanker(**kw, num_blocks=2, num_heads=2, dqk=8, dv=8, max_history=16, attn_norm_len=20,
                             watch_head=True, user_context="tokens"),
      "dlrm": DLRM(**kw, mlp_dims=(32, 16), watch_head=True),
      "din": DIN(**kw, attention_dims=(16, 8), mlp_dims=(32, 16), watch_head=True),
  }


def _inputs(arrays, rows=slice(None)):
  return {k: jnp.asarray(arrays[k][rows]) for k in rk.INPUT_FIELDS if k not in ("user_ids",)}


@pytest.fixture(scope="module")
def setup(data):
  _, seqs, ctx = data
  ex = rk.ranking_examples(seqs, SPLIT, "test", context=ctx)
  batch = _inputs(ex.arrays, slice(0, 12))
  models = _models(ctx)
  params = {name: {"params": init_params(m, jax.random.key(0), batch)} for name, m in models.items()}
  # Jitted forward passes: eager dispatch of every op costs seconds per call on a busy 2-core box.
  applies = {name: jax.jit(m.apply) for name, m in models.items()}
  return ex, applies, params


def test_merge_places_candidates_after_each_history():
  hist = jnp.array([[1, 2, 3], [4, 0, 0], [0, 0, 0]])
  cand = jnp.array([[7, 8], [9, 10], [11, 12]])
  out = merge_history_and_candidates(hist, cand, jnp.array([3, 1, 0]))
  assert out.tolist() == [[1, 2, 3, 7, 8], [4, 9, 10, 0, 0], [11, 12, 0, 0, 0]]


@pytest.mark.parametrize("name", ["hstu", "dlrm", "din"])
def test_shapes(setup, name):
  ex, models, params = setup
  out = models[name](params[name], _inputs(ex.arrays, slice(0, 12)))
  assert out["logits"].shape == (12, SPLIT.request_size, T)
  assert out["watch_ratio"].shape == (12, SPLIT.request_size)
  assert np.all(np.isfinite(out["logits"]))


@pytest.mark.parametrize("name", ["hstu", "hstu_ctx", "dlrm", "din"])
def test_candidates_are_isolated(setup, name):
  """Changing candidate 0's item (and tab and features) changes no other candidate's prediction,
  and candidates scored one at a time get the same predictions as scored together."""
  ex, models, params = setup
  batch = _inputs(ex.arrays, slice(0, 12))
  full = models[name](params[name], batch)["logits"]
  changed = dict(batch, cand_ids=batch["cand_ids"].at[:, 0].set(batch["cand_ids"][:, 0] % WORLD.num_items + 1),
                 cand_tab=batch["cand_tab"].at[:, 0].set(3 - batch["cand_tab"][:, 0]),
                 cand_feats=batch["cand_feats"].at[:, 0].set(batch["cand_feats"][:, 1]))
  moved = models[name](params[name], changed)["logits"]
  np.testing.assert_allclose(moved[:, 1:], full[:, 1:], rtol=1e-5, atol=1e-6)
  real = np.asarray(batch["cand_mask"][:, 0] > 0)
  assert not np.allclose(moved[real, 0], full[real, 0])          # the change itself does matter
  for k in range(SPLIT.request_size):
    alone = dict(batch, **{f: batch[f][:, k:k + 1] for f in ("cand_ids", "cand_mask", "cand_tab", "cand_feats")})
    np.testing.assert_allclose(models[name](params[name], alone)["logits"][:, 0], full[:, k],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["hstu", "hstu_ctx", "dlrm", "din"])
def test_history_padding_and_future_are_invisible(setup, name):
  """Values in padded history slots never matter."""
  ex, models, params = setup
  batch = _inputs(ex.arrays, slice(0, 12))
  full = models[name](params[name], batch)["logits"]
  pad = np.arange(SPLIT.history_len)[None] >= np.asarray(batch["hist_lengths"])[:, None]
  assert pad.any()
  junk = {f: jnp.where(pad, 3, batch[f]) for f in ("hist_ids", "hist_actions", "hist_watch", "hist_tab")}
  junk["hist_feats"] = jnp.where(pad[..., None], 2, batch["hist_feats"])
  junk["hist_times"] = jnp.where(pad, 10**8, batch["hist_times"])
  np.testing.assert_allclose(models[name](params[name], dict(batch, **junk))["logits"], full,
                             rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["hstu", "hstu_ctx", "dlrm", "din"])
def test_candidate_outcomes_change_no_prediction(data, setup, name):
  """End to end (protocol + model): rewriting the test candidates' feedbacks, play times and own
  timestamps in the event log leaves every prediction of their requests unchanged."""
  _, seqs, ctx = data
  ex, models, params = setup
  rows = np.arange(12)
  ev = ex.arrays["cand_event"][rows]
  victims = ev[ev >= 0]
  extras = dict(seqs.extras, actions=seqs.extras["actions"].copy(), play_time_ms=seqs.extras["play_time_ms"].copy())
  extras["actions"][victims] ^= 0xFF
  extras["play_time_ms"][victims] = extras["play_time_ms"][victims] * 5 + 1000
  times = seqs.timestamps.copy()
  times[ev[:, 1:][ev[:, 1:] >= 0]] += 1   # the later candidates' own times are targets, not inputs
  moved_seqs = dataclasses.replace(seqs, extras=extras, timestamps=times)
  moved = rk.ranking_examples(moved_seqs, SPLIT, "test", context=ctx)
  # Each request's inputs come from events before it; a later request of the same user may see
  # the rewritten events as its (past) history, so compare only the first request of each user.
  first = np.flatnonzero(np.r_[True, ex.arrays["user_index"][rows][1:] != ex.arrays["user_index"][rows][:-1]])
  a = models[name](params[name], _inputs(ex.arrays, rows[first]))
  b = models[name](params[name], _inputs(moved.arrays, rows[first]))
  np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-6, atol=1e-7)
  assert not np.array_equal(ex.arrays["cand_labels"][rows[first]], moved.arrays["cand_labels"][rows[first]])


@pytest.mark.parametrize("name", ["hstu", "dlrm", "din"])
def test_jitted_training_step_lowers_the_loss(data, name):
  """Smoke: a jitted multi-task BCE step (with the watch head) on the generated world learns."""
  _, seqs, ctx = data
  train = rk.ranking_examples(seqs, dataclasses.replace(SPLIT, test_k=2), "train", context=ctx)
  model = _models(ctx)[name]
  if name == "hstu":
    model = model.clone(num_blocks=1)   # one block keeps the compile short; isolation tests use two
  batch = _inputs(train.arrays, slice(0, 32))
  labels = jnp.asarray(train.arrays["cand_labels"][:32], jnp.float32).reshape(-1, T)
  watch = jnp.asarray(train.arrays["cand_watch_ratio"][:32]).reshape(-1)
  mask = jnp.asarray(train.arrays["cand_mask"][:32]).reshape(-1)
  params = init_params(model, jax.random.key(1), batch)
  opt = optax.adam(1e-2)
  state = opt.init(params)

  def loss_fn(p):
    out = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(2)})
    return losses.multitask_bce_loss(out["logits"].reshape(-1, T), labels, mask, [1.0] * T,
                                     watch_pred_N=out["watch_ratio"].reshape(-1), watch_target_N=watch,
                                     watch_weight=0.1)[0]

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  first = None
  for _ in range(15):
    params, state, loss = step(params, state)
    first = loss if first is None else first
  assert float(loss) < 0.8 * float(first), (float(first), float(loss))


def test_hstu_user_context_tokens_are_read_and_validated(setup):
  """With user_context="tokens" the user features are prefix tokens: changing one user's features
  moves that request's predictions only; "sum" and "tokens" share the parameter tree; a wrong
  layout name is rejected."""
  ex, models, params = setup
  batch = _inputs(ex.arrays, slice(0, 12))
  full = models["hstu_ctx"](params["hstu_ctx"], batch)["logits"]
  feats = batch["user_feats"].at[0].set(batch["user_feats"][0] % 2 + 1)
  moved = models["hstu_ctx"](params["hstu_ctx"], dict(batch, user_feats=feats))["logits"]
  assert not np.allclose(moved[0], full[0])
  np.testing.assert_allclose(moved[1:], full[1:], rtol=1e-5, atol=1e-6)
  shapes = lambda p: jax.tree.map(jnp.shape, p)   # noqa: E731
  assert shapes(params["hstu_ctx"]) == shapes(params["hstu"])
  with pytest.raises(ValueError, match="user_context must be 'sum' or 'tokens'"):
    models_bad = HSTURanker(num_items=WORLD.num_items + 1, num_tasks=T, dim=16, user_context="prefix")
    init_params(models_bad, jax.random.key(0), batch)


@pytest.mark.slow   # keeps the default suite under 10 minutes
def test_hstu_ranker_pallas_backend_matches_xla(setup):
  """The target mask (num_targets) and time-only bias through the Pallas kernels (interpret mode
  on CPU): same loss and gradients as the XLA path."""
  ex, _, _ = setup
  batch = _inputs(ex.arrays, slice(0, 4))
  ctx_kw = dict(num_items=WORLD.num_items + 1, num_tasks=T, dim=16, num_blocks=1, num_heads=2, dqk=8, dv=8,
                max_history=16, attn_norm_len=20, dropout=0.0)
  batch = dict(batch, user_feats=batch["user_feats"][:, :0], cand_feats=batch["cand_feats"][..., :0],
               hist_feats=batch["hist_feats"][..., :0])
  xla, pallas = HSTURanker(**ctx_kw, backend="xla"), HSTURanker(**ctx_kw, backend="pallas")
  params = {"params": init_params(xla, jax.random.key(3), batch)}

  def grad(model):
    return jax.jit(jax.value_and_grad(lambda p: jnp.sum(model.apply(p, batch)["logits"] ** 2)))

  la, ga = grad(xla)(params)
  lb, gb = grad(pallas)(params)
  np.testing.assert_allclose(lb, la, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["hstu", "hstu_ctx"])
def test_hstu_ranker_attention_kernel_equals_xla(data, setup, name):
  """The C++ attention kernel (candidates isolated by the targets mask) against the XLA path:
  logits, watch ratio and every parameter gradient."""
  from recjax import native  # pylint: disable=import-outside-toplevel
  if not native.available():
    pytest.skip(f"recjax.native kernels unavailable here: {native.why_unavailable()}")
  ex, _, params = setup
  batch = _inputs(ex.arrays, slice(0, 12))
  model = _models(data[2])[name]
  out = {}
  for impl in ("xla", "native"):
    m = model.clone(attention_impl=impl)

    def loss(p, m=m):
      o = m.apply(p, batch)
      return jnp.sum(jnp.sin(o["logits"])) + jnp.sum(jnp.sin(o["watch_ratio"]))
    out[impl] = jax.jit(jax.value_and_grad(loss))(params[name])
  np.testing.assert_allclose(out["native"][0], out["xla"][0], rtol=1e-5)
  for (path, r), g in zip(jax.tree.leaves_with_path(out["xla"][1]), jax.tree.leaves(out["native"][1])):
    np.testing.assert_allclose(g, r, rtol=2e-4, atol=2e-6, err_msg=jax.tree_util.keystr(path))
