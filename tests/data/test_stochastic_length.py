"""Stochastic Length: the draw's law (papers.md §3.4), the kept positions, the kept windows of a
ragged batch, and the ranking task's SL epochs (every request once, widths following kept lengths,
deterministic for resume, evaluation untouched)."""
from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from recjax.data import kuairand as kr
from recjax.data import pipeline
from recjax.data import ranking as rk
from recjax.data import synthetic as sy
from recjax.data.stochastic_length import StochasticLength, from_config


def test_threshold_and_subsample_probability():
  sl = StochasticLength(alpha=1.5, max_len=4096)
  assert sl.threshold == 512                               # 4096^0.75 exactly, not 511
  assert StochasticLength(alpha=2.0, max_len=100).threshold == 100
  n = np.array([0, 1, 512, 513, 1024, 4096])
  p = sl.subsample_probability(n)
  np.testing.assert_allclose(p, [0, 0, 0, 1 - 4096 ** 1.5 / 513 ** 2, 1 - 4096 ** 1.5 / 1024 ** 2,
                                 1 - 4096 ** 1.5 / 4096 ** 2])
  assert 0 < p[3] < 0.01                                   # just above the threshold: rarely cut
  odd = StochasticLength(alpha=1.3, max_len=1000)           # 1000^0.65 = 89.1: threshold 89
  assert odd.threshold == 89 and odd.subsample_probability(np.array([89, 90]))[0] == 0
  assert 0 <= odd.subsample_probability(np.array([90]))[0] < 0.03
  # alpha = 2: the threshold is N itself, so nothing within max_len is ever cut.
  assert not StochasticLength(alpha=2.0, max_len=64).subsample_probability(np.arange(65)).any()


def test_draw_frequencies_match_the_law_and_the_expected_load():
  sl = StochasticLength(alpha=1.4, max_len=1000)           # threshold 125
  lengths = np.repeat(np.array([50, 125, 300, 1000]), 20000)
  kept = sl.kept_lengths(lengths, np.random.default_rng(0))
  assert kept.dtype == np.int32
  for n in (50, 125):
    np.testing.assert_array_equal(kept[lengths == n], n)   # at or under the threshold: whole
  for n in (300, 1000):
    k = kept[lengths == n]
    assert set(np.unique(k)) == {125, n}                    # cut to the threshold or kept whole
    p = float(sl.subsample_probability(np.array([n]))[0])
    se = np.sqrt(p * (1 - p) / len(k))
    assert abs(np.mean(k == 125) - p) < 5 * se, (n, np.mean(k == 125), p)
    assert abs(k.mean() - sl.expected_lengths(np.array([n]))[0]) < 5 * se * (n - 125)
  # The expected quadratic cost: N^alpha from the whole draws plus at most k^2 <= N^alpha from the cut
  # ones, so O(N^alpha) (HSTU's bound), against N^2 for the whole history.
  cost = np.mean(kept[lengths == 1000].astype(np.float64) ** 2)
  assert 1000 ** 1.4 < cost < 2 * 1000 ** 1.4 < 1000 ** 2 / 30


@pytest.mark.parametrize("select", ["random", "newest"])
def test_kept_positions(select):
  sl = StochasticLength(alpha=1.5, max_len=64, select=select)
  rng = np.random.default_rng(1)
  seen = set()
  for _ in range(50):
    pos = sl.kept_positions(40, 10, rng)
    assert len(pos) == 10 and np.all(np.diff(pos) > 0) and pos[0] >= 0 and pos[-1] < 40
    seen.add(tuple(pos))
  if select == "newest":
    assert seen == {tuple(range(30, 40))}
  else:
    assert len(seen) > 40                                   # a fresh subset per draw
  np.testing.assert_array_equal(sl.kept_positions(7, 7, rng), np.arange(7))
  with pytest.raises(ValueError, match="cannot keep 8 of 7"):
    sl.kept_positions(7, 8, rng)


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="alpha must be in"):
    StochasticLength(alpha=1.0, max_len=10)
  with pytest.raises(ValueError, match="select must be one of"):
    StochasticLength(alpha=1.5, max_len=10, select="oldest")
  cfg = ml_collections.ConfigDict(dict(sl_alpha=1.5, sl_select="random", history_len=64,
                                       history_layout="padded"))
  with pytest.raises(ValueError, match="needs ranking.history_layout='ragged'"):
    from_config(cfg)
  cfg.history_layout = "ragged"
  assert from_config(cfg) == StochasticLength(alpha=1.5, max_len=64)
  cfg.sl_select = "oldest"
  with pytest.raises(ValueError, match=r"config.ranking \(sl_alpha=1.5, sl_select='oldest'.*select must be one of"):
    from_config(cfg)
  cfg.sl_select, cfg.sl_alpha = "random", 2.5
  with pytest.raises(ValueError, match=r"config.ranking \(sl_alpha=2.5.*alpha must be in"):
    from_config(cfg)
  cfg.sl_alpha = 0.0
  assert from_config(cfg) is None


WORLD = sy.WorldConfig(num_users=30, num_items=60, num_topics=5, mean_seq_len=60, max_seq_len=200,
                       num_tabs=2, seed=11)
