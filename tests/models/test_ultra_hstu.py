"""ULTRA-HSTU ranker: no leak between candidates or from labels, attention truncation keeps exactly
the newest L' events, SLA against the dense mask, remat changes nothing, and a run end to end."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.mask import MaskSpec
from recjax.models import build_model
from recjax.models.ultra_hstu import UltraHSTU, compact_events, interleave

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, H, C, T = 3, 12, 4, 8
LENGTHS = (12, 7, 0)          # a full history, a partial one, an empty (padded) request
USER_VOCAB, ITEM_VOCAB = (4, 5), (3, 3)
NUM_CTX = len(USER_VOCAB)


def _batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  lengths = np.asarray(LENGTHS)
  valid = np.arange(H)[None] < lengths[:, None]
  b = dict(hist_ids=rng.integers(1, 30, (N, H)), hist_actions=rng.integers(0, 256, (N, H)),
           hist_watch=rng.integers(1, 9, (N, H)), hist_tab=rng.integers(1, 4, (N, H)),
           hist_times=np.sort(rng.integers(0, 10**6, (N, H)), axis=1), hist_lengths=lengths,
           hist_feats=rng.integers(0, 3, (N, H, 2)), user_feats=rng.integers(0, 4, (N, 2)),
           request_times=np.full(N, 2 * 10**6), cand_ids=rng.integers(1, 30, (N, C)),
           cand_tab=rng.integers(1, 4, (N, C)), cand_feats=rng.integers(0, 3, (N, C, 2)))
  for k in ("hist_ids", "hist_actions", "hist_watch", "hist_tab", "hist_times"):
    b[k] = np.where(valid, b[k], 0)
  b = {k: jnp.asarray(v, jnp.int32) for k, v in b.items()}
  b["cand_mask"] = jnp.ones((N, C), jnp.float32)
  b["cand_labels"] = jnp.asarray(rng.integers(0, 2, (N, C, T)), jnp.int8)
  b["cand_watch_ratio"] = jnp.asarray(rng.random((N, C)), jnp.float32)
  return b


def _model(**kw) -> UltraHSTU:
  base = dict(num_items=31, num_tasks=T, user_vocab=USER_VOCAB, item_vocab=ITEM_VOCAB, dim=16, num_blocks=2,
              num_heads=2, dqk=8, dv=8, max_history=16, attn_norm_len=20, dropout=0.0, local_window=3,
              global_window=2, sla_block=4, full_layers=1, truncated_len=0)
  base.update(kw)
  return UltraHSTU(**base)


FULL = dict(truncated_len=5, stream_select=(0, 2 | 8), stream_encode=(255, 2 | 8), fusion="concat_mlp")


@pytest.fixture(scope="module")
def variables():
  """One set of variables for every variant: those of the model with all parts (two streams,
  fusion); a variant with fewer parts ignores the rest. Every weight is redrawn N(0, 0.3²) so
  that attention moves the outputs well beyond float noise (at init it hardly does)."""
  model = _model(**FULL)
  # Shapes only (no compile): every value is drawn here.
  v = jax.eval_shape(lambda b: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, b), _batch())
  leaves, tree = jax.tree.flatten(v["params"])
  rng = np.random.default_rng(5)
  params = jax.tree.unflatten(tree, [jnp.asarray(0.3 * rng.standard_normal(x.shape), jnp.float32) for x in leaves])
  return {"params": params, "perturbations": jax.tree.map(lambda x: jnp.zeros(x.shape), v["perturbations"])}


def _logits(model):
  return jax.jit(lambda v, b: model.apply(v, b)["logits"])


def test_compact_events_keeps_order():
  keep = jnp.array([[True, False, True, True], [False, False, False, False]])
  x = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
  lengths, (out,) = compact_events(keep, x)
  assert lengths.tolist() == [3, 0]
  assert out[0, :3].tolist() == [1, 3, 4]


def _perturbations(model) -> dict:
  v = jax.eval_shape(lambda b: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, b), _batch())
  return jax.tree.map(lambda x: jnp.zeros(x.shape), v["perturbations"])


@pytest.mark.parametrize("layout", ["summed", "interleaved"])
def test_no_candidate_reaches_another_and_no_label_is_read(variables, layout):
  """With every feature on (SLA, truncation, two streams fused by concat + MLP), in both token
  layouts: d logit(i) / d token(j) is exactly zero for j != i (and across requests) and non-zero for
  j = i; the targets (labels, watch ratio, mask) are never read: zero gradient, and rewriting them
  changes nothing."""
  model = _model(**FULL, token_layout=layout)
  batch = _batch()
  v = variables
  pert = _perturbations(model)

  def logits_of(tokens_NCD, watch_NC, b):
    out = model.apply({"params": v["params"], "perturbations": dict(pert, candidate_tokens=tokens_NCD)},
                      dict(b, cand_watch_ratio=watch_NC))["logits"]
    return out.sum(-1), out                                        # [N, C], [N, C, T]

  jacobians = jax.jit(jax.jacrev(logits_of, argnums=(0, 1), has_aux=True))
  (jac_tok, jac_watch), full = jacobians(pert["candidate_tokens"], batch["cand_watch_ratio"], batch)
  size = jnp.abs(jac_tok).sum(-1)                                  # [N, C, N, C]
  own = np.einsum("nini->ni", np.asarray(size))
  assert np.all(own > 1e-4), own                                   # the test can see a dependence
  off = np.asarray(size).copy()
  off[np.arange(N)[:, None], np.arange(C)[None, :], np.arange(N)[:, None], np.arange(C)[None, :]] = 0.0
  assert np.all(off == 0.0), np.argwhere(off != 0.0)[:5]
  assert np.all(np.asarray(jac_watch) == 0.0)
  flipped = dict(batch, cand_labels=1 - batch["cand_labels"], cand_mask=jnp.zeros_like(batch["cand_mask"]))
  _, moved = jacobians(pert["candidate_tokens"], batch["cand_watch_ratio"] + 3.0, flipped)
  np.testing.assert_array_equal(moved, full)


def _cut_to_newest(batch: dict, keep: int) -> dict:
  """The batch whose histories are only each row's newest `keep` events (same width)."""
  out = dict(batch)
  lengths = np.asarray(batch["hist_lengths"])
  kept = np.minimum(lengths, keep)
  for k in ("hist_ids", "hist_actions", "hist_watch", "hist_tab", "hist_times", "hist_feats"):
    old = np.asarray(batch[k])
    new = np.zeros_like(old)
    for r in range(N):
      new[r, :kept[r]] = old[r, lengths[r] - kept[r]:lengths[r]]
    out[k] = jnp.asarray(new)
  out["hist_lengths"] = jnp.asarray(kept, jnp.int32)
  return out


