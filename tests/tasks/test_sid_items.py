"""SID tokens for the item table (tasks/sid_items.py over the one builder, semantic_ids/catalogue_sids.py) and the warm / cold metrics of the
retrieval task, each against a brute force."""
import jax
import ml_collections
import numpy as np
import pytest

from recjax.data import registry, splits
from recjax.metrics.retrieval import catalogue_ranks_reference
from recjax.semantic_ids import catalogue_sids
from recjax.tasks import sid_items
from recjax.tasks.retrieval import cold_warm_metrics


def test_prefix_and_code_tokens_match_a_brute_force():
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 3, (40, 3))
  tokens, sizes = sid_items.tokens_from_codes(codes, "prefixes", 3, 3)
  for l in range(3):
    prefixes = sorted({tuple(c[:l + 1]) for c in codes})
    assert sizes[l] == len(prefixes)
    np.testing.assert_array_equal(tokens[:, l], [prefixes.index(tuple(c[:l + 1])) for c in codes])
  codes[5, 2] = 7     # a level past the tokenizer's (the disambiguation level) gets max + 1 rows
  tokens, sizes = sid_items.tokens_from_codes(codes, "codes", 4, 2)
  np.testing.assert_array_equal(tokens, codes)
  assert sizes == [4, 4, 8]


def _data_cfg(path):
  return ml_collections.ConfigDict({"kind": "text", "path": str(path), "id_offset": 0})


def test_tokens_are_cached_by_fingerprint_and_rebuilt_when_settings_change(cyclic_text, tmp_path, monkeypatch):
  data_cfg = _data_cfg(cyclic_text)
  seqs = registry.load_dataset(data_cfg)
  train = splits.training_sequences(seqs)
  cat = seqs.catalogue()
  sid = {"vectors": "collab:ppmi", "num_levels": 2, "codebook_size": 4, "vector_dim": 8}
  cache = str(tmp_path / "sid")
  tokens, report = sid_items.build_sid_tokens(sid, data_cfg, seqs.num_items, cat, train, cache)
  assert report["cache"] == "written" and report["route"] == "collab:ppmi"
  assert tokens.tokens_VL.shape == (seqs.num_items, 3)           # 2 levels + disambiguation
  # No two catalogue items share all tokens (the disambiguation level), and rows match the report.
  assert len({tuple(t) for t in tokens.tokens_VL[cat]}) == len(cat)
  assert tokens.num_rows == report["table_rows"] == sum(report["level_sizes"])

  def no_fit(*args):
    raise AssertionError("the tokenizer ran although a cached file exists")
  monkeypatch.setattr(catalogue_sids, "tokenize", no_fit)
  again, report2 = sid_items.build_sid_tokens(dict(sid), data_cfg, seqs.num_items, cat, train, cache)
  assert report2["cache"] == "read" and again == tokens
  np.testing.assert_array_equal(again.tokens_VL, tokens.tokens_VL)
  # Another setting, or other training sequences (collab), is another fingerprint: the fit runs.
  with pytest.raises(AssertionError, match="tokenizer ran"):
    sid_items.build_sid_tokens({**sid, "codebook_size": 5}, data_cfg, seqs.num_items, cat, train, cache)
  cold_seqs, _ = splits.cold_start_split(seqs, 0.2, seed=0)
  with pytest.raises(AssertionError, match="tokenizer ran"):
    sid_items.build_sid_tokens(sid, data_cfg, seqs.num_items, cat, splits.training_sequences(cold_seqs), cache)
  # `tokens` changes only the table rows, not the codes: the cached codes are read.
  prefixes, report3 = sid_items.build_sid_tokens({**sid, "tokens": "prefixes"}, data_cfg, seqs.num_items, cat, train, cache)
  assert report3["cache"] == "read" and report3["fingerprint"] == report["fingerprint"]
  assert prefixes.level_sizes[0] == len(np.unique(tokens.tokens_VL[cat, 0]))
  with pytest.raises(ValueError, match=r"unknown config.sid key\(s\) \['levels'\]"):
    sid_items.build_sid_tokens({"levels": 2}, data_cfg, seqs.num_items, cat, train, cache)
  with pytest.raises(ValueError, match=r"unknown config.sid key\(s\) \['route'\]"):   # the old builder's name
    sid_items.build_sid_tokens({"route": "content"}, data_cfg, seqs.num_items, cat, train, cache)
  with pytest.raises(ValueError, match="sid.vectors='content:tfidf' reads MovieLens item files"):
    sid_items.build_sid_tokens({"vectors": "content:tfidf"}, data_cfg, seqs.num_items, cat, train, cache)


