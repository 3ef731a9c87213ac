"""The generative task (TIGER over catalogue SIDs): its split, SID cache, training and evaluation,
each against a brute-force reference on a tiny catalogue."""
from __future__ import annotations

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from recjax import tasks
from recjax.data import splits, text_sequences
from recjax.metrics.retrieval import MISS_RANK
from recjax.models import init_params
from recjax.models.tiger import TIGER, BeamScorer, decode_context
from recjax.semantic_ids import beam_search
from recjax.semantic_ids import catalogue_sids as sid_lib
from recjax.tasks import generative
from recjax.train.state import TrainState, make_optimizer
from recjax.train.step import make_step
from tests.conftest import write_cyclic_sequences

NUM_ITEMS = 24


def tiny_config(path: str, **sid) -> ml_collections.ConfigDict:
  c = base.base()
  c.task = "generative"
  c.data.kind, c.data.path, c.data.max_len, c.data.protocol = "text", path, 6, "last_two"
  c.eval.exclude_history = False
  c.eval.ks = (1, 5, 10)
  c.eval.batch_size = 16
  c.eval.beam_size = NUM_ITEMS   # every leaf: the search prunes nothing, so ranks are exact
  c.sid = ml_collections.ConfigDict(dict(vector_dim=8, num_levels=2, codebook_size=4, window=2, **sid))
  c.model = ml_collections.ConfigDict(dict(name="tiger", dim=16, num_heads=2, head_dim=8, ffn_dim=32,
                                           num_encoder_layers=1, num_decoder_layers=1, dropout=0.0))
  c.train.learning_rate = 1e-2
  return c


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  root = tmp_path_factory.mktemp("gen")
  path = write_cyclic_sequences(root / "seqs.txt", num_users=40, num_items=NUM_ITEMS, min_len=5, max_len=12)
  config = tiny_config(path)
  task = tasks.make_task(config, str(root / "wd"))
  model, _, _ = task.build_model()
  params = init_params(model, jax.random.key(0), task.init_batch())
  return config, task, model, params, root


def test_tiger_protocol_split_on_a_text_file(tmp_path):
  """Train on all but the last two items, validate on the second to last, test on the last."""
  path = tmp_path / "s.txt"
  path.write_text("7 1 2 3 4 5\n8 6 7 8\n9 2 9\n")   # user 9 has nothing left to train on
  seqs = text_sequences.read_text_sequences(path)
  train = splits.training_sequences(seqs, "last_two")
  assert [train.items_of(k).tolist() for k in range(3)] == [[1, 2, 3], [6], []]
  ex = splits.prefix_examples(seqs, 2, "last_two")
  # Every training position t >= 1 with <= 2 items before it; user 8 has one training item: no example.
  assert ex.user_ids.tolist() == [7, 7] and ex.targets.tolist() == [2, 3]
  assert ex.ids.tolist() == [[1, 0], [1, 2]] and ex.lengths.tolist() == [1, 2]
  valid = splits.eval_examples(seqs, 3, "valid", "last_two")
  test = splits.eval_examples(seqs, 3, "test", "last_two")
  # User 9's second-to-last item has no history before it: no validation example, a test example.
  assert valid.targets.tolist() == [4, 7] and test.targets.tolist() == [5, 8, 9]
  assert test.ids[0].tolist() == [2, 3, 4] and valid.ids[1].tolist() == [6, 0, 0]


def test_prefix_examples_equal_a_loop(tmp_path):
  path = write_cyclic_sequences(tmp_path / "c.txt", num_users=15, num_items=9, min_len=1, max_len=9, seed=3)
  seqs = text_sequences.read_text_sequences(path)
  ex = splits.prefix_examples(seqs, 4, "last_two")
  want = []
  for k in range(seqs.num_users):
    items = seqs.items_of(k)[:-2] if seqs.lengths[k] > 2 else []
    for t in range(1, len(items)):
      want.append((seqs.user_ids[k], items[max(0, t - 4):t].tolist(), items[t]))
  got = [(u, ids[:n].tolist(), y) for u, ids, n, y in zip(ex.user_ids, ex.ids, ex.lengths, ex.targets)]
  assert got == want and np.all(ex.ids[np.arange(4)[None] >= ex.lengths[:, None]] == 0)


def test_sid_cache_is_reused_and_a_changed_setting_rebuilds(tiny, tmp_path):
  config, task, _, _, root = tiny
  assert not task.sids_cached
  again = tasks.make_task(config, str(root / "wd"))
  assert again.sids_cached and again.sid_fingerprint == task.sid_fingerprint
  np.testing.assert_array_equal(again.sids.codes_NL, task.sids.codes_NL)
  changed = tiny_config(config.data.path, seed=1)
  other = tasks.make_task(changed, str(root / "wd"))
  assert other.sid_fingerprint != task.sid_fingerprint and not other.sids_cached
  assert len(os.listdir(root / "wd" / "sids")) == 2
  # A file under a fingerprint it was not made for is rebuilt, not trusted.
  fake = sid_lib.cache_path(str(root / "wd" / "sids"), "f" * 16)
  os.replace(sid_lib.cache_path(str(root / "wd" / "sids"), other.sid_fingerprint), fake)
  sids, cached = sid_lib.load_or_build_file(str(root / "wd" / "sids"), "f" * 16, lambda: task.sids)
  assert not cached and sids is task.sids


