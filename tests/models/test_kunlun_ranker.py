"""Kunlun, DCNv2 and Wukong as rankers: DCNv2's cross layer is its formula, Kunlun with CompSkip off
is its layer-by-layer reference, event types are the history's jagged subsequences, no candidate
sees another (gradients), and each model learns a planted signal in a few jitted steps."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from recjax import losses
from recjax.layers.cross import CrossLayer, CrossNetwork
from recjax.layers.kunlun import GDPA, HierarchicalSeedPooling, WeightGeneration, WindowAttention, valid_mask
from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.wukong import MixtureOfWukongExperts
from recjax.models import build_model, init_params
from recjax.models.kunlun import EventConfig, Kunlun, KunlunConfig, age_buckets
from recjax.models.kunlun_ranker import select_events

T = 3
USER_VOCAB, ITEM_VOCAB = (3, 5, 4), (6, 2)
TINY = {
    "kunlun": dict(name="kunlun", dim=8, events=("all", "click"), event_bits=(-1, 0), event_widths=(8, 4),
                   event_layers=(3, 1), event_windows=(3, 2), event_summary_tokens=(2, 1), width=8, layers=1,
                   window=3, summary_tokens=2, heads=2, kron_rank=1, context_summary_tokens=2,
                   weight_gen_hidden=8, experts=2, expert_hidden=8, head_tokens=2, time_buckets=8, dropout=0.0),
    "dcnv2": dict(name="dcnv2", dim=4, num_cross=2, mlp_dims=(16,), dropout=0.0),
    "wukong": dict(name="wukong", dim=8, num_layers=2, experts=2, expert_hidden=8, mlp_dims=(16,), dropout=0.0),
}


def _model(name, num_items=40, **overrides):
  cfg = dict(TINY[name], num_tasks=T, user_vocab=USER_VOCAB, item_vocab=ITEM_VOCAB, **overrides)
  return build_model(cfg, num_items)


def ranking_batch(n=6, h=10, c=4, num_items=40, seed=0):
  """A random batch of the ranking schema (tasks/ranking.py), histories of mixed lengths."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(0, h + 1, n)
  lengths[0] = h
  times = np.sort(rng.integers(0, 10 ** 6, (n, h)), axis=1)
  return {
      "hist_ids": jnp.asarray(rng.integers(1, num_items, (n, h))), "hist_actions": jnp.asarray(rng.integers(0, 256, (n, h))),
      "hist_watch": jnp.asarray(rng.integers(0, 9, (n, h))), "hist_tab": jnp.asarray(rng.integers(0, 4, (n, h))),
      "hist_times": jnp.asarray(times), "hist_lengths": jnp.asarray(lengths),
      "hist_feats": jnp.asarray(rng.integers(0, 2, (n, h, len(ITEM_VOCAB)))),
      "user_feats": jnp.asarray(rng.integers(0, 3, (n, len(USER_VOCAB)))),
      "request_times": jnp.asarray(times[:, -1] + 100),
      "cand_ids": jnp.asarray(rng.integers(1, num_items, (n, c))), "cand_tab": jnp.asarray(rng.integers(0, 4, (n, c))),
      "cand_feats": jnp.asarray(rng.integers(0, 2, (n, c, len(ITEM_VOCAB)))),
      "cand_mask": jnp.ones((n, c), jnp.float32),
  }


def test_cross_layer_equals_its_formula():
  rng = np.random.default_rng(0)
  x0, x = jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32), jnp.asarray(rng.normal(size=(3, 5, 7)), jnp.float32)
  params = jax.jit(CrossLayer().init)(jax.random.key(1), x0, x)
  params = jax.tree.map(lambda w: w + 0.1, params)              # a non-zero bias, so b is checked too
  got = jax.jit(CrossLayer().apply)(params, x0, x)
  w, b = (np.asarray(params["params"]["dense"][k], np.float64) for k in ("kernel", "bias"))
  x0n, xn = np.asarray(x0, np.float64), np.asarray(x, np.float64)
  want = x0n * (np.einsum("...i,ij->...j", xn, w) + b) + xn        # x0 ⊙ (W x + b) + x
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  net = CrossNetwork(2)
  p = jax.jit(net.init)(jax.random.key(2), x0)["params"]
  ws = [(np.asarray(p[f"cross_{i}"]["dense"]["kernel"], np.float64), np.asarray(p[f"cross_{i}"]["dense"]["bias"]))
        for i in range(2)]
  x1 = x0n * (x0n @ ws[0][0] + ws[0][1]) + x0n
  x2 = x0n * (x1 @ ws[1][0] + ws[1][1]) + x1
  np.testing.assert_allclose(jax.jit(net.apply)({"params": p}, x0), x2, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="same shape"):
    CrossLayer().init(jax.random.key(1), x0, x[..., :3])


