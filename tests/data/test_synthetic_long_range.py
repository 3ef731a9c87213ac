"""The planted long-range structure of the synthetic world and its signal measure."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
from scipy import special

from recjax.data import kuairand
from recjax.data import synthetic as sy
from recjax.data import synthetic_signal as ss

# Pinned on main before the dormant settings existed (generator version 2).
DEFAULT_FINGERPRINT = "f50c38b95f4d"
TINY = sy.WorldConfig(num_users=40, num_items=60, num_topics=4, mean_seq_len=30, max_seq_len=300, seed=3)
TINY_FINGERPRINT, TINY_DIGEST = "76863aacf81c", "a84a0a1c578367af"
LONG = sy.WorldConfig(num_users=24, num_items=120, num_topics=8, mean_seq_len=900, seq_len_sigma=0.2,
                      min_seq_len=700, max_seq_len=1200, dormant_early_rate=0.1,
                      dormant_return_rate=0.1, seed=5)
# LONG's logs, oracle and planted phases as generated before `dormant_topics` existed (one per user).
LONG_DIGEST = "11ae790246a978da"
MULTI = dataclasses.replace(LONG, dormant_topics=3, dormant_early_rate=0.3, dormant_return_rate=0.15)


def _digest(world):
  h = hashlib.sha256()
  for k in sorted(world.log):
    h.update(world.log[k].tobytes())
  for k in sorted(world.oracle):
    h.update(np.round(world.oracle[k], 12).tobytes())
  if world.long_range is not None:
    h.update(world.long_range["planted_phase"].tobytes())
  return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def long_world():
  return sy.build_world(LONG)


@pytest.fixture(scope="module")
def multi_world():
  return sy.build_world(MULTI)


def test_defaults_unchanged():
  assert sy.WorldConfig().fingerprint() == DEFAULT_FINGERPRINT
  assert TINY.fingerprint() == TINY_FINGERPRINT and TINY.generator_version == 2
  world = sy.build_world(TINY)
  assert world.long_range is None and _digest(world) == TINY_DIGEST
  assert not any(k.startswith("dormant_") for k in TINY.as_dict())
  assert LONG.generator_version == sy.LONG_RANGE_VERSION
  assert sy.WorldConfig(**{**TINY.__dict__, "dormant_return_rate": 0.1}).fingerprint() != TINY_FINGERPRINT


def test_dormant_topic_returns_after_a_gap(long_world):
  lr, w = long_world.long_range, long_world
  user, n = w.log["user_id"], LONG.num_users
  lengths = np.bincount(user, minlength=n)
  pos = np.arange(len(user)) - np.concatenate([[0], np.cumsum(lengths)[:-1]])[user]
  frac = pos / (lengths[user] - 1)
  on_dormant = w.event_topic == lr["dormant_topic"][user, 0]
  gap = (frac >= LONG.dormant_early_until + 0.01) & (frac < LONG.dormant_return_from - 0.01)
  early, late = frac < LONG.dormant_early_until, frac >= LONG.dormant_return_from
  assert (lr["planted_phase"][gap] == 0).all()
  assert on_dormant[gap].mean() < 0.005          # the least-liked topic: the base world barely shows it
  assert 0.07 < on_dormant[early].mean() < 0.13 and 0.07 < on_dormant[late].mean() < 0.13
  for u in range(n):                              # every user's topic goes quiet for >= 400 events
    idx = np.flatnonzero((user == u) & (lr["planted_phase"] > 0))
    assert np.diff(pos[idx]).max() >= 400
  assert (w.item_topic[w.log["video_id"][lr["planted_phase"] > 0]] == lr["dormant_topic"][user[lr["planted_phase"] > 0], 0]).all()


def test_one_dormant_topic_is_the_original_generator(long_world):
  assert LONG.dormant_topics == 1 and "dormant_topics" not in LONG.as_dict()
  assert _digest(long_world) == LONG_DIGEST
  assert long_world.long_range["dormant_topic"].shape == (LONG.num_users, 1)
  assert "dormant_topics" in MULTI.as_dict() and MULTI.fingerprint() != LONG.fingerprint()


def test_several_dormant_topics_each_with_its_own_affinity(multi_world):
  w, lr, t = multi_world, multi_world.long_range, MULTI.dormant_topics
  user = w.log["user_id"]
  assert lr["dormant_topic"].shape == lr["old_affinity"].shape == (MULTI.num_users, t)
  # The T dormant topics are the user's T of least base interest, all distinct.
  interest = w.theta_start + w.theta_end
  for u in range(MULTI.num_users):
    d = lr["dormant_topic"][u]
    assert len(set(d)) == t and interest[u, d].max() <= np.delete(interest[u], d).min()
  planted = lr["planted_phase"] > 0
  topic = w.event_topic[planted]
  slot = np.argmax(lr["dormant_topic"][user[planted]] == topic[:, None], axis=1)
  assert (lr["dormant_topic"][user[planted], slot] == topic).all()            # one of the user's T
  assert (w.item_topic[w.log["video_id"][planted]] == topic).all()
  assert np.bincount(slot, minlength=t).min() > 0.25 * planted.sum() / t       # every topic is used
  expected = sy.feedback_probabilities(lr["old_affinity"][user[planted], slot],
                                       w.item_duration_ms[w.log["video_id"][planted]])
  for name in kuairand.ACTION_BITS:
    np.testing.assert_allclose(w.oracle[name][planted], expected[name])


def test_several_topics_keep_the_gap_open(multi_world):
  """The point of dormant_topics: at the same rates (as many return-phase events) each topic returns
  more sparsely, its affinity less visible in the newest window, so the full-vs-newest gap is wider."""
  single = sy.build_world(dataclasses.replace(MULTI, dormant_topics=1))
  one, many = (ss.long_range_signal(w, window=128) for w in (single, multi_world))
  assert abs(many["planted_targets"] / one["planted_targets"] - 1) < 0.1
  gap = lambda s: (s["planted_targets_only"]["ne_newest_128"]["mean"]   # noqa: E731
                   - s["planted_targets_only"]["ne_full_history"]["mean"])
  assert gap(many) > gap(one) > 0


def test_returned_feedback_follows_the_old_affinity(long_world):
  lr, w = long_world.long_range, long_world
  user = w.log["user_id"]
  ret = lr["planted_phase"] == 2
  expected = sy.feedback_probabilities(lr["old_affinity"][user[ret], 0], w.item_duration_ms[w.log["video_id"][ret]])
  for name in kuairand.ACTION_BITS:
    np.testing.assert_allclose(w.oracle[name][ret], expected[name])
  # The early phase's realised engagement predicts the returned one across users (same latent a_u).
  clicks = [[w.log["long_view"][(user == u) & (lr["planted_phase"] == p)].mean() for p in (1, 2)]
            for u in range(LONG.num_users)]
  early_rate, late_rate = np.array(clicks).T
  assert np.corrcoef(early_rate, late_rate)[0, 1] > 0.5


def test_signal_beyond_the_newest_256(long_world):
  sig = ss.long_range_signal(long_world, window=256)["planted_targets_only"]
  ne = {k: v["mean"] for k, v in sig.items()}
  assert ne["ne_oracle"] < ne["ne_full_history"] < ne["ne_newest_256"] - 0.005 < ne["ne_no_history"]
  default = ss.long_range_signal(sy.build_world(sy.WorldConfig(
      num_users=30, num_items=60, num_topics=4, mean_seq_len=400, min_seq_len=300, seq_len_sigma=0.2)))
  assert default["planted_events"] == 0 and default["target_events"] > 0
  d = default["all_targets"]
  assert d["ne_full_history"] == d["ne_newest_256"] == d["ne_oracle"]


@pytest.mark.parametrize("which", ["long_world", "multi_world"])
def test_window_posterior_matches_a_direct_sum(which, request):
  """The cumulative-sum posterior equals a loop over the user's readable planted events of the
  target's dormant topic (with several dormant topics, only that topic's events inform it)."""
  world = request.getfixturevalue(which)
  window = 64
  p = ss.predictions(world, window)
  std = world.log["is_rand"] == 0
  topic = world.event_topic[std]
  planted = np.flatnonzero(p["phase"] > 0)
  dur = world.item_duration_ms[world.log["video_id"][std]]
  labels = np.stack([world.log[n][std] for n in kuairand.ACTION_BITS], 1)
  log_prior = ss._log_prior(world.cfg.dormant_affinity_sigma)   # pylint: disable=protected-access
  for j in planted[np.flatnonzero(p["position"][planted] > 500)[[3, 40]]]:
    start = j - p["position"][j]
    for key, lo in (("p_newest", j - window), ("p_full", start)):
      ll = log_prior.copy()
      for i in range(max(lo, start), j):
        if p["phase"][i] and topic[i] == topic[j]:
          pr = ss.feedback_probs_grid(dur[i:i + 1])[0]                     # [G, F]
          ll += (labels[i] * np.log(pr) + (1 - labels[i]) * np.log1p(-pr)).sum(1)
      want = special.softmax(ll) @ ss.feedback_probs_grid(dur[j:j + 1])[0]
      np.testing.assert_allclose(p[key][j], want, rtol=1e-9)


def test_written_world_carries_the_truth_and_signal(tmp_path):
  cfg = sy.WorldConfig(**{**TINY.__dict__, "dormant_early_rate": 0.2, "dormant_return_rate": 0.2,
                          "variant": "lr"})
  out = sy.generate_world(cfg, tmp_path / "w")
  meta = json.loads((tmp_path / "w" / "world.json").read_text())
  assert meta["generator_version"] == 3 and meta["config"]["dormant_return_rate"] == 0.2
  assert sy.load_world_config(out) == cfg
  with np.load(tmp_path / "w" / "world_truth.npz") as z:
    assert {"dormant_topic", "old_affinity", "planted_phase"} <= set(z.files)
  assert json.loads((tmp_path / "w" / sy.SIGNAL_FILE).read_text())["window"] == 256
  # load_oracle carries the planted phase of the reader's events (long-range worlds only).
  seqs = kuairand.load_kuairand(out, variant="lr", logs="standard")
  world = sy.build_world(cfg)
  np.testing.assert_array_equal(sy.load_oracle(out, seqs)["planted_phase"],
                                world.long_range["planted_phase"][world.log["is_rand"] == 0])
  plain = sy.generate_world(TINY, tmp_path / "d")
  assert not (tmp_path / "d" / sy.SIGNAL_FILE).exists()
  assert "planted_phase" not in sy.load_oracle(plain, kuairand.load_kuairand(plain, variant="synth", logs="all"), "all")
  assert "dormant_return_rate" not in json.loads((tmp_path / "d" / "world.json").read_text())["config"]
  assert sy.load_world_config(plain) == TINY


def test_bad_dormant_settings():
  with pytest.raises(ValueError, match="dormant gap"):
    sy.WorldConfig(dormant_return_rate=0.1, dormant_early_until=0.9, dormant_return_from=0.5)
  with pytest.raises(ValueError, match="dormant_early_rate"):
    sy.WorldConfig(dormant_early_rate=1.5)
  for t in (0, 20):
    with pytest.raises(ValueError, match="dormant_topics"):
      sy.WorldConfig(dormant_return_rate=0.1, num_topics=20, dormant_topics=t)


def test_long_world_configs_resolve():
  from configs import long_sequences_hstu_rank, long_world   # pylint: disable=import-outside-toplevel
  import dataclasses   # pylint: disable=import-outside-toplevel
  from recjax.data import ranking as rk   # pylint: disable=import-outside-toplevel
  names = {f.name for f in dataclasses.fields(rk.RankingSplit)}
  for preset in (long_world.WORLD, long_world.QUICK_WORLD, long_world.CPU_WORLD, long_world.CPU_MULTI_WORLD):
    cfg = sy.WorldConfig(**preset)
    assert cfg.long_range and cfg.generator_version == sy.LONG_RANGE_VERSION
  for arg in (None, "newest256", "quick"):
    c = long_sequences_hstu_rank.get_config(arg)
    split = rk.RankingSplit(**{k: v for k, v in c.ranking.items() if k in names})
    assert split.history_layout == "ragged" and split.buckets()[-1] == c.model.max_history
