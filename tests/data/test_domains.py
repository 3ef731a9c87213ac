"""Domain mixtures of the training targets (recjax/data/domains.py) and the per-domain held-out loss."""
import jax.numpy as jnp
import numpy as np
import pytest

from recjax.data import domains, splits
from recjax.data.types import UserSequences
from recjax.tasks import retrieval


def _seqs(num_users=40, num_items=30, num_domains=3, seed=0):
  rng = np.random.default_rng(seed)
  lengths = rng.integers(1, 25, num_users)
  offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
  items = rng.integers(1, num_items, offsets[-1]).astype(np.int32)
  tab = rng.integers(0, num_domains, offsets[-1]).astype(np.int32)
  return UserSequences(np.arange(num_users, dtype=np.int64) + 100, offsets, items, None, num_items, "toy",
                       extras={"tab": tab})


@pytest.mark.parametrize("protocol", ["last_item", "last_two"])
def test_label_and_target_events_line_up_with_the_examples(protocol):
  seqs = _seqs()
  ex = splits.train_examples(seqs, 8, protocol)
  ev = splits.train_label_events(seqs, 8, protocol)
  assert ev.shape == ex.labels.shape
  np.testing.assert_array_equal(ev >= 0, ex.labels != 0)
  np.testing.assert_array_equal(seqs.items[ev[ev >= 0]], ex.labels[ev >= 0])
  for split in (["valid", "test"] if protocol == "last_two" else ["test"]):
    ee = splits.eval_examples(seqs, 8, split, protocol)
    tev = splits.eval_target_events(seqs, split, protocol)
    np.testing.assert_array_equal(seqs.items[tev], ee.targets)
    # the target is the event right after the history window's last item
    last = ee.ids[np.arange(len(ee)), ee.lengths - 1]
    np.testing.assert_array_equal(seqs.items[tev - 1], last)


def test_target_counts_are_exact_and_sum_to_the_budget():
  rng = np.random.default_rng(1)
  for _ in range(50):
    w = rng.dirichlet(np.ones(4))
    total = int(rng.integers(1, 1000))
    c = domains.target_counts(w, total)
    assert c.sum() == total and np.all(np.abs(c - w * total) < 1)


@pytest.mark.parametrize("weights", [(0.5, 0.3, 0.2), (0.1, 0.1, 0.8), (0.0, 1.0, 0.0)])
def test_realised_shares_match_the_weights(weights):
  seqs = _seqs(num_users=200)
  ev = splits.train_label_events(seqs, 10, "last_item")
  dom = np.where(ev >= 0, seqs.extras["tab"][np.maximum(ev, 0)], -1)
  mix = domains.select_targets(dom, domains.DomainSettings("tab", weights, targets=300, seed=3), 3)
  kept = dom[mix.keep_UL]
  assert len(kept) == 300 and np.all(kept >= 0)   # no padding drawn
  shares = np.bincount(kept, minlength=3) / 300
  np.testing.assert_allclose(shares, weights, atol=1 / 300)
  # a different seed draws other targets with the same counts
  mix2 = domains.select_targets(dom, domains.DomainSettings("tab", weights, targets=300, seed=4), 3)
  np.testing.assert_array_equal(mix2.counts_K, mix.counts_K)
  assert (mix2.keep_UL != mix.keep_UL).any()


def test_natural_and_largest_budget():
  seqs = _seqs(num_users=200)
  ev = splits.train_label_events(seqs, 10, "last_item")
  dom = np.where(ev >= 0, seqs.extras["tab"][np.maximum(ev, 0)], -1)
  pool = np.bincount(dom[dom >= 0], minlength=3)
  nat = domains.select_targets(dom, domains.DomainSettings("tab", natural=True), 3)
  np.testing.assert_array_equal(nat.counts_K, pool)   # natural at the largest budget = every label
  skew = domains.select_targets(dom, domains.DomainSettings("tab", (0.8, 0.1, 0.1)), 3)
  assert np.any(skew.counts_K == skew.pool_K)          # the largest budget exhausts some domain
  assert np.all(skew.counts_K <= skew.pool_K)