def test_select_events_left_aligns_each_types_subsequence():
  rng = np.random.default_rng(3)
  bits = rng.integers(0, 8, (5, 9))
  lengths = np.array([9, 4, 0, 7, 1])
  valid = np.arange(9)[None] < lengths[:, None]
  for bit in (-1, 0, 2):
    order, got_len = select_events(jnp.asarray(bits), jnp.asarray(valid), bit)
    for r in range(5):
      want = [j for j in range(lengths[r]) if bit < 0 or (bits[r, j] >> bit) & 1]
      assert int(got_len[r]) == len(want)
      assert np.asarray(order[r, :len(want)]).tolist() == want           # oldest first, in time order


@pytest.mark.parametrize("name", [pytest.param("kunlun", marks=pytest.mark.slow), "dcnv2",
                                  pytest.param("wukong", marks=pytest.mark.slow)])
def test_no_candidate_sees_another(name):
  """d logits[:, c] / d candidate tokens[:, c'] is zero for c' != c and not for c' = c."""
  model = _model(name)
  batch = ranking_batch()
  variables = jax.jit(lambda k: model.init(k, batch))(jax.random.key(0))
  params, pert = variables["params"], variables["perturbations"]

  @jax.jit
  def grads(pert):
    return jax.jacrev(lambda pt: model.apply({"params": params, "perturbations": pt}, batch)["logits"].sum((0, 2)))(
        pert)["candidates"]

  g_CNCXD = np.asarray(grads(pert))     # [C (output candidate), N, C (input candidate), X, D]
  c = g_CNCXD.shape[0]
  for out in range(c):
    for inp in range(c):
      size = np.abs(g_CNCXD[out, :, inp]).max()
      assert (size > 0) if out == inp else (size == 0), (out, inp, size)


def _layer_by_layer(cfg: KunlunConfig, p: dict, batch: dict) -> jax.Array:
  """Kunlun with CompSkip off from its module docstring, one layer module at a time."""
  ap = lambda mod, name, *a: mod.apply({"params": p[name]}, *a)   # noqa: E731
  d = cfg.width
  item = p["item_embed"]["embedding"]
  x = p["context_embed"]["embedding"][batch["context_ids"]] + p["field_embed"]
  seqs, lens, summ = {}, {}, {}
  for e in cfg.events:
    ev = batch["events"][e.name]
    ages = age_buckets(ev["times"], ev["lengths"], cfg.time_buckets, None)
    s = ap(nn_dense(e.width), f"{e.name}_in", item[ev["ids"]]) + p[f"{e.name}_age"]["embedding"][ages]
    seqs[e.name], lens[e.name] = s * valid_mask(ev["lengths"], s.shape[1]), ev["lengths"]
  for l in range(cfg.num_layers):
    xsum = ap(WeightGeneration(cfg.context_summary_tokens, cfg.weight_gen_hidden), f"weight_gen_{l}", x)
    for e in cfg.events:
      if l >= e.layers:
        continue
      ctx = ap(nn_dense(e.width), f"{e.name}_ctx_{l}", xsum)
      s = ap(GDPA(e.heads, float(seqs[e.name].shape[1])), f"{e.name}_gdpa_{l}", seqs[e.name], lens[e.name], ctx)
      s = ap(WindowAttention(e.heads, e.window), f"{e.name}_window_{l}", s, lens[e.name])
      h = ap(HierarchicalSeedPooling(e.num_seeds, e.summary_tokens, e.heads, e.kron_rank), f"{e.name}_hsp_{l}",
             s, lens[e.name])
      summ[e.name], seqs[e.name] = ap(nn_dense(d), f"{e.name}_summary_proj_{l}", h), s
    mix = jnp.concatenate([xsum] + [summ[e.name] for e in cfg.events], axis=1)
    x = layer_norm_no_affine(x + ap(MixtureOfWukongExperts(cfg.context_fields, cfg.experts, cfg.expert_hidden),
                                    f"interaction_{l}", mix))
  ctx = jnp.concatenate([x] + [summ[e.name] for e in cfg.events], axis=1)
  b, n = batch["candidates"].shape
  out = ap(MixtureOfWukongExperts(cfg.head_tokens, cfg.experts, cfg.expert_hidden), "head", ctx,
           item[batch["candidates"]][:, :, None])
  return ap(nn_dense(cfg.num_tasks), "logits", out.reshape(b, n, -1))