def test_sids_cover_the_catalogue_without_collisions_and_from_training_events_only(tiny):
  _, task, _, _, _ = tiny
  assert sorted(task.sids.item_ids.tolist()) == list(range(1, NUM_ITEMS + 1))
  assert task.sids.report["after_dedup"]["collision_rate"] == 0.0
  assert task.sids.num_levels == 3   # 2 levels + the dedup level
  # The SIDs depend on training events only: changing a user's held-out items changes nothing.
  seqs = task.seqs
  train = splits.training_sequences(seqs, "last_two")
  assert len(train.items) == int(np.sum(np.maximum(seqs.lengths - 2, 0)))


def test_a_dedup_level_beyond_the_codebook_is_rejected(tiny, tmp_path):
  """TIGER decodes every level with K codes: a collision group of more than K items cannot be told
  apart by the appended level, so the task refuses it (24 items on 1 level x 2 codes)."""
  config = tiny_config(tiny[0].data.path)
  config.sid.num_levels, config.sid.codebook_size = 1, 2
  with pytest.raises(ValueError, match="sid.dedup='append_level': a collision group holds"):
    tasks.make_task(config, str(tmp_path))


def test_batch_schema_pads_short_batches_with_weightless_rows(tiny):
  _, task, _, _, _ = tiny
  ds = task.train_dataset(16, 1, seed=0)
  last = ds[len(ds) - 1]
  assert set(last) == set(task.batch_fields)
  real = len(task.train_ex) - (len(ds) - 1) * 16
  assert last["weights"][:real].all() and not last["weights"][real:].any()
  assert last["history_codes"].shape == (16, 6, 3) and last["target_codes"].shape == (16, 3)
  row = int(np.flatnonzero(last["weights"])[0])
  ex_row = [i for i in range(len(task.train_ex)) if task.code_table[task.train_ex.targets[i]].tolist()
            == last["target_codes"][row].tolist()]
  assert ex_row, "a batch target is not the SID of any training target"


def test_per_process_parts_are_the_whole_batch(tiny):
  """Multi-process runs: the processes' slots of a global batch, side by side, are the 1-process batch."""
  _, task, _, _, _ = tiny
  full = task.train_dataset(16, 1, seed=0)
  parts = [task.train_dataset(16, 1, seed=0, part=p) for p in [(0, 8), (8, 16)]]
  for k in (0, len(full) - 1):   # a full batch and the padded last one
    for key, whole in full[k].items():
      np.testing.assert_array_equal(np.concatenate([p[k][key] for p in parts]), whole, err_msg=f"{k} {key}")


def test_train_step_reduces_the_loss_on_a_planted_world(tiny):
  config, task, model, params, _ = tiny
  tx = make_optimizer(config.train)
  params = jax.tree.map(jnp.copy, params)   # the step donates its state; the fixture's params stay
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  step = make_step(task.loss_fn(model), tx, jax.random.key(1))
  ds = task.train_dataset(16, 40, seed=0)
  losses = []
  for i in range(150):
    state, loss = step(state, ds[i])
    losses.append(float(loss))
  # Cyclic users: the next item is a function of the last two, so the loss must fall well below its start.
  # Uniform guessing costs ln K per token.
  assert np.mean(losses[-10:]) < min(0.6 * np.mean(losses[:3]), 0.6 * np.log(task.sids.codebook_size)), losses


def _exhaustive_scores(task, model, params, split):
  """log p(SID) of every catalogue item for every query, by teacher forcing (model.__call__)."""
  ex = task.examples[split]
  sids = task.sids.codes_NL
  n, u = len(sids), len(ex)
  batch = generative.make_batch(ex, np.arange(u), u, task.code_table)
  rep = {k: np.repeat(v, n, axis=0) for k, v in batch.items()}
  rep["target_codes"] = np.tile(sids, (u, 1)).astype(np.int32)
  total = _sid_log_probs(model, params, rep)
  return np.asarray(total).reshape(u, n), task.sids.item_ids


@functools.partial(jax.jit, static_argnums=0)
def _sid_log_probs(model, params, batch):
  logp = jax.nn.log_softmax(model.apply({"params": params}, batch), -1)
  return jnp.take_along_axis(logp, batch["target_codes"][..., None], -1)[..., 0].sum(-1)


