"""The task registry, the metric-selection helpers and the ranking task's loss and evaluation."""
from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from configs import dlrm_rank_synthetic, hstu_rank_synthetic
from recjax import tasks
from recjax.metrics import ranking as rm
from recjax.models import init_params
from recjax.tasks.base import flatten, is_better, lookup


def test_registry_rejects_unknown_tasks_and_names_the_known_ones():
  c = hstu_rank_synthetic.get_config("quick")
  c.task = "bogus"
  with pytest.raises(ValueError, match=r"unknown config.task 'bogus'; known: \['retrieval', 'ranking', 'generative'\]"):
    tasks.make_task(c, "/nonexistent")
  assert tasks.task_class("retrieval").name == "retrieval"
  assert tasks.task_class("ranking").name == "ranking"
  assert tasks.task_class("generative").name == "generative"


def test_lookup_flatten_and_direction():
  m = {"mean": {"ne": 0.9, "auc": float("nan")}, "hr@10": 0.5, "note": "x"}
  assert lookup(m, "mean.ne") == 0.9 and lookup(m, "hr@10") == 0.5
  assert flatten(m, "valid/") == {"valid/mean/ne": 0.9, "valid/hr@10": 0.5}   # NaN and strings skipped
  assert is_better(0.8, 0.9, higher_is_better=False) and not is_better(0.8, 0.9, higher_is_better=True)
  assert not is_better(float("nan"), 0.9, True) and is_better(0.1, float("nan"), False)


@pytest.fixture(scope="module")
def ranking(tmp_path_factory):
  config = dlrm_rank_synthetic.get_config("quick")
  task = tasks.make_task(config, str(tmp_path_factory.mktemp("rank")))
  model, _, _ = task.build_model()
  params = init_params(model, jax.random.key(0), task.init_batch())
  return config, task, model, params


def test_ranking_batches_have_the_schema_and_pad_with_empty_requests(ranking):
  config, task, _, _ = ranking
  ds = task.train_dataset(config.train.batch_size, 1, seed=0)
  n = len(task.examples["train"])
  assert len(ds) == task.steps_per_epoch(config.train.batch_size) == -(-n // config.train.batch_size)
  last = ds[len(ds) - 1]
  assert set(last) == set(task.batch_fields)
  real = n - (len(ds) - 1) * config.train.batch_size
  assert last["cand_mask"][:real].any(1).all() and not last["cand_mask"][real:].any()
  assert not last["hist_lengths"][real:].any()
  # Every training request appears exactly once per epoch.
  seen = np.concatenate([ds[i]["cand_ids"][ds[i]["cand_mask"].any(1)] for i in range(len(ds))])
  assert sorted(map(tuple, seen)) == sorted(map(tuple, task.examples["train"].arrays["cand_ids"]))


def test_ranking_per_process_parts_are_the_whole_batch(ranking):
  """Multi-process runs: the processes' slots of a global batch, side by side, are the 1-process batch."""
  _, task, _, _ = ranking
  full = task.train_dataset(8, 1, seed=0)
  parts = [task.train_dataset(8, 1, seed=0, part=p) for p in [(0, 4), (4, 8)]]
  for k in (0, len(full) - 1):   # a full batch and the padded last one
    for key, whole in full[k].items():
      np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts]), whole, err_msg=f"{k} {key}")


def test_ranking_loss_is_the_weighted_bce_over_real_candidates(ranking):
  _, task, model, params = ranking
  batch = task.train_dataset(8, 1, seed=0)[0]
  batch["cand_mask"][3:] = 0.0     # padding candidates must not count, whatever their labels
  task.task_weights = np.linspace(0.5, 2.0, len(task.task_names)).astype(np.float32)
  value = float(jax.jit(task.loss_fn(model))(params, batch, jax.random.key(1)))
  # Naive: the eval-mode logits (DLRM quick dropout off would differ, so recompute with train=True and
  # the same key the loss gives the model).
  out = model.apply({"params": params}, batch, train=True, rngs={"dropout": jax.random.key(1)})
  z = np.asarray(out["logits"], np.float64)
  y = batch["cand_labels"].astype(np.float64)
  p = 1 / (1 + np.exp(-z))
  bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
  w = batch["cand_mask"].astype(np.float64)
  want = sum(task.task_weights[t] * (bce[..., t] * w).sum() / w.sum() for t in range(len(task.task_names)))
  assert value == pytest.approx(want, rel=1e-4)