@pytest.mark.parametrize("kwargs, match", [
    (dict(field="tab", weights=(0.5, 0.5)), "has 2 values; the data has 3 domains"),
    (dict(field="tab", weights=(1.2, -0.1, -0.1)), r"weights\[1\] = -0.1"),
    (dict(field="tab", weights=(0.5, 0.3, 0.3)), "sum to 1.1"),
    (dict(field="tab", weights=(0.5, 0.5, 0.0), targets=10 ** 6), "needs .* targets of domain 0"),
])
def test_bad_mixtures_are_rejected_with_the_reason(kwargs, match):
  seqs = _seqs()
  ev = splits.train_label_events(seqs, 10, "last_item")
  dom = np.where(ev >= 0, seqs.extras["tab"][np.maximum(ev, 0)], -1)
  with pytest.raises(ValueError, match=match):
    domains.select_targets(dom, domains.DomainSettings(**kwargs), 3)


def test_settings_errors():
  with pytest.raises(ValueError, match="either weights .* or natural=True"):
    domains.DomainSettings("tab", (0.5, 0.5), natural=True)
  with pytest.raises(ValueError, match="neither"):
    domains.DomainSettings("tab")
  with pytest.raises(ValueError, match="field is empty"):
    domains.DomainSettings("", (1.0,))
  with pytest.raises(ValueError, match="unknown key"):
    domains.DomainSettings.from_config({"field": "tab", "weigths": (1.0,)})
  with pytest.raises(ValueError, match="no per-event field 'tabs'"):
    domains.event_domains(_seqs(), "tabs")


class _FixedModel:
  """A stand-in model: outputs and item table are the params themselves (no network)."""

  def apply(self, variables, batch, train):
    p = variables["params"]
    return p["out"][batch["row"]], p["table"]


def test_domain_losses_match_a_naive_cross_entropy():
  rng = np.random.default_rng(0)
  n, length, d, v, k, temp = 11, 5, 6, 9, 3, 0.3
  out = rng.normal(size=(n, length, d)).astype(np.float32)
  table = rng.normal(size=(v, d)).astype(np.float32)
  lengths = rng.integers(1, length + 1, n).astype(np.int32)
  targets = rng.integers(1, v, n).astype(np.int32)
  dom = rng.integers(0, k, n)
  ex = splits.EvalExamples(np.arange(n), np.ones((n, length), np.int32), lengths, targets, None, None)
  catalogue = np.arange(1, v)
  step = retrieval.make_domain_loss_step(_FixedModel(), catalogue, v, temp, k, item_chunk=4)

  def fixed_step(params, batch):   # row index so the stand-in knows which user each batch row is
    return step(params, {**batch, "row": jnp.asarray(batch["row"])})
  rows = iter([np.r_[np.arange(4 * i, min(4 * i + 4, n)), np.zeros(max(0, 4 * i + 4 - n), int)]
               for i in range(3)])
  got = retrieval.domain_losses(lambda p, b: fixed_step(p, {**b, "row": next(rows)}),
                                {"out": jnp.asarray(out), "table": jnp.asarray(table)}, ex, dom, 4)

  u = out[np.arange(n), lengths - 1]
  u = u / np.linalg.norm(u, axis=1, keepdims=True)
  t = table / np.linalg.norm(table, axis=1, keepdims=True)
  s = u @ t[catalogue].T / temp
  ce = np.log(np.exp(s).sum(1)) - np.sum(u * t[targets], 1) / temp
  for i in range(k):
    assert got["domain_targets"][str(i)] == int((dom == i).sum())
    np.testing.assert_allclose(got["domain_loss"][str(i)], ce[dom == i].mean(), rtol=1e-5)
  np.testing.assert_allclose(got["loss"], ce.mean(), rtol=1e-5)


def test_tab_alpha_sets_the_tab_shares_and_keeps_old_fingerprints():
  from recjax.data import synthetic as sy
  base = dict(num_users=400, num_items=60, num_topics=3, mean_seq_len=20.0, max_seq_len=60)
  assert "tab_alpha" not in sy.WorldConfig(**base).as_dict()   # unset: the version-2 fingerprint holds
  alpha = (0.5, 1.0, 1.5, 2.0)
  world = sy.build_world(sy.WorldConfig(**base, tab_alpha=alpha))
  shares = np.bincount(world.log["tab"], minlength=4) / len(world.log["tab"])
  np.testing.assert_allclose(shares, np.asarray(alpha) / sum(alpha), atol=0.04)
  with pytest.raises(ValueError, match="tab_alpha needs one value per tab"):
    sy.WorldConfig(**base, tab_alpha=(1.0, 2.0))