def test_warm_and_cold_metrics_equal_a_brute_force():
  rng = np.random.default_rng(0)
  b, v, d = 64, 30, 6
  user, items = rng.normal(size=(b, d)).astype(np.float32), rng.normal(size=(v, d)).astype(np.float32)
  catalogue = np.arange(1, v)
  targets = rng.integers(1, v, b).astype(np.int32)
  cold = np.array([2, 5, 11, 17, 23, 29])
  ranks = np.asarray(jax.jit(catalogue_ranks_reference)(user, items, catalogue, targets))
  got = cold_warm_metrics(ranks, targets, cold, ks=(1, 10))
  scores = user.astype(np.float64) @ items.T.astype(np.float64)
  for name, keep in (("cold", np.isin(targets, cold)), ("warm", ~np.isin(targets, cold))):
    brute = [1 + np.sum(scores[i, catalogue] > scores[i, targets[i]]) for i in np.flatnonzero(keep)]
    assert got[name]["queries"] == len(brute) > 0
    assert got[name]["hr@10"] == pytest.approx(np.mean([r <= 10 for r in brute]))
    assert got[name]["ndcg@10"] == pytest.approx(np.mean([1 / np.log2(r + 1) if r <= 10 else 0 for r in brute]))
    assert got[name]["mrr"] == pytest.approx(np.mean([1 / r for r in brute]))
  assert cold_warm_metrics(ranks, targets, np.array([100]), ks=(10,))["cold"] == {"queries": 0}


def _tiny_config(path, item_table):
  from configs import base  # pylint: disable=import-outside-toplevel
  c = base.base()
  c.name, c.dataset_label = "tiny_sid", "tiny"
  c.data.kind, c.data.path, c.data.max_len = "text", str(path), 20
  c.data.cold_items, c.data.cold_seed = 0.2, 0
  c.model.update({"dim": 16, "dqk": 8, "dv": 8, "num_blocks": 1, "attn_norm_len": 20, "dropout": 0.1,
                  "item_table": item_table, "sid_combine": "sum", "sid_residual_size": 3})
  c.sid = ml_collections.ConfigDict({"vectors": "collab:ppmi", "num_levels": 2, "codebook_size": 4, "vector_dim": 8})
  c.loss.update({"num_negatives": 8, "token_bucket": 64, "chunk": 32})
  c.train.update({"batch_size": 16, "num_epochs": 4, "learning_rate": 1e-2, "log_every_steps": 4,
                  "eval_every_epochs": 2, "checkpoint_every_steps": 1000})
  c.eval.batch_size, c.eval.exclude_history = 64, False
  return c


@pytest.mark.slow   # one compile of HSTU's loss gradient (minutes on a shared 2-core machine)
def test_id_table_rows_of_cold_items_get_no_gradient(cyclic_text, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  from recjax import tasks  # pylint: disable=import-outside-toplevel
  from recjax.models import init_params  # pylint: disable=import-outside-toplevel
  task = tasks.make_task(_tiny_config(cyclic_text, "id"), str(tmp_path))
  model, _, _ = task.build_model()
  params = init_params(model, jax.random.key(0), task.init_batch())
  batch = task.train_dataset(16, 1, seed=0)[0]
  grad = np.asarray(jax.grad(task.loss_fn(model))(params, batch, jax.random.key(1))["item_embedding"]["table"])
  assert len(task.cold_items) == 6
  assert not np.any(grad[task.cold_items])                     # neither input, label nor negative
  assert np.count_nonzero(np.abs(grad).sum(1)) > 10            # the warm rows do learn


@pytest.mark.slow   # a 4-epoch run of a tiny HSTU with the SID table (minutes on a shared 2-core machine)
def test_sid_run_reports_table_size_and_warm_cold_metrics(cyclic_text, tmp_path):
  from recjax.train import loop  # pylint: disable=import-outside-toplevel
  summary = loop.train_and_evaluate(_tiny_config(cyclic_text, "sid"), str(tmp_path / "w"))
  rep = summary["item_representation"]
  assert rep["kind"] == "sid" and rep["sid"]["route"] == "collab:ppmi"
  assert rep["params"] == (sum(rep["sid"]["level_sizes"]) + 3) * 16    # + 3 hashed residual rows
  assert rep["id_table_params"] == summary["dataset_stats"]["item_rows"] * 16
  test = summary["metrics"]["test"]
  n_warm, n_cold = test["warm"]["queries"], test["cold"]["queries"]
  assert n_warm + n_cold == summary["dataset_stats"]["test_examples"] and n_cold == summary["dataset_stats"]["cold_test_targets"] > 0
  assert test["hr@10"] == pytest.approx((n_warm * test["warm"]["hr@10"] + n_cold * test["cold"]["hr@10"]) / (n_warm + n_cold))
