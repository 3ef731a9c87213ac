"""Ranking protocol: brute-force reconstruction of every request, time cuts, and leakage tests."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recjax.data import kuairand as kr
from recjax.data import ranking as rk
from recjax.data import synthetic as sy
from recjax.data.types import UserSequences

WORLD = sy.WorldConfig(num_users=40, num_items=60, num_topics=5, mean_seq_len=25, max_seq_len=120,
                       num_tabs=2, seed=5)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
  return sy.generate_world(WORLD, tmp_path_factory.mktemp("rank_world"))


@pytest.fixture(scope="module")
def seqs(world_dir):
  return kr.load_kuairand(world_dir, variant="synth", logs="all")


CONFIGS = [rk.RankingSplit(mode="last_k", history_len=8, request_size=1, test_k=3, valid_k=2),
           rk.RankingSplit(mode="last_k", history_len=6, request_size=4, test_k=5, valid_k=3, min_history=2),
           rk.RankingSplit(mode="time_cut", history_len=10, request_size=3, valid_quantile=0.7,
                           test_quantile=0.85),
           # Only the newest training events are candidates; older ones stay history.
           rk.RankingSplit(mode="last_k", history_len=8, request_size=3, test_k=2, valid_k=2, train_k=5,
                           min_history=3),
           rk.RankingSplit(mode="time_cut", history_len=10, request_size=2, valid_quantile=0.7,
                           test_quantile=0.85, train_k=4)]


def _brute_force(seqs: UserSequences, cfg: rk.RankingSplit, split: str):
  """Per user loop: the split's candidates, chunked into requests, each with its history events."""
  t = seqs.timestamps
  if cfg.mode == "time_cut":
    cuts = (int(np.quantile(t, cfg.valid_quantile, method="lower")),
            int(np.quantile(t, cfg.test_quantile, method="lower")))
  requests = []
  for k in range(seqs.num_users):
    lo, hi = int(seqs.offsets[k]), int(seqs.offsets[k + 1])
    of = {}
    for e in range(lo, hi):
      if cfg.mode == "last_k":
        from_end = hi - e
        of[e] = "test" if from_end <= cfg.test_k else "valid" if from_end <= cfg.test_k + cfg.valid_k else "train"
      else:
        of[e] = "test" if t[e] >= cuts[1] else "valid" if t[e] >= cuts[0] else "train"
    trains = [e for e in range(lo, hi) if of[e] == "train"]
    newest_train = set(trains[-cfg.train_k:]) if cfg.train_k else set(trains)
    mine = [e for e in range(lo, hi) if of[e] == split and e - lo >= cfg.min_history
            and (split != "train" or e in newest_train)]
    for i in range(0, len(mine), cfg.request_size):
      cands = mine[i:i + cfg.request_size]
      hist = list(range(max(lo, cands[0] - cfg.history_len), cands[0]))
      requests.append((k, cands, hist))
  return requests


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("split", rk.SPLITS)
def test_requests_match_brute_force(seqs, cfg, split):
  ex = rk.ranking_examples(seqs, cfg, split)
  want = _brute_force(seqs, cfg, split)
  a = ex.arrays
  assert len(ex) == len(want) > 0
  labels = rk.event_labels(seqs, cfg.tasks)
  t0 = seqs.timestamps.min()
  for r, (k, cands, hist) in enumerate(want):
    assert a["user_index"][r] == k and a["user_ids"][r] == seqs.user_ids[k]
    n = len(hist)
    assert a["hist_lengths"][r] == n
    assert a["hist_ids"][r, :n].tolist() == seqs.items[hist].tolist() and not a["hist_ids"][r, n:].any()
    assert a["hist_actions"][r, :n].tolist() == seqs.extras["actions"][hist].tolist()
    assert a["hist_tab"][r, :n].tolist() == (seqs.extras["tab"][hist] + 1).tolist()
    assert a["hist_times"][r, :n].tolist() == (seqs.timestamps[hist] - t0).tolist()
    assert a["request_times"][r] == seqs.timestamps[cands[0]] - t0
    m = len(cands)
    assert a["cand_event"][r, :m].tolist() == cands and (a["cand_event"][r, m:] == -1).all()
    assert a["cand_ids"][r, :m].tolist() == seqs.items[cands].tolist() and not a["cand_ids"][r, m:].any()
    assert a["cand_mask"][r].tolist() == [1.0] * m + [0.0] * (cfg.request_size - m)
    assert np.array_equal(a["cand_labels"][r, :m], labels[cands]) and not a["cand_labels"][r, m:].any()
  for name in rk.INPUT_FIELDS + rk.TARGET_FIELDS:
    assert len(a[name]) == len(ex)