def test_beam_search_returns_catalogue_items_and_equals_exhaustive_search(tiny):
  _, task, model, params, _ = tiny
  widest = task.trie.num_leaves   # >= the nodes of any level: nothing is pruned
  groups_fn = task.decoder(model, beam_size=widest)
  ex = task.examples["valid"]
  batch = generative.make_batch(ex, np.arange(len(ex)), len(ex), task.code_table)
  got = np.asarray(groups_fn(params, batch))
  assert got.min() >= 0   # every beam is a real leaf: more catalogue SIDs than beams
  items = task.trie.items_of_groups(got)
  assert np.isin(items[items >= 0], task.seqs.catalogue()).all()
  @jax.jit
  def reference(params, batch):
    memory, lengths = model.apply({"params": params}, batch, method=TIGER.encode)
    return beam_search.beam_search_reference(BeamScorer(model)(params), task.trie.sids, {}, top=widest,
                                             context=decode_context(memory, lengths))
  ref = reference(params, batch)
  np.testing.assert_array_equal(got, np.asarray(ref.groups_BW))
  # And the same order as scoring every item's SID by teacher forcing (another code path).
  scores, item_ids = _exhaustive_scores(task, model, params, "valid")
  top_items = item_ids[np.argsort(-scores, axis=1, kind="stable")[:, :widest]]
  np.testing.assert_array_equal(items[..., 0], top_items)


def test_metrics_equal_a_brute_force_ranking_of_all_items(tiny):
  config, task, model, params, _ = tiny
  scores, item_ids = _exhaustive_scores(task, model, params, "test")
  targets = task.examples["test"].targets
  target_score = scores[np.arange(len(targets)), np.searchsorted(item_ids, targets)]
  rank = 1 + np.sum(scores > target_score[:, None], axis=1)
  want = {}
  for k in config.eval.ks:
    want[f"hr@{k}"] = np.mean(rank <= k)
    want[f"ndcg@{k}"] = np.mean(np.where(rank <= k, 1 / np.log2(rank + 1), 0))
  want["mrr"] = np.mean(1 / rank)
  got = task.evaluator(model)(params, "test")
  for key, value in want.items():
    assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["sid_level"][key] == pytest.approx(value, abs=1e-9), key   # no collisions: naive == item-level


def test_collision_aware_metrics_equal_averaging_over_orders_inside_groups():
  """Brute force: every order of the items inside each collision group, equally likely."""
  sizes = np.array([2, 1, 3, 1, 2])
  ranked = np.array([[0, 2, 1, 4], [2, 3, -1, -1], [4, 0, 2, 1]])
  targets = np.array([2, 3, 1])
  got = generative.generative_metrics(ranked, targets, sizes, ks=(1, 3, 5))
  members = {g: [(g, j) for j in range(s)] for g, s in enumerate(sizes)}
  want = {k: [0.0, 0.0] for k in (1, 3, 5)}
  for row, t in zip(ranked, targets):
    lists = [members[g] for g in row if g >= 0]
    orders = list(itertools.product(*[list(itertools.permutations(m)) for m in lists]))
    for k in want:
      hr = nd = 0.0
      for order in orders:
        flat = [x for grp in order for x in grp]
        pos = flat.index((t, 0)) + 1 if (t, 0) in flat else MISS_RANK   # the target is member 0 of its group
        hr += pos <= k
        nd += 1 / np.log2(pos + 1) if pos <= k else 0.0
      want[k][0] += hr / len(orders) / len(targets)
      want[k][1] += nd / len(orders) / len(targets)
  for k, (hr, nd) in want.items():
    assert got[f"hr@{k}"] == pytest.approx(hr) and got[f"ndcg@{k}"] == pytest.approx(nd)
  assert got["hr@3"] < got["sid_level"]["hr@3"]   # the naive count credits a shared SID in full


def test_history_removed_metrics_equal_a_brute_force_ranking_without_the_window(tiny):
  """eval.exclude_history=True: the search never returns a window item, and the metrics equal
  ranking every item outside the window by its SID's log-probability (a target in the window: a miss)."""
  config, _, model, params, root = tiny
  c = tiny_config(config.data.path)
  c.eval.exclude_history = True
  task = tasks.make_task(c, str(root / "wd"))
  assert "window's items removed" in task.protocol()
  ex = task.examples["test"]
  scores, item_ids = _exhaustive_scores(task, model, params, "test")
  in_window = np.stack([np.isin(item_ids, row[row > 0]) for row in ex.ids])
  assert in_window.any(axis=1).all()
  groups, _ = task.decode_split(task.decoder(model), params, "test")
  items = task.trie.items_of_groups(groups)[..., 0]
  for row in range(len(ex)):
    returned = items[row][items[row] > 0]
    assert not np.isin(returned, ex.ids[row][ex.ids[row] > 0]).any()
    assert len(returned) == len(item_ids) - in_window[row].sum()   # every other leaf, none lost
  masked = np.where(in_window, -np.inf, scores)
  t = np.searchsorted(item_ids, ex.targets)
  target_score = masked[np.arange(len(t)), t]
  rank = np.where(np.isfinite(target_score), 1 + np.sum(masked > target_score[:, None], axis=1), MISS_RANK)
  got = task.evaluator(model)(params, "test")
  for k in c.eval.ks:
    assert got[f"hr@{k}"] == pytest.approx(np.mean(rank <= k), abs=1e-9)
    assert got[f"ndcg@{k}"] == pytest.approx(np.mean(np.where(rank <= k, 1 / np.log2(rank + 1), 0)), abs=1e-9)


