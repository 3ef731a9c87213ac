"""The Kunlun model: rank-aware decomposition is exact, CompSkip reuses the cached summary and
cuts FLOPs, event types get their own capacity, padding never reaches the logits."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.models.kunlun import EventConfig, Kunlun, KunlunConfig, repeat_per_candidate

CONFIG = KunlunConfig(
    events=(EventConfig("click", width=16, heads=2, summary_tokens=2, layers=3, window=3),
            EventConfig("impression", width=8, heads=1, summary_tokens=1, seeds=3, layers=1, window=2)),
    item_vocab_size=60, context_vocab_size=30, context_fields=4, num_tasks=2, width=16,
    context_summary_tokens=3, weight_gen_hidden=16, experts=2, expert_hidden=16, head_tokens=2)


def make_batch(b=3, n=5, seed=0, lengths=((10, 6, 0), (7, 7, 3))):
  rng = np.random.default_rng(seed)

  def events(lens, l):
    times = np.sort(rng.integers(0, 10_000, (b, l)), axis=1)
    return {"ids": jnp.asarray(rng.integers(1, 60, (b, l))), "times": jnp.asarray(times),
            "lengths": jnp.asarray(lens)}

  return {"context_ids": jnp.asarray(rng.integers(0, 30, (b, 4))),
          "events": {"click": events(lengths[0], 10), "impression": events(lengths[1], 7)},
          "candidates": jnp.asarray(rng.integers(1, 60, (b, n)))}


@pytest.fixture(scope="module")
def model_and_params():
  model = Kunlun(CONFIG)
  return model, jax.jit(model.init)(jax.random.key(0), make_batch())


def test_decomposed_scores_equal_plain_scores(model_and_params):
  model, params = model_and_params
  batch = make_batch(seed=1)
  apply = jax.jit(model.apply, static_argnames="decomposed")
  plain = apply(params, batch)
  decomposed = apply(params, batch, decomposed=True)
  per_row = apply(params, repeat_per_candidate(batch)).reshape(plain.shape)   # context copied N times
  assert plain.shape == (3, 5, 2)
  assert float(jnp.abs(decomposed - plain).max()) <= 1e-5
  assert float(jnp.abs(per_row - plain).max()) <= 1e-5
  assert float(jnp.std(plain[:, :, 0])) > 0.0                  # candidates get different scores


def test_padding_never_reaches_the_logits(model_and_params):
  model, params = model_and_params
  batch = make_batch(seed=2)
  dirty = jax.tree_util.tree_map(lambda x: x, batch)
  for name, ev in batch["events"].items():
    l = ev["ids"].shape[1]
    pad = np.arange(l)[None, :] >= np.asarray(ev["lengths"])[:, None]
    dirty["events"][name] = dict(ev, ids=jnp.where(pad, 59, ev["ids"]), times=jnp.where(pad, -5, ev["times"]))
  apply = jax.jit(model.apply)
  np.testing.assert_array_equal(apply(params, batch), apply(params, dirty))


@pytest.mark.slow   # keeps the default suite under 10 minutes
def test_compskip_reuses_the_cached_summary_and_cuts_flops(model_and_params):
  model, params = model_and_params
  names = set(params["params"])
  # Event-level capacity: click runs 3 layers, impression 1; odd layers have no GDPA and no HSP,
  # even layers no window block.
  assert {"click_hsp_0", "click_hsp_2", "impression_hsp_0", "click_window_1"} <= names
  assert not {"click_hsp_1", "click_gdpa_1", "impression_hsp_1", "impression_window_1", "click_window_0",
              "click_window_2", "impression_gdpa_2"} & names
  assert params["params"]["click_in"]["kernel"].shape == (16, 16)
  assert params["params"]["impression_in"]["kernel"].shape == (16, 8)

  batch = make_batch(seed=3)
  _, state = jax.jit(lambda p, b: model.apply(p, b, mutable="intermediates"))(params, batch)
  inter = state["intermediates"]
  np.testing.assert_array_equal(inter["click_summary_1"][0], inter["click_summary_0"][0])
  assert "impression_summary_1" not in inter                   # impression stopped after layer 0
  assert float(jnp.abs(inter["click_summary_2"][0] - inter["click_summary_1"][0]).max()) > 0.0

  full = Kunlun(dataclasses.replace(CONFIG, compskip=False))
  full_params = jax.jit(full.init)(jax.random.key(0), batch)
  assert {"click_hsp_1", "click_gdpa_1", "click_window_0"} <= set(full_params["params"])

  def flops(m, p):
    cost = jax.jit(m.apply).lower(p, batch).cost_analysis()   # HLO count; no compile needed
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]

  assert flops(model, params) < flops(full, full_params)


def test_bad_batches_name_the_field():
  model = Kunlun(CONFIG)
  batch = make_batch()
  with pytest.raises(ValueError, match="impression"):
    model.init(jax.random.key(0), dict(batch, events={"click": batch["events"]["click"]}))
  with pytest.raises(ValueError, match="context_ids"):
    model.init(jax.random.key(0), dict(batch, context_ids=batch["context_ids"][:, :2]))
  bad = dict(batch["events"]["click"], lengths=jnp.zeros((2,), jnp.int32))
  with pytest.raises(ValueError, match=r"events\['click'\]"):
    model.init(jax.random.key(0), dict(batch, events=dict(batch["events"], click=bad)))
  with pytest.raises(ValueError, match="layers must be odd"):
    dataclasses.replace(CONFIG, events=(EventConfig("a", layers=2),))
  with pytest.raises(ValueError, match="unique"):
    KunlunConfig(events=(EventConfig("a"), EventConfig("a")), item_vocab_size=2, context_vocab_size=2,
                 context_fields=2)