def test_watch_buckets_and_ratio(seqs):
  ex = rk.ranking_examples(seqs, CONFIGS[0], "train")
  a = ex.arrays
  ratio = np.clip(seqs.extras["play_time_ms"] / seqs.extras["duration_ms"], 0, rk.MAX_WATCH_RATIO)
  e = a["cand_event"][:, 0]
  np.testing.assert_allclose(a["cand_watch_ratio"][:, 0], ratio[e], rtol=1e-6)
  r = 0
  n = a["hist_lengths"][r]
  hist = np.arange(e[r] - n, e[r])
  want = [1 + sum(x >= edge for edge in rk.WATCH_EDGES) for x in ratio[hist]]
  assert a["hist_watch"][r, :n].tolist() == want
  assert set(np.unique(a["hist_watch"])) <= set(range(len(rk.WATCH_EDGES) + 2))


def test_kuairand_history_actions_are_the_bitmask(seqs):
  labels = rk.event_labels(seqs, "kuairand")
  assert np.array_equal(rk.pack_bits(labels), seqs.extras["actions"])


def test_no_future_in_history_and_time_cut_keeps_training_in_the_past(seqs):
  for cfg in CONFIGS:
    for split in rk.SPLITS:
      a = rk.ranking_examples(seqs, cfg, split).arrays
      real = np.arange(cfg.history_len)[None] < a["hist_lengths"][:, None]
      # A history event is never after its request's time, and never one of the candidates.
      assert (np.where(real, a["hist_times"], 0) <= a["request_times"][:, None]).all()
      first = a["cand_event"][:, 0]
      starts = first - a["hist_lengths"]
      assert (starts >= 0).all()
  cfg = CONFIGS[2]
  train = rk.ranking_examples(seqs, cfg, "train")
  test = rk.ranking_examples(seqs, cfg, "test")
  valid_cut, test_cut = (c - seqs.timestamps.min() for c in test.cut_times)
  ev = train.arrays["cand_event"]
  cand_times = np.where(ev >= 0, seqs.timestamps[np.maximum(ev, 0)] - seqs.timestamps.min(), -1)
  assert cand_times.max() < valid_cut and train.arrays["hist_times"].max() < valid_cut
  assert (test.arrays["request_times"] >= test_cut).all()


@pytest.mark.parametrize("cfg", CONFIGS[1:])
def test_perturbing_a_candidates_targets_changes_no_input_of_its_request_or_earlier(seqs, cfg):
  """Labels, actions, watch time and timestamp of the candidates of one request: only targets move
  (and the inputs of later requests, whose history may hold those events as the past)."""
  base = rk.ranking_examples(seqs, cfg, "test")
  r = int(np.argmax(base.arrays["cand_mask"].sum(1) >= 2))
  victims = base.arrays["cand_event"][r][base.arrays["cand_event"][r] >= 0]
  assert len(victims) >= 2
  extras = dict(seqs.extras)
  extras["actions"] = extras["actions"].copy()
  extras["actions"][victims] ^= 0xFF
  extras["play_time_ms"] = extras["play_time_ms"].copy()
  extras["play_time_ms"][victims] *= 3
  times = seqs.timestamps.copy()
  if cfg.mode == "last_k":   # (a global time cut would move with the times themselves)
    # The request's later candidates move in time (their own timestamps are targets, not inputs).
    times[victims[1:]] = times[victims[-1]]
  moved = rk.ranking_examples(dataclasses.replace(seqs, extras=extras, timestamps=times), cfg, "test")
  assert len(moved) == len(base)
  k = base.arrays["user_index"][r]
  same_or_earlier = (base.arrays["user_index"] != k) | (base.arrays["request_times"] <= base.arrays["request_times"][r])
  same_or_earlier[r] = True
  for name in rk.INPUT_FIELDS:
    np.testing.assert_array_equal(base.arrays[name][same_or_earlier], moved.arrays[name][same_or_earlier], name)
  assert not np.array_equal(base.arrays["cand_labels"][r], moved.arrays["cand_labels"][r])
  assert not np.array_equal(base.arrays["cand_watch_ratio"][r], moved.arrays["cand_watch_ratio"][r])


def test_rating_tasks_and_bad_settings():
  ratings = np.array([5, 3, 4, 1, 5, 2], np.float32)
  s = UserSequences(np.array([1]), np.array([0, 6]), np.arange(1, 7, dtype=np.int32),
                    np.arange(6, dtype=np.int64) * 10, 7, "<test>", extras={"rating": ratings})
  cfg = rk.RankingSplit(tasks="rating", history_len=3, test_k=2, valid_k=1)
  a = rk.ranking_examples(s, cfg, "test").arrays
  assert a["cand_labels"][:, 0].tolist() == [[1, 1], [0, 0]]            # ratings 5 and 2
  assert a["hist_ids"][1].tolist() == [3, 4, 5] and a["hist_actions"][1].tolist() == [1, 0, 3]
  assert not a["hist_tab"].any() and not a["hist_watch"].any()         # no tabs, no play times
  assert a["user_feats"].shape == (2, 0) and a["cand_feats"].shape == (2, 1, 0)
  assert a["hist_feats"].shape == (2, 3, 0)
  with pytest.raises(ValueError, match="extras\\['actions'\\]"):
    rk.ranking_examples(s, rk.RankingSplit(), "test")
  with pytest.raises(ValueError, match="mode"):
    rk.RankingSplit(mode="random")
  with pytest.raises(ValueError, match="split must be"):
    rk.ranking_examples(s, cfg, "dev")
  assert "last 2 events are test" in cfg.describe()