def test_truncation_keeps_exactly_the_newest_events(variables):
  """N1 = 0: the model on the whole history equals the model on histories cut to the newest L'
  (and not to L' - 1); N1 = 1: the truncated blocks' input gets gradient from exactly the
  context, the newest L' history tokens and the candidates."""
  batch = _batch(1)
  keep = 5
  model = _model(full_layers=0, truncated_len=keep)
  v = variables
  apply = _logits(model)
  full = apply(v, batch)
  np.testing.assert_allclose(apply(v, _cut_to_newest(batch, keep)), full, rtol=1e-5, atol=1e-6)
  assert not np.allclose(apply(v, _cut_to_newest(batch, keep - 1))[:2], full[:2], atol=1e-4)

  model = _model(full_layers=1, truncated_len=keep)
  name = "stream_0_truncation_input"

  def total(x):
    p = dict(v["perturbations"], **{name: x})
    return model.apply({"params": v["params"], "perturbations": p}, batch)["logits"].sum()

  g = np.abs(np.asarray(jax.jit(jax.grad(total))(v["perturbations"][name]))).sum(-1)   # [N, L]
  for r, n in enumerate(LENGTHS):
    first_kept = NUM_CTX + max(n - keep, 0)
    assert np.all(g[r, NUM_CTX:first_kept] == 0.0), (r, g[r])      # older history: cut
    assert np.all(g[r, first_kept:NUM_CTX + n + C] > 0.0), (r, g[r])   # newest L', candidates
    assert np.all(g[r, :NUM_CTX] > 0.0)                               # context
    assert np.all(g[r, NUM_CTX + n + C:] == 0.0)                      # padding


def test_truncation_wider_than_the_batch_changes_nothing_and_costs_nothing(variables):
  """L' >= the batch's history width: nothing to cut, so the same logits as no truncation and the
  same compiled FLOPs (the remaining blocks keep the batch's width instead of padding it to L')."""
  batch = _batch(4)
  v = {"params": variables["params"]}
  plain, wide = _model(truncated_len=0), _model(truncated_len=H + 3)
  np.testing.assert_array_equal(_logits(wide)(v, batch), _logits(plain)(v, batch))

  def flops(model):
    cost = _logits(model).lower(v, batch).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]

  assert flops(wide) == flops(plain)
  assert flops(_model(truncated_len=H - 4)) < flops(plain)   # a cut that binds runs on fewer tokens