SPLIT = rk.RankingSplit(mode="last_k", history_len=64, request_size=2, test_k=4, valid_k=2, bucket_min=8,
                        history_layout="ragged")


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
  out = sy.generate_world(WORLD, tmp_path_factory.mktemp("sl_world"))
  seqs = kr.load_kuairand(out, variant="synth", logs="all")
  return rk.ranking_examples(seqs, SPLIT, "train", rk.kuairand_context(out, "synth", seqs))


def test_kept_windows_are_subsequences_of_the_full_windows(examples):
  ex = examples
  sl = StochasticLength(alpha=1.2, max_len=64)             # threshold 12
  rows = np.flatnonzero(ex.arrays["hist_lengths"] > 20)[:6]
  assert len(rows) == 6
  rng = np.random.default_rng(2)
  lengths = ex.arrays["hist_lengths"][rows]
  keep = [sl.kept_positions(int(n), sl.threshold, rng) for n in lengths]
  full, cut = ex.batch(rows), ex.batch(rows, keep=keep)
  np.testing.assert_array_equal(cut["hist_lengths"], sl.threshold)
  assert cut["hist_ids"].shape[1] == 16                    # the bucket of 12, not of the full lengths
  for i, k in enumerate(keep):
    for f in rk.HISTORY_FIELDS:
      np.testing.assert_array_equal(cut[f][i, :len(k)], full[f][i, k], err_msg=f)
      assert not cut[f][i, len(k):].any()
  for f in ("cand_ids", "cand_labels", "request_times", "user_feats"):    # the requests themselves unchanged
    np.testing.assert_array_equal(cut[f], full[f])
  with pytest.raises(ValueError, match="ascending in"):
    ex.batch(rows[:1], keep=[np.array([3, 2])])


def test_sorted_epochs_have_a_fixed_batch_count_and_cover_every_row():
  keys = np.array([3, 0, 1, 1, 0, 3, 2, 2, 2, 0, 1])
  for epoch in range(3):
    batches = pipeline.sorted_epoch(keys, 4, seed=5, epoch=epoch)
    assert len(batches) == 3
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(keys)))
    # Sorted by key before cutting: a batch's keys are a contiguous run of the sorted keys.
    spans = sorted((keys[b].min(), keys[b].max()) for b in batches)
    assert all(hi <= spans[i + 1][0] for i, (_, hi) in enumerate(spans[:-1]))
  assert ([b.tolist() for b in pipeline.sorted_epoch(keys, 4, 5, 0)]
          != [b.tolist() for b in pipeline.sorted_epoch(keys, 4, 5, 1)])


def test_ranking_task_stochastic_length_epochs(tmp_path):
  from configs import hstu_rank_synthetic   # pylint: disable=import-outside-toplevel
  from recjax import tasks                  # pylint: disable=import-outside-toplevel
  config = hstu_rank_synthetic.get_config("quick")
  config.ranking.update(dict(history_layout="ragged", bucket_min=2, sl_alpha=1.2))
  task = tasks.make_task(config, str(tmp_path))
  sl, ex = task.stochastic_length, task.examples["train"]
  assert sl is not None and sl.max_len == config.ranking.history_len
  lengths = ex.arrays["hist_lengths"]
  assert (lengths > sl.threshold).any()
  b = config.train.batch_size
  ds = task.train_dataset(b, 2, seed=4)
  per_epoch = task.steps_per_epoch(b)
  assert len(ds) == 2 * per_epoch and per_epoch == -(-len(ex) // b)
  by_epoch = []
  for e in range(2):
    seen, kept = [], {}
    for i in range(e * per_epoch, (e + 1) * per_epoch):
      batch = ds[i]
      real = batch["cand_mask"].any(1)
      w = batch["hist_ids"].shape[1]
      assert w == ex.history.width(batch["hist_lengths"][real])           # as wide as its kept histories
      for row in np.flatnonzero(real):
        key = tuple(batch["cand_ids"][row])
        seen.append(key)
        kept[key] = int(batch["hist_lengths"][row])
    assert sorted(seen) == sorted(map(tuple, ex.arrays["cand_ids"]))   # every request once per epoch
    full = dict(zip(map(tuple, ex.arrays["cand_ids"]), lengths))
    assert all(k in (full[c], sl.threshold) and (k == full[c] or full[c] > sl.threshold)
               for c, k in kept.items())
    assert any(k < full[c] for c, k in kept.items())       # some histories were subsampled
    by_epoch.append(kept)
  assert by_epoch[0] != by_epoch[1]                         # a fresh draw per epoch
  again = task.train_dataset(b, 2, seed=4)                  # a restarted run reads the same batches
  for i in (0, per_epoch + 1):
    for k, v in ds[i].items():
      np.testing.assert_array_equal(again[i][k], v, err_msg=k)
  # Evaluation reads whole histories: the same parameters score the same with SL off.
  import jax                                    # pylint: disable=import-outside-toplevel
  from recjax.models import init_params         # pylint: disable=import-outside-toplevel
  config.ranking.sl_alpha = 0.0
  plain = tasks.make_task(config, str(tmp_path))
  assert plain.stochastic_length is None
  model, _, _ = task.build_model()
  params = init_params(model, jax.random.key(0), task.init_batch())
  got, want = task.evaluator(model)(params, "test"), plain.evaluator(model)(params, "test")
  assert got["mean"]["ne"] == want["mean"]["ne"] and got["mean"]["auc"] == want["mean"]["auc"]