def test_kuairand_context(world_dir, seqs):
  ctx = rk.kuairand_context(world_dir, "synth", seqs)
  assert ctx.user_feats.shape == (seqs.num_users, len(rk.KUAIRAND_USER_FEATURES))
  assert ctx.item_feats.shape == (seqs.num_items, len(rk.KUAIRAND_ITEM_FEATURES))
  assert not ctx.item_feats[0].any()                                    # padding row
  assert (ctx.user_feats.max(0) < np.array(ctx.user_vocab)).all()
  assert (ctx.item_feats.max(0) < np.array(ctx.item_vocab)).all()
  # The synthetic tag is the item's topic: items of one topic share the tag code.
  topic = np.asarray(sy.build_world(WORLD).item_topic)
  tag = ctx.item_feats[1:, rk.KUAIRAND_ITEM_FEATURES.index("tag")]
  assert all(len(set(tag[topic == k])) == 1 for k in range(WORLD.num_topics))
  assert len(set(tag)) == WORLD.num_topics
  a = rk.ranking_examples(seqs, CONFIGS[1], "test", context=ctx).arrays
  np.testing.assert_array_equal(a["user_feats"], ctx.user_feats[a["user_index"]])
  np.testing.assert_array_equal(a["cand_feats"], ctx.item_feats[a["cand_ids"]])
  np.testing.assert_array_equal(a["hist_feats"], ctx.item_feats[a["hist_ids"]])


def test_encode_categorical_unknowns():
  codes, vocab = rk.encode_categorical({"a": np.array(["x", "", "y", "x"], dtype=object),
                                        "b": np.array([2.0, np.nan, 2.0, 5.0])})
  assert codes.tolist() == [[1, 1], [0, 0], [2, 1], [1, 2]] and vocab == (3, 3)


@pytest.mark.parametrize("name", ["ml-100k", "ml-1m"])
def test_movielens_context(name):
  from recjax.data import movielens  # pylint: disable=import-outside-toplevel
  from tests.conftest import shared_data  # pylint: disable=import-outside-toplevel
  path = shared_data(name)
  seqs = (movielens.load_movielens("ml-100k", path) if name == "ml-100k"
          else movielens.read_ml1m_sequences(path, with_timestamps=True))
  ctx = rk.movielens_context(path, name, seqs)
  assert ctx.user_names == rk.ML_USER_FEATURES
  assert (ctx.user_feats > 0).all()                         # every user is in the users file
  assert (ctx.user_feats.max(0) < np.array(ctx.user_vocab)).all()
  toy_story = ctx.item_feats[1]                             # "Toy Story (1995)": Animation|Children's|Comedy
  genres = {n[len("genre_"):] for n, code in zip(ctx.item_names, toy_story) if n.startswith("genre_") and code == 2}
  assert genres == {"Animation", "Children's", "Comedy"}
  assert not ctx.item_feats[0].any()
  a = rk.ranking_examples(seqs, rk.RankingSplit(tasks="rating", history_len=20, test_k=2, valid_k=2),
                          "test", context=ctx).arrays
  assert len(a["user_ids"]) == 2 * seqs.num_users and a["cand_labels"].shape[-1] == 2
  assert a["cand_feats"].shape[-1] == len(ctx.item_names)
  np.testing.assert_array_equal(a["user_feats"], ctx.user_feats[a["user_index"]])
  rating = seqs.extras["rating"][a["cand_event"][:, 0]]
  np.testing.assert_array_equal(a["cand_labels"][:, 0], np.stack([rating >= 4, rating == 5], 1))


def test_candidate_oracle_and_its_metrics(world_dir, seqs):
  from recjax.metrics import ranking as rm  # pylint: disable=import-outside-toplevel
  cfg = rk.RankingSplit(history_len=8, request_size=2, test_k=6, valid_k=0)
  ex = rk.ranking_examples(seqs, cfg, "test")
  oracle = sy.load_oracle(world_dir, seqs, logs="all")
  p = rk.candidate_values(oracle, ex)
  ev = ex.arrays["cand_event"]
  r, c = np.argwhere(ev >= 0)[5]
  assert p[r, c].tolist() == [oracle[t][ev[r, c]] for t in ex.task_names]
  assert not p[ev < 0].any()
  mask = ex.arrays["cand_mask"].reshape(-1)
  out = rm.multitask_metrics(p.reshape(-1, len(ex.task_names)), ex.arrays["cand_labels"].reshape(-1, len(ex.task_names)),
                             ex.task_names, mask_N=mask, user_N=np.repeat(ex.arrays["user_ids"], 2))
  assert out["is_click"]["ne"] < 1.0
  with pytest.raises(ValueError, match="lack the task"):
    rk.candidate_values({"is_click": oracle["is_click"]}, ex)
