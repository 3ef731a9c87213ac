"""Synthetic KuaiRand-format world: determinism, the reader reads it, known structure is visible."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from recjax.data import kuairand as kr
from recjax.data import synthetic as sy
from recjax.data.sequences import sequences_from_interactions

SMALL = sy.WorldConfig(num_users=120, num_items=80, num_topics=8, mean_seq_len=40, max_seq_len=400,
                       num_tabs=2, tab_noise=(0.05, 0.9), seed=7)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
  return sy.generate_world(SMALL, tmp_path_factory.mktemp("world"))


def _file_bytes(d: str) -> dict[str, bytes]:
  return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d)) if n.endswith(".csv")}


def test_deterministic_by_seed(small_dir, tmp_path):
  again = sy.generate_world(SMALL, tmp_path / "again")
  assert _file_bytes(again) == _file_bytes(small_dir)
  other = sy.build_world(sy.WorldConfig(**{**SMALL.__dict__, "seed": 8}))
  assert not np.array_equal(other.log["video_id"], sy.build_world(SMALL).log["video_id"])


def test_files_have_official_headers(small_dir):
  names = sorted(os.listdir(small_dir))
  assert names == sorted(["log_standard_4_08_to_4_21_synth.csv", "log_standard_4_22_to_5_08_synth.csv",
                          "log_random_4_22_to_5_08_synth.csv", "user_features_synth.csv",
                          "video_features_basic_synth.csv", "world.json", "world_truth.npz",
                          "world_oracle.npz"])
  first = lambda n: open(os.path.join(small_dir, n)).readline().strip()
  assert first("log_random_4_22_to_5_08_synth.csv") == ",".join(kr.LOG_COLUMNS)
  assert first("user_features_synth.csv") == ",".join(kr.USER_FEATURE_COLUMNS)
  assert first("video_features_basic_synth.csv") == ",".join(kr.VIDEO_FEATURE_COLUMNS)


def test_reader_reads_world_like_in_memory(small_dir):
  s = kr.load_kuairand(small_dir, variant="synth", logs="all")
  mem = sequences_from_interactions(sy.make_world_interactions(SMALL))
  assert s.num_users == SMALL.num_users and s.num_items == SMALL.num_items + 1
  assert np.array_equal(s.items, mem.items) and np.array_equal(s.timestamps, mem.timestamps)
  assert all(np.array_equal(s.extras[k], mem.extras[k]) for k in s.extras)
  assert s.lengths.min() >= SMALL.min_seq_len and s.lengths.max() <= SMALL.max_seq_len
  standard = kr.load_kuairand(small_dir, variant="synth", logs="standard")
  random_log = kr.load_kuairand(small_dir, variant="synth", logs="random")
  assert len(standard.items) + len(random_log.items) == len(s.items)
  assert random_log.extras["is_rand"].all() and not standard.extras["is_rand"].any()


def test_action_bitmask_matches_log_columns():
  world = sy.build_world(SMALL)
  inter = sy.make_world_interactions(SMALL)
  order = np.lexsort((world.log["time_ms"], world.log["user_id"]))
  decoded = kr.decode_actions(inter.extras["actions"])
  for name in kr.ACTION_BITS:
    assert np.array_equal(decoded[name], world.log[name][order] == 1), name
  # The click / long-view rules of the KuaiRand README hold exactly.
  play, dur = world.log["play_time_ms"], world.log["duration_ms"]
  assert np.array_equal(world.log["is_click"] == 1, np.where(dur <= 7000, play >= dur, play > 7000))
  assert np.array_equal(world.log["long_view"] == 1, np.where(dur <= 18000, play >= dur, play > 18000))
  rates = [world.log[n].mean() for n in kr.ACTION_BITS]
  assert len(set(np.round(rates, 4))) == 8                    # each signal has its own base rate


def _per_tab_structure(world: sy.World, tab: int) -> tuple[float, float]:
  """(in-topic rate of consecutive same-user same-tab events, item-choice entropy) of one tab."""
  u, v, t = world.log["user_id"], world.log["video_id"], world.log["tab"]
  pair = (u[1:] == u[:-1]) & (t[1:] == tab) & (t[:-1] == tab)
  in_topic = (world.item_topic[v[1:]] == world.item_topic[v[:-1]])[pair].mean()
  p = np.bincount(v[t == tab], minlength=world.cfg.num_items) / (t == tab).sum()
  return float(in_topic), float(-(p[p > 0] * np.log(p[p > 0])).sum())


def test_tab_noise_is_visible():
  world = sy.build_world(sy.WorldConfig(num_users=400, num_items=200, num_topics=10, num_tabs=2,
                                        tab_noise=(0.05, 0.9), seed=1))
  quiet, noisy = _per_tab_structure(world, 0), _per_tab_structure(world, 1)
  assert quiet[0] > 0.5 and noisy[0] < 0.3            # interest-driven tab stays inside topics
  assert quiet[1] < noisy[1]                           # and its item choice has lower entropy
  t = world.log["tab"]
  assert abs(world.is_noise[t == 0].mean() - 0.05) < 0.02
  assert abs(world.is_noise[t == 1].mean() - 0.9) < 0.03


def test_sequential_signal_beats_popularity():
  world = sy.build_world(sy.WorldConfig(num_users=500, num_items=300, num_topics=10, num_tabs=1,
                                        tab_noise=(0.0,), random_exposure_rate=0.0, seed=2))
  u, v = world.log["user_id"], world.log["video_id"]
  last = np.flatnonzero(np.r_[u[1:] != u[:-1], True])
  successor_hit = (world.item_next[v[last - 1]] == v[last]).mean()
  top1 = np.argmax(np.bincount(v, minlength=world.cfg.num_items))
  assert successor_hit > 3 * (v[last] == top1).mean()
  # Without noise or random exposures, every "followed" event is its predecessor's chain successor.
  assert world.followed.mean() > 0.2
  assert np.array_equal(world.item_next[v[:-1]][world.followed[1:]], v[1:][world.followed[1:]])


def test_times_dates_and_periods():
  world = sy.build_world(SMALL)
  log = world.log
  same = log["user_id"][1:] == log["user_id"][:-1]
  assert np.all(np.diff(log["time_ms"])[same] > 0)
  assert log["date"].min() >= 20220408 and log["date"].max() <= 20220508
  assert np.all(log["hourmin"] % 100 == 0) and log["hourmin"].max() <= 2300
  assert np.all(log["date"][log["is_rand"] == 1] >= 20220422)


def test_world_json_and_truth(small_dir):
  meta = json.load(open(os.path.join(small_dir, "world.json")))
  assert meta["seed"] == 7 and meta["config"]["num_users"] == 120
  assert meta["tab_noise"] == {"0": 0.05, "1": 0.9}
  assert len(meta["ground_truth"]["item_topic"]) == SMALL.num_items
  assert sy.load_world_config(small_dir) == SMALL
  assert meta["fingerprint"] == SMALL.fingerprint() != sy.WorldConfig(**{**SMALL.__dict__, "seed": 8}).fingerprint()
  assert sy.WorldConfig(tab_noise=[0.1, 0.2, 0.3, 0.4]).fingerprint() == sy.WorldConfig(
      tab_noise=(0.1, 0.2, 0.3, 0.4)).fingerprint()          # list or tuple from a config: same key
  truth = np.load(os.path.join(small_dir, "world_truth.npz"))
  assert truth["theta_start"].shape == (120, 8) and len(truth["is_noise"]) == meta["stats"]["num_events"]
  v = kr.read_video_features(small_dir, variant="synth")
  assert [int(x) for x in v["tag"]] == meta["ground_truth"]["item_topic"]
  u = kr.read_user_features(small_dir, variant="synth")
  assert np.array_equal(u["onehot_feat1"], truth["theta_start"].argmax(1))


def test_sixteen_k_sequences_are_feasible():
  cfg = sy.WorldConfig(num_users=3, num_items=500, min_seq_len=16384, max_seq_len=16384, seed=3)
  world = sy.build_world(cfg)
  assert np.bincount(world.log["user_id"]).tolist() == [16384] * 3
  assert np.all(np.diff(world.log["time_ms"])[np.diff(world.log["user_id"]) == 0] > 0)


def test_default_world_size():
  cfg = sy.WorldConfig()
  assert (cfg.num_users, cfg.num_items, cfg.mean_seq_len) == (2000, 1000, 60.0)
  assert len(cfg.tab_noise) == cfg.num_tabs


@pytest.mark.parametrize("kw,msg", [
    ({"max_seq_len": 20000}, "max_seq_len"),
    ({"num_tabs": 3, "tab_noise": (0.1, 0.2)}, "one value per tab"),
    ({"tab_noise": (0.1, 0.2, 0.3, 1.5)}, "tab_noise values"),
    ({"num_items": 3, "num_topics": 5}, "num_items must be >= num_topics"),
    ({"variant": "Pure-1"}, "variant"),
])
def test_config_validation(kw, msg):
  with pytest.raises(ValueError, match=msg):
    sy.WorldConfig(**kw)