def test_sla_covering_everything_equals_dense_causal_and_blocked_equals_dense(variables):
  """K1 >= L, K2 = 0, no truncation, one stream: the blocked SLA model equals the model under the
  dense [context | causal history | isolated candidates] mask (plain causal, no SLA). The blocked
  path against the dense SLA mask for K1 < L is tests/layers/test_sla.py's (here at slow)."""
  batch = _batch(2)
  wide = NUM_CTX + H + C
  blocked = _model(local_window=wide, global_window=0)
  v = {"params": variables["params"]}
  dense = _model(sla=False)
  out = _logits(blocked)(v, batch)
  np.testing.assert_allclose(out, _logits(dense)(v, batch), rtol=1e-5, atol=1e-6)
  # The window matters at all (else the comparison above proves little).
  assert not np.allclose(_logits(_model())(v, batch), out, atol=1e-3)


@pytest.mark.slow
def test_blocked_sla_equals_dense_sla_in_the_model(variables):
  batch = _batch(2)
  v = {"params": variables["params"]}
  np.testing.assert_allclose(_logits(_model(**FULL))(v, batch), _logits(_model(**FULL, sla_block=0))(v, batch),
                             rtol=1e-5, atol=1e-6)


def test_remat_switch_wraps_every_block(variables):
  """model.remat puts each block (2 streams x 2 blocks) under jax.checkpoint; off, none is."""
  batch = _batch(3)

  def count(model):
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, batch))(variables["params"])
    return len(re.findall(r"\b(?:checkpoint|remat2?)\[", str(jaxpr)))   # the primitive's name varies

  assert count(_model(**FULL)) == 0
  assert count(_model(**FULL, remat=True)) == 4
  assert count(_model(**FULL, remat=True, remat_policy="dots")) == 4