def test_ranking_evaluation_matches_the_metrics_of_the_models_predictions(ranking):
  _, task, model, params = ranking
  got = task.evaluator(model)(params, "test")
  ex = task.examples["test"]
  real = ex.arrays["cand_mask"] > 0
  p = np.asarray(jax.nn.sigmoid(model.apply({"params": params}, {k: ex.arrays[k] for k in task.batch_fields},
                                            train=False)["logits"]))[real]
  users = np.broadcast_to(ex.arrays["user_ids"][:, None], real.shape)[real]
  for t, name in enumerate(task.task_names):
    y = ex.arrays["cand_labels"][real][:, t]
    assert got[name]["count"] == real.sum()
    if 0 < y.mean() < 1:
      assert got[name]["ne"] == pytest.approx(rm.normalized_entropy(p[:, t], y), rel=1e-5)
      assert got[name]["auc"] == pytest.approx(rm.auc(p[:, t], y), abs=1e-6)
    # The oracle is the world's probability at the same candidates (joined by event index).
    assert got[name]["oracle_ne"] == pytest.approx(
        rm.normalized_entropy(task.oracle["test"][real][:, t], y), rel=1e-9, nan_ok=True)
  assert got["mean"]["ne"] == pytest.approx(np.nanmean([got[n]["ne"] for n in task.task_names]))
  # A world without planted long-range structure: no planted subset, the metrics exactly as before.
  assert task.planted is None and set(got) == set(task.task_names) | {"mean"}
  assert not any(k.startswith("planted.") for k in task.test_headline)


def test_ranking_task_weights_must_match_the_tasks(tmp_path):
  c = dlrm_rank_synthetic.get_config("quick")
  c.ranking.task_weights = (1.0, 2.0)
  with pytest.raises(ValueError, match="task_weights has 2 entries"):
    tasks.make_task(c, str(tmp_path))


def test_ranking_quick_config_runs_end_to_end_with_early_stopping(tmp_path, monkeypatch):
  from recjax.scaling import flops
  from recjax.train import loop
  from recjax.train.progress import Progress
  counted, logged = [], set()
  count = flops.train_step_flops
  monkeypatch.setattr(flops, "train_step_flops", lambda *a, **k: counted.append(1) or count(*a, **k))
  scalars = Progress.scalars
  monkeypatch.setattr(Progress, "scalars", lambda self, step, values: logged.update(values) or scalars(self, step, values))
  summary = loop.train_and_evaluate(hstu_rank_synthetic.get_config("quick"), str(tmp_path / "w"))
  # Ranking batches have one shape: the step's FLOPs are counted (compiled for cost analysis) once,
  # not at every step or log point; MFU covers the steps after the first (compiling) interval.
  assert len(counted) == 1 and len(summary["flops"]) == 1
  assert 0 < summary["mfu"]["steps"] < summary["steps"] and summary["mfu"]["mfu_measured"] > 0
  assert {"perf/mfu_measured", "perf/achieved_flops_per_s"} <= logged, "MFU goes to the training log (TensorBoard)"
  # train_flops: every step at its shape's count (one shape here).
  tf = summary["train_flops"]
  assert tf["steps"] == summary["steps"] and tf["flops"] == pytest.approx(tf["steps"] * summary["flops"][0]["flops_per_step"])
  assert tf["per_example"] == pytest.approx(summary["flops"][0]["flops_per_example"])
  m = summary["metrics"]
  hist = m["per_epoch"]
  assert len(hist) == 2 and all(h["split"] == "valid" for h in hist)
  best = min(hist, key=lambda h: h["mean"]["ne"])
  assert m["best_epoch"]["epoch"] == best["epoch"] and m["best_epoch"]["higher_is_better"] is False
  same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)   # NaN-aware
  assert same(m["test"], best["test"]), "metrics.test is the test split at the epoch selected on validation"
  assert same(m["final_test"], hist[-1]["test"]), "the last evaluation was at the last step"
  names = summary["dataset_stats"]["tasks"]
  assert set(m["test"]) == set(names) | {"mean"}
  for name in names:
    t = m["test"][name]
    if math.isfinite(t["ne"]) and t["oracle_ne"] < 1:
      assert t["gap_closed"] == pytest.approx((1 - t["ne"]) / (1 - t["oracle_ne"]))
  assert 0 < m["test"]["mean"]["oracle_ne"] < 1, "the oracle beats the base rate on the test split"
  assert "ranking protocol last_k" in summary["protocol"]
  assert summary["flops"][0]["flops_per_step"] > 0 and summary["flops"][0]["flops_per_example"] > 0
  assert summary["headline"]["test"][0] == "mean.ne"