def nn_dense(width):
  import flax.linen as nn   # pylint: disable=import-outside-toplevel
  return nn.Dense(width)


@pytest.mark.slow   # ≈ 1 minute on the shared 2-core box: two Kunlun programs compile
def test_kunlun_with_compskip_off_equals_its_layer_by_layer_reference():
  cfg = KunlunConfig(
      events=(EventConfig("click", width=8, heads=2, summary_tokens=2, layers=2, window=3),
              EventConfig("view", width=4, heads=1, summary_tokens=1, seeds=2, layers=1, window=2)),
      item_vocab_size=30, context_vocab_size=20, context_fields=2, num_tasks=2, width=8,
      context_summary_tokens=2, weight_gen_hidden=8, experts=2, expert_hidden=8, head_tokens=2, compskip=False)
  rng = np.random.default_rng(5)

  def ev(lens, l):
    return {"ids": jnp.asarray(rng.integers(1, 30, (2, l))), "lengths": jnp.asarray(lens),
            "times": jnp.asarray(np.sort(rng.integers(0, 1000, (2, l)), axis=1))}

  batch = {"context_ids": jnp.asarray(rng.integers(0, 20, (2, 2))), "candidates": jnp.asarray(rng.integers(1, 30, (2, 3))),
           "events": {"click": ev([6, 3], 6), "view": ev([2, 4], 4)}}
  model = Kunlun(cfg)
  p = jax.jit(model.init)(jax.random.key(0), batch)["params"]
  assert {"click_gdpa_1", "click_window_0", "click_window_1", "click_hsp_1"} <= set(p)   # all blocks, every layer
  got = jax.jit(model.apply)({"params": p}, batch)
  want = jax.jit(lambda pp: _layer_by_layer(cfg, pp, batch))(p)
  assert got.shape == (2, 3, 2)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  skip = jax.jit(Kunlun(dataclasses.replace(cfg, compskip=True, events=(
      dataclasses.replace(cfg.events[0], layers=1), cfg.events[1]))).apply)
  assert not np.allclose(skip({"params": p}, batch), got)           # the reference is not vacuous


def planted_batch(name, n=16, c=4, seed=0):
  """Labels planted on the candidate: task t is bit t of the candidate id (with noise-free labels)."""
  batch = ranking_batch(n=n, c=c, seed=seed)
  labels = (np.asarray(batch["cand_ids"])[..., None] >> np.arange(T)) & 1
  return batch, jnp.asarray(labels, jnp.float32)


def _learns(name, steps=15, **overrides):
  model = _model(name, **overrides)
  batch, labels = planted_batch(name)
  params = init_params(model, jax.random.key(1), batch)
  opt = optax.adam(1e-2)
  state = opt.init(params)

  def loss_fn(p):
    logits = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(2)})["logits"]
    return losses.multitask_bce_loss(logits.reshape(-1, T), labels.reshape(-1, T), batch["cand_mask"].reshape(-1),
                                     [1.0] * T)[0]

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, s = opt.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  seen = []
  for _ in range(steps):
    params, state, loss = step(params, state)
    seen.append(float(loss))
  assert seen[-1] < 0.8 * seen[0], seen


@pytest.mark.parametrize("name", ["dcnv2", pytest.param("wukong", marks=pytest.mark.slow)])
def test_baselines_learn_a_planted_signal(name):
  _learns(name)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"compskip": False, "window": 0, "pooling": "pma", "experts": 1,
                                            "event_personalisation": False}])
def test_kunlun_learns_a_planted_signal(overrides):
  # The second case flips every switch at once: each ablation of the study is a config override.
  if not overrides.get("compskip", True):
    overrides = dict(overrides, layers=2)        # CompSkip off takes any layer count
  _learns("kunlun", steps=30, **overrides)   # one expert, PMA: fewer weights, so more steps than the baselines