@pytest.mark.slow
def test_remat_gives_equal_loss_and_gradients(variables):
  batch = _batch(3)
  kw = dict(FULL, dropout=0.2)
  plain, remat = _model(**kw), _model(**kw, remat=True)
  params = variables["params"]
  def shapes(model):
    return jax.eval_shape(lambda b: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, b),
                          batch)["params"]
  assert jax.tree.structure(shapes(plain)) == jax.tree.structure(shapes(remat))

  def loss(model):
    def f(p):
      out = model.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(7)})
      return jnp.mean(jax.nn.softplus(out["logits"]) - out["logits"] * batch["cand_labels"])
    return jax.jit(jax.value_and_grad(f))

  (l0, g0), (l1, g1) = loss(plain)(params), loss(remat)(params)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def _every_other_event(batch: dict, newest: bool = False) -> dict:
  """The batch whose histories keep only events 0, 2, 4, ... of each row (length ⌈n / 2⌉); with
  `newest`, the events n - 1, n - 3, ... instead (every other one, ending at the newest)."""
  out = dict(batch)
  lengths = np.asarray(batch["hist_lengths"])
  for k in ("hist_ids", "hist_actions", "hist_watch", "hist_tab", "hist_times", "hist_feats"):
    old = np.asarray(batch[k])
    new = np.zeros_like(old)
    for r in range(N):
      kept = old[r, (lengths[r] - 1) % 2 if newest else 0:lengths[r]:2]
      new[r, :len(kept)] = kept
    out[k] = jnp.asarray(new)
  out["hist_lengths"] = jnp.asarray(-(-lengths // 2), jnp.int32)
  return out


def test_gact_fold_reads_whole_folds_as_one_token(variables):
  """history_fold=2 with the fold map set to "keep the first event of each pair" (and no recency
  table, the one per-event input that depends on the count) equals the unfolded model on the
  history of every other event: the stack runs on ⌈n/2⌉ history tokens, each one fold. With the
  map's second half switched on, the second events reach the logits too."""
  batch = _batch(3)
  plain = _model(stream_select=(0,), stream_encode=(255,))      # SLA on: folding precedes the stack
  folded = _model(stream_select=(0,), stream_encode=(255,), history_fold=2)
  params = jax.tree.map(lambda x: x, variables["params"])
  params["recency_embedding"] = {"embedding": jnp.zeros_like(params["recency_embedding"]["embedding"])}
  d = 16
  first = {"kernel": jnp.concatenate([jnp.eye(d), jnp.zeros((d, d))]), "bias": jnp.zeros(d)}
  pert = variables["perturbations"]
  want = _logits(plain)({"params": params, "perturbations": pert}, _every_other_event(batch))
  got = _logits(folded)({"params": dict(params, stream_0_fold_proj=first), "perturbations": pert}, batch)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  both = {"kernel": jnp.concatenate([jnp.eye(d), jnp.eye(d)]), "bias": jnp.zeros(d)}
  moved = _logits(folded)({"params": dict(params, stream_0_fold_proj=both), "perturbations": pert}, batch)
  assert not np.allclose(moved[:2], want[:2], atol=1e-4)       # rows with history: the second events count


def test_gact_fold_aligned_to_the_newest_event(variables):
  """fold_align="newest" with the fold map set to "keep the second event of each pair" equals the
  unfolded model on the history of events n - 1, n - 3, ...: every fold ends on an event that is an
  even distance from the newest, whatever n (the batch has odd and even lengths)."""
  batch = _batch(3)
  assert len({int(n) % 2 for n in np.asarray(batch["hist_lengths"]) if n}) == 2, "need odd and even lengths"
  plain = _model(stream_select=(0,), stream_encode=(255,))
  folded = _model(stream_select=(0,), stream_encode=(255,), history_fold=2, fold_align="newest")
  params = jax.tree.map(lambda x: x, variables["params"])
  params["recency_embedding"] = {"embedding": jnp.zeros_like(params["recency_embedding"]["embedding"])}
  d = 16
  second = {"kernel": jnp.concatenate([jnp.zeros((d, d)), jnp.eye(d)]), "bias": jnp.zeros(d)}
  pert = variables["perturbations"]
  want = _logits(plain)({"params": params, "perturbations": pert}, _every_other_event(batch, newest=True))
  got = _logits(folded)({"params": dict(params, stream_0_fold_proj=second), "perturbations": pert}, batch)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  oldest = _logits(_model(stream_select=(0,), stream_encode=(255,), history_fold=2))(
      {"params": dict(params, stream_0_fold_proj=second), "perturbations": pert}, batch)
  assert not np.allclose(oldest, want, atol=1e-4)      # folding from the oldest event pairs them differently
  with pytest.raises(ValueError, match="fold_align"):
    _model(history_fold=2, fold_align="middle").check()


def test_gact_fold_one_is_the_unfolded_model():
  """f = 1 adds no parameter (no fold map in either stream); f = 4 adds one f·D -> D map per stream."""
  init = lambda m: jax.eval_shape(lambda b: m.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, b),
                                  _batch())["params"]
  one, four = init(_model(**FULL, history_fold=1)), init(_model(**FULL, history_fold=4))
  assert not [k for k in one if "fold_proj" in k]
  assert sorted(set(four) - set(one)) == ["stream_0_fold_proj", "stream_1_fold_proj"]
  assert four["stream_0_fold_proj"]["kernel"].shape == (4 * 16, 16)
  with pytest.raises(ValueError, match="history_fold"):
    _model(history_fold=0).check()


def test_interleave_alternates_item_and_action():
  item = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
  out = interleave(item, -item)
  assert out.shape == (2, 6, 2)
  np.testing.assert_array_equal(out[:, 0::2], item)
  np.testing.assert_array_equal(out[:, 1::2], -item)


def test_interleaved_layout_gives_each_event_an_item_and_an_action_token(variables):
  """token_layout="interleaved": the stack reads exactly 2n history tokens (gradient on slots < 2n,
  none past them); event j's item id moves only token 2j and its action bits only token 2j + 1; the
  summed layout reads n tokens, each moved by both. Folding cannot be combined with it."""
  batch = _batch(4)
  for layout, per_event in (("summed", 1), ("interleaved", 2)):
    model = _model(**FULL, token_layout=layout)
    pert = _perturbations(model)
    name = "stream_0_history_tokens"
    assert pert[name].shape == (N, per_event * H, 16)

    def total(x, model=model, pert=pert, name=name):
      return model.apply({"params": variables["params"], "perturbations": dict(pert, **{name: x})},
                         batch)["logits"].sum()

    g = np.abs(np.asarray(jax.jit(jax.grad(total))(pert[name]))).sum(-1)   # [N, per_event * H]
    for r, n in enumerate(LENGTHS):
      assert np.all(g[r, :per_event * n] > 0.0) and np.all(g[r, per_event * n:] == 0.0), (layout, r, g[r])

    def tokens(b, model=model, name=name):
      _, state = model.apply({"params": variables["params"]}, b, mutable=["intermediates"])
      return np.asarray(state["intermediates"][name][0])                  # [N, per_event * H, D]

    base = tokens(batch)
    j = 3
    new_item = dict(batch, hist_ids=batch["hist_ids"].at[0, j].set(batch["hist_ids"][0, j] % 29 + 1))
    new_action = dict(batch, hist_actions=batch["hist_actions"].at[0, j].set(batch["hist_actions"][0, j] ^ 0xFF))
    for changed, slot in ((new_item, per_event * j), (new_action, per_event * j + per_event - 1)):
      moved = np.flatnonzero(np.abs(tokens(changed) - base).sum(-1)[0] > 0)
      assert moved.tolist() == [slot], (layout, moved)
  with pytest.raises(ValueError, match="token_layout"):
    _model(token_layout="interleaved", history_fold=2).check()
  with pytest.raises(ValueError, match="token_layout"):
    _model(token_layout="pairs").check()


def test_stream_len_keeps_each_stream_newest_tokens(variables):
  """stream_len: the capped stream's tokens are exactly its newest k selected events (the uncapped
  stream's last k kept tokens, zero padded), its width is k, the other stream is untouched, and a cap
  at or above the history width changes no logit."""
  batch = _batch(6)
  k = 3
  params = {"params": variables["params"]}   # the fixture's perturbations have the uncapped widths

  def tokens(model):
    _, state = model.apply(params, batch, mutable=["intermediates"])
    return [np.asarray(state["intermediates"][f"stream_{s}_history_tokens"][0]) for s in range(2)]

  whole, capped = tokens(_model(**FULL)), tokens(_model(**FULL, stream_len=(0, k)))
  np.testing.assert_array_equal(capped[0], whole[0])
  assert capped[1].shape == (N, k, 16)
  selected = np.asarray(((batch["hist_actions"] & (2 | 8)) != 0) & (np.arange(H)[None] < np.asarray(LENGTHS)[:, None]))
  for r, n_sel in enumerate(selected.sum(1)):
    kept = min(n_sel, k)
    np.testing.assert_allclose(capped[1][r, :kept], whole[1][r, n_sel - kept:n_sel], rtol=1e-6, atol=1e-6)
    assert np.all(capped[1][r, kept:] == 0.0)
  assert selected.sum(1).max() > k            # the cap cuts something in this batch
  np.testing.assert_allclose(_logits(_model(**FULL, stream_len=(H, H)))(params, batch),
                             _logits(_model(**FULL))(params, batch), rtol=1e-6, atol=1e-6)
  assert not np.allclose(_logits(_model(**FULL, stream_len=(0, k)))(params, batch),
                         _logits(_model(**FULL))(params, batch), atol=1e-4)
  with pytest.raises(ValueError, match="stream_len"):
    _model(**FULL, stream_len=(4,)).check()
  with pytest.raises(ValueError, match="stream_len"):
    _model(**FULL, stream_len=(4, -1)).check()


def test_k1_k2_map_onto_the_mask_spec():
  """K2 global history columns after the C context tokens; K1 = 0 keeps only the diagonal (as the
  paper's K1 = 0); sla=False is the plain causal mask with context prefix and isolated targets."""
  spec, sla = _model(local_window=0, global_window=0).mask(NUM_CTX, C)
  assert spec == MaskSpec(local_window=1, global_prefix=NUM_CTX, contextual_prefix=NUM_CTX, num_targets=C)
  assert sla is not None and sla.block == 4
  spec, _ = _model(local_window=6, global_window=3, sla_block=0).mask(NUM_CTX, C)
  assert spec.local_window == 6 and spec.global_prefix == NUM_CTX + 3
  assert _model(sla=False).mask(NUM_CTX, C) == (
      MaskSpec(causal=True, contextual_prefix=NUM_CTX, num_targets=C), None)
  assert _model(sla_block=0).mask(NUM_CTX, C)[1] is None      # the dense SLA mask (reference)


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="stream_select"):
    _model(stream_select=(0, 2), stream_encode=(255,)).check()
  with pytest.raises(ValueError, match="full_layers"):
    _model(full_layers=3, truncated_len=4).check()
  with pytest.raises(ValueError, match="fusion"):
    _model(fusion="max").check()
  with pytest.raises(ValueError, match="unknown model config"):
    build_model(dict(name="ultra_hstu", num_tasks=T, locl_window=3), 31)


@pytest.mark.slow
def test_experiments_run_quick(tmp_path):
  """Three steps of configs/ultra_hstu_rank_synthetic.py:quick through experiments.run."""
  results = tmp_path / "r.json"
  cmd = [sys.executable, "-m", "experiments.run", "--config=configs/ultra_hstu_rank_synthetic.py:quick",
         f"--workdir={tmp_path / 'w'}", f"--results={results}", "--config.train.max_steps=3"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  r = json.load(open(results))
  assert r["model"] == "ultra_hstu" and r["steps"] == 3
  assert np.isfinite(r["metrics"]["test"]["mean"]["ne"])
  assert r["flops"][0]["flops_per_example"] > 0