def test_window_leaves_keeps_a_leaf_an_outside_item_shares():
  group_of_item = np.array([-1, 0, 1, 1, 2])        # items 2 and 3 share leaf 1
  leaf_size = np.array([1, 2, 1])
  got = generative.window_leaves(np.array([[1, 2, 0], [2, 3, 3], [0, 0, 0]]), group_of_item, leaf_size)
  np.testing.assert_array_equal(got, [[0, -1, -1], [1, -1, -1], [-1, -1, -1]])


@pytest.mark.slow
def test_train_and_evaluate_runs_the_generative_task_and_resumes(tiny, tmp_path):
  from recjax.train import loop  # pylint: disable=import-outside-toplevel
  config, _, _, _, _ = tiny
  c = tiny_config(config.data.path)
  c.train.batch_size, c.train.num_epochs, c.train.eval_every_epochs = 16, 2, 1
  c.train.count_flops = False
  first = loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert first["task"] == "generative" and "sids" in first["dataset_stats"]
  assert first["metrics"]["best_epoch"]["selected_by"] == "valid ndcg@10" and "test" in first["metrics"]["best_epoch"]
  c.train.num_epochs = 3
  second = loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert second["segments"][-1]["start_step"] == first["steps"] and second["steps"] > first["steps"]


@pytest.mark.parametrize("name", ["tiger_amazon_sports", "sasrec_amazon_sports", "hstu_amazon_sports"])
def test_sports_configs_share_tigers_protocol(name, tmp_path):
  import importlib  # pylint: disable=import-outside-toplevel
  mod = importlib.import_module(f"configs.{name}")
  for arg in (None, "quick"):
    c = mod.get_config(arg)
    assert c.data.kind == "text" and c.data.path.endswith("amazon-sports/sequential_data.txt")
    assert c.data.protocol == "last_two" and not c.eval.exclude_history and c.eval.test_at_each_eval
    assert {5, 10} <= set(c.eval.ks) and c.dataset_label == "amazon-sports"
  removed = mod.get_config("history_removed")
  assert removed.eval.exclude_history and removed.name.endswith("_history_removed")
  if name == "tiger_amazon_sports":
    assert mod.get_config("short,history_removed").name == "tiger_amazon_sports_short_history_removed"
  else:
    # The retrieval task reads the switch: its test row is then the validation-selected epoch's.
    c = mod.get_config("quick")
    c.data.path = write_cyclic_sequences(tmp_path / "s.txt", num_users=20, num_items=12)
    assert tasks.make_task(c, str(tmp_path / "wd")).test_at_each_eval
    with pytest.raises(ValueError, match="unknown config argument"):
      mod.get_config("quik")


def test_tiger_ml1m_shares_hstus_split_and_evaluation():
  """configs/tiger_ml1m.py: HSTU's ML-1M data, split and evaluation (history removed, whole
  catalogue), TIGER's model and content SIDs; `short` is a labelled budget run."""
  from configs import hstu_ml1m, tiger_amazon_sports, tiger_ml1m  # pylint: disable=import-outside-toplevel
  hstu, paper = hstu_ml1m.get_config(None), tiger_amazon_sports.get_config(None)
  c = tiger_ml1m.get_config(None)
  assert c.task == "generative" and c.name == "tiger_ml1m" and c.dataset_label == "ml-1m"
  assert {k: v for k, v in c.data.items() if k != "max_len"} == {k: v for k, v in hstu.data.items() if k != "max_len"}
  assert c.data.max_len == 20 and c.eval.exclude_history == hstu.eval.exclude_history
  assert {5, 10} <= set(c.eval.ks) and c.model == paper.model and c.sid.vectors == "content:tfidf"
  short = tiger_ml1m.get_config("short")
  assert short.name == "tiger_ml1m_short" and short.model == tiger_amazon_sports.get_config("short").model
  assert short.train.num_epochs == tiger_ml1m.SHORT_EPOCHS and short.train.max_steps == 0
  with pytest.raises(ValueError, match="unknown config argument"):
    tiger_ml1m.get_config("shrt")