def test_bad_kunlun_settings_name_the_field():
  batch = ranking_batch()
  with pytest.raises(ValueError, match="event_widths has 1 entries"):
    _model("kunlun", event_widths=(8,)).init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match="event_bits"):
    _model("kunlun", event_bits=(-1,)).init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match="pooling"):
    _model("kunlun", pooling="mean").init(jax.random.key(0), batch)


def test_shared_capacity_ignores_per_type_lists_and_no_user_features_makes_no_empty_parameter():
  batch = ranking_batch()
  # Personalisation off: the per-type lists (3 entries) do not have to match a single event type.
  one_type = _model("kunlun", events=("all",), event_bits=(-1,), event_personalisation=False,
                    event_widths=(8, 8, 8), event_layers=(1, 1, 1))
  # eval_shape: the parameter tree without compiling anything (only shapes are checked here)
  assert "all_in" in jax.eval_shape(one_type.init, jax.random.key(0), batch)["params"]
  # No user features (ranking.context off): no zero-size field embedding, which orbax cannot save.
  no_ctx = build_model(dict(TINY["kunlun"], num_tasks=T, user_vocab=(), item_vocab=ITEM_VOCAB), 40)
  params = jax.eval_shape(no_ctx.init, jax.random.key(0), dict(batch, user_feats=batch["user_feats"][:, :0]))["params"]
  assert "field_embed" not in params
  assert all(np.prod(x.shape) > 0 for x in jax.tree.leaves(params))


@pytest.mark.slow   # ≈ 1 minute each on the shared box
@pytest.mark.parametrize("config", ["kunlun_rank_synthetic", "dcnv2_rank_synthetic", "wukong_rank_synthetic",
                                    "interformer_lite_rank_synthetic"])
def test_quick_configs_run_end_to_end(tmp_path, config):
  import importlib   # pylint: disable=import-outside-toplevel
  from recjax.train import loop   # pylint: disable=import-outside-toplevel
  c = importlib.import_module(f"configs.{config}").get_config("quick")
  summary = loop.train_and_evaluate(c, str(tmp_path / "w"))
  mean = summary["metrics"]["test"]["mean"]
  assert np.isfinite(mean["ne"]) and 0 < mean["oracle_ne"] < 1
  assert summary["flops"][0]["flops_per_example"] > 0 and 0 < summary["steps"] <= c.train.max_steps
  with pytest.raises(ValueError, match="unknown config argument"):
    importlib.import_module(f"configs.{config}").get_config("quik")


def _resolved_kunlun(arg):
  """The KunlunConfig the synthetic config's argument `arg` builds (26 user fields)."""
  from configs import kunlun_rank_synthetic   # pylint: disable=import-outside-toplevel
  c = kunlun_rank_synthetic.get_config(arg)
  model = build_model(dict(c.model.to_dict(), num_tasks=8, user_vocab=(2,) * 26), num_items=40)
  return c, model.kunlun_config(26)


def test_ablation_configs_remove_exactly_one_component():
  # A switch can be shadowed (window by event_windows under personalisation): check the model each
  # ablation row really builds, against the default with only that component changed.
  _, full = _resolved_kunlun(None)
  assert [e.window for e in full.events] == [8, 8, 8] and full.experts == 2
  shared = dict(width=32, layers=3, window=8, summary_tokens=4)
  expected = {
      "no_compskip": dataclasses.replace(full, compskip=False),
      "no_window": dataclasses.replace(full, events=tuple(dataclasses.replace(e, window=None) for e in full.events)),
      "no_hsp": dataclasses.replace(full, pooling="pma"),
      "no_moe": dataclasses.replace(full, experts=1),
      "no_event_personalisation": dataclasses.replace(
          full, events=tuple(dataclasses.replace(e, **shared) for e in full.events)),
      "no_gdpa": dataclasses.replace(full, sequence_ffn="pffn"),
      "no_sumkron": dataclasses.replace(full, hsp_compress="token_linear"),
  }
  for arg, want in expected.items():
    c, got = _resolved_kunlun(arg)
    assert got == want != full, arg
    assert c.name == f"kunlun_rank_synthetic_{arg}"
    quick, _ = _resolved_kunlun(f"{arg},quick")
    assert quick.name == c.name and quick.train.max_steps == 18
  for bad in ("no_attention", "no_hsp,no_moe"):
    with pytest.raises(ValueError, match="unknown config argument"):
      _resolved_kunlun(bad)
