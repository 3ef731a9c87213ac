"""The ragged history layout: windows cut per batch from the CSR sequences equal the padded ones."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recjax.data import kuairand as kr
from recjax.data import pipeline
from recjax.data import ranking as rk
from recjax.data import synthetic as sy

WORLD = sy.WorldConfig(num_users=30, num_items=60, num_topics=5, mean_seq_len=40, max_seq_len=150,
                       num_tabs=2, seed=7)
CONFIGS = [rk.RankingSplit(mode="last_k", history_len=32, request_size=1, test_k=3, valid_k=2, bucket_min=4),
           rk.RankingSplit(mode="time_cut", history_len=24, request_size=3, valid_quantile=0.7,
                           test_quantile=0.85, bucket_min=8, min_history=0)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  out = sy.generate_world(WORLD, tmp_path_factory.mktemp("ragged_world"))
  seqs = kr.load_kuairand(out, variant="synth", logs="all")
  return seqs, rk.kuairand_context(out, "synth", seqs)


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("split", rk.SPLITS)
def test_ragged_windows_equal_the_padded_windows(world, cfg, split):
  seqs, context = world
  padded = rk.ranking_examples(seqs, cfg, split, context)
  ragged = rk.ranking_examples(seqs, dataclasses.replace(cfg, history_layout="ragged"), split, context)
  assert len(padded) == len(ragged) > 0
  assert not any(k in ragged.arrays for k in rk.HISTORY_FIELDS)   # nothing [N, H] up front
  rng = np.random.default_rng(0)
  for rows in (np.arange(len(padded)), rng.choice(len(padded), min(5, len(padded)), replace=False)):
    want = padded.batch(rows)
    full = ragged.batch(rows, width=cfg.history_len)
    assert set(full) == set(want)
    for k in want:
      np.testing.assert_array_equal(full[k], want[k], err_msg=k)
    # At its bucket width the batch holds the same windows, cut where only padding follows.
    got = ragged.batch(rows)
    w = got["hist_ids"].shape[1]
    assert w in cfg.buckets() and w >= want["hist_lengths"].max()
    assert w == cfg.buckets()[0] or w // 2 < want["hist_lengths"].max()
    for k in rk.HISTORY_FIELDS:
      np.testing.assert_array_equal(got[k], want[k][:, :w], err_msg=k)
      assert not want[k][:, w:].any()


def test_buckets_and_bad_widths(world):
  seqs, _ = world
  cfg = rk.RankingSplit(history_len=40, bucket_min=8, history_layout="ragged", test_k=2, valid_k=0)
  assert cfg.buckets() == (8, 16, 32, 40)
  assert rk.RankingSplit(history_len=16, bucket_min=16).buckets() == (16,)
  ex = rk.ranking_examples(seqs, cfg, "train")
  lengths = ex.arrays["hist_lengths"]
  np.testing.assert_array_equal(np.asarray(cfg.buckets())[ex.length_bucket()] >= lengths, True)
  with pytest.raises(ValueError, match="does not fit width 4"):
    ex.batch(np.flatnonzero(lengths > 4)[:2], width=4)
  with pytest.raises(ValueError, match="history_layout must be one of"):
    rk.RankingSplit(history_layout="jagged")
  assert "widths bucketed (8, 16, 32, 40)" in cfg.describe()
  assert "bucketed" not in rk.RankingSplit().describe()


def test_bucketed_epochs_cover_every_row_once_per_epoch():
  groups = np.array([0, 2, 2, 1, 0, 2, 2, 2, 1, 0, 0, 2])
  steps = pipeline.bucketed_steps(groups, 2)
  assert steps == 2 + 1 + 3
  ds = pipeline.bucketed_batch_dataset(groups, lambda rows: rows, batch_size=2, num_epochs=2, seed=3)
  assert len(ds) == 2 * steps
  epochs = [[ds[i] for i in range(e * steps, (e + 1) * steps)] for e in range(2)]
  for batches in epochs:
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(groups)))
    assert all(len(set(groups[b])) == 1 and 1 <= len(b) <= 2 for b in batches)
  assert [b.tolist() for b in epochs[0]] != [b.tolist() for b in epochs[1]]     # reshuffled per epoch
  again = pipeline.bucketed_batch_dataset(groups, lambda rows: rows, batch_size=2, num_epochs=2, seed=3)
  assert all(np.array_equal(ds[i], again[i]) for i in range(len(ds)))          # deterministic