@pytest.mark.slow   # keeps the default suite under 10 minutes
def test_watch_ratio_head_learns_a_planted_watch_ratio(tmp_path):
  """With ranking.watch_weight > 0 the task trains the regression head and evaluates it: on a tiny
  world whose watch ratio is a planted function of the item (play = ratio[item] x duration), the
  HSTU ranker's head recovers it on the test split (R² far above the untrained head's and the
  mean's 0)."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from recjax.data import ranking as rk  # pylint: disable=import-outside-toplevel
  from recjax.train.state import TrainState  # pylint: disable=import-outside-toplevel
  from recjax.train.step import make_step  # pylint: disable=import-outside-toplevel
  c = hstu_rank_synthetic.get_config("quick")
  c.ranking.watch_weight = 1.0
  c.ranking.task_weights = (0.0,) * 8   # the head alone: the BCE terms only add noise to this check
  c.model.num_blocks = 1
  c.model.dropout = 0.0
  task = tasks.make_task(c, str(tmp_path))
  seqs = task.seqs
  ratio = np.random.default_rng(0).uniform(0.2, 3.0, seqs.num_items)   # the planted truth, per item
  play = np.round(ratio[seqs.items] * seqs.extras["duration_ms"]).astype(np.int64)
  planted = dataclasses.replace(seqs, extras=dict(seqs.extras, play_time_ms=play))
  task.examples = {s: rk.ranking_examples(planted, task.split_cfg, s, task.context) for s in rk.SPLITS}
  test = task.examples["test"]
  real = test.arrays["cand_mask"] > 0
  np.testing.assert_allclose(test.arrays["cand_watch_ratio"][real], ratio[test.arrays["cand_ids"][real]], rtol=1e-3)
  model, _, _ = task.build_model()
  params = init_params(model, jax.random.key(0), task.init_batch())
  evaluate = task.evaluator(model)
  before = evaluate(params, "test")["watch_ratio"]
  tx = optax.adam(1e-2)
  step = make_step(task.loss_fn(model), tx, jax.random.key(1))
  state = TrainState(jax.numpy.zeros((), jax.numpy.int32), params, tx.init(params))
  ds = task.train_dataset(c.train.batch_size, 8, seed=0)
  for i in range(len(ds)):
    state, _ = step(state, ds[i])
  after = evaluate(state.params, "test")["watch_ratio"]
  assert before["r2"] < 0.2, before
  assert after["r2"] > 0.6, after        # 64 steps reach ≈ 0.8; the untrained head is ≈ −2
  np.testing.assert_allclose(after["mse_of_mean"], np.var(ratio[test.arrays["cand_ids"][real]]), rtol=1e-3)


def test_retrieval_eval_nll_is_the_catalogue_cross_entropy_and_is_saved_per_user(tmp_path):
  """eval.nll: the mean over users of −log softmax(cos / temperature) of the target over the whole
  catalogue, brute-forced in float64 from the model's outputs; eval.save_per_example writes the
  same per-user NLL and the ranks behind HR/NDCG to <workdir>/eval/<split>.npz."""
  from configs import base  # pylint: disable=import-outside-toplevel
  from recjax.data import pipeline  # pylint: disable=import-outside-toplevel
  from recjax.metrics.retrieval import metrics_from_ranks  # pylint: disable=import-outside-toplevel
  from tests.conftest import write_cyclic_sequences  # pylint: disable=import-outside-toplevel
  c = base.base()
  c.data.kind, c.data.path, c.data.max_len, c.data.protocol = "text", write_cyclic_sequences(tmp_path / "s.txt"), 12, "last_two"
  c.model.dim, c.model.dqk, c.model.dv, c.model.num_blocks, c.model.attn_norm_len = 8, 4, 4, 1, 12
  c.eval.nll, c.eval.save_per_example, c.eval.item_chunk, c.eval.batch_size = True, True, 7, 50
  task = tasks.make_task(c, str(tmp_path / "w"))
  model, _, _ = task.build_model()
  params = init_params(model, jax.random.key(0), task.init_batch())
  split = task.eval_split
  got = task.evaluator(model)(params, split)
  want = []
  cat = np.sort(task.catalogue)
  for batch, n in pipeline.eval_batches(task.examples[split], 50):
    out, table = (np.asarray(x, np.float64) for x in model.apply({"params": params}, batch, train=False))
    u = out[np.arange(n), batch["lengths"][:n] - 1]
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    table /= np.linalg.norm(table, axis=1, keepdims=True)
    z = u @ table[cat].T / c.loss.temperature
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    want.append(lse - np.sum(u * table[batch["targets"][:n]], axis=1) / c.loss.temperature)
  want = np.concatenate(want)
  assert got["nll"] == pytest.approx(want.mean(), rel=1e-5)
  saved = np.load(tmp_path / "w" / "eval" / f"{split}.npz")
  np.testing.assert_allclose(saved["nll"], want, rtol=1e-4)
  np.testing.assert_array_equal(saved["user_ids"], task.examples[split].user_ids)
  assert metrics_from_ranks(saved["ranks"], tuple(c.eval.ks))["ndcg@10"] == got["ndcg@10"]
