"""HSTU ranker on the long-history synthetic world (issue 18's long-sequence study, papers.md §2).

Data: `configs/long_world.WORLD` (256 users, histories 1k-16k events, planted dormant topics that
return after thousands of events; `world_signal.json` holds the oracle NE with the newest 256
events vs the full history), generated from the seed into <workdir>/data and read through the
KuaiRand reader; the 8 feedbacks are the tasks, world_oracle.npz the oracle.
Protocol (recjax/data/ranking.py): per user the last 64 events are test, the 64 before validation
(the last 10% of a history is the dormant topic's return phase), requests of 16 candidates sharing
the <= 4,096 events before them. Histories are cut per batch from the ragged sequences
(`history_layout="ragged"`), batch widths bucketed 256, 512, ..., 4,096, training batches drawn
from one bucket: no [requests, 4,096] arrays up front, and a batch is as wide as its longest
history's bucket.
Model: HSTU ranker as configs/hstu_rank_synthetic.py (2 blocks x 2 heads, D = 64, time bias,
user features as prefix tokens), max_history 4,096.

Command:   python -m experiments.run --config=configs/long_sequences_hstu_rank.py
Newest 256: python -m experiments.run --config=configs/long_sequences_hstu_rank.py:newest256
           (the same world and candidates, histories cut to the newest 256 events: the baseline
           the planted signal is measured against)
Quick:     python -m experiments.run --config=configs/long_sequences_hstu_rank.py:quick  (32 users,
           histories 300-1,200, history 512, a few steps)
Study:     configs/long_sequences.py builds issue 18's arms on this config (its `hstu_full` and
           `hstu_newest256` arms are this config and `newest256` on the chosen world).
Hardware:  meant for an accelerator; on the 2-core CPU box a 4k-history step of full-attention HSTU
           is seconds per request batch (issue 18's table), so the full run is hours there.
Result:    this config's two arms ran as configs/long_sequences.py's `hstu_full` and `hstu_newest256` on
           the `cpu` world (that docstring's Result, results/long_sequences/summary/); this config's
           own `WORLD` (histories to 16k) has not run. The generator's own measure of what is
           learnable is in world_signal.json of the generated world.
"""
import ml_collections

from configs import hstu_rank_synthetic, long_world


def get_config(arg: str | None = None):
  c = hstu_rank_synthetic.ranking_base("long_sequences_hstu_rank")
  c.data.world = dict(long_world.WORLD)
  c.ranking.update(dict(history_len=4096, request_size=16, test_k=64, valid_k=64, min_history=64))
  c.ranking.history_layout = "ragged"
  c.ranking.bucket_min = 256
  c.train.batch_size = 16
  c.train.num_epochs = 4
  c.eval.batch_size = 16
  c.model = ml_collections.ConfigDict(dict(
      name="hstu_ranker", dim=64, num_blocks=2, num_heads=2, dqk=32, dv=32, max_history=4096,
      attn_norm_len=4112, dropout=0.3, use_time_bias=True, num_time_buckets=129, backend="xla",
      user_context="tokens"))
  if arg == "newest256":
    c.name += "_newest256"
    cut_history(c, 256)
  elif arg == "quick":
    apply_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use 'quick' or 'newest256'")
  return c


def cut_history(c: ml_collections.ConfigDict, n: int) -> ml_collections.ConfigDict:
  """Histories cut to the newest `n` events: the split's history_len, the ragged buckets (no wider than
  n / 4 to start), the model's recency table and its attention normaliser (n + the candidates)."""
  c.ranking.history_len = n
  c.ranking.bucket_min = min(c.ranking.bucket_min, max(n // 4, 1))
  c.model.max_history = n
  c.model.attn_norm_len = n + c.ranking.request_size
  return c


def apply_quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """QUICK_WORLD (32 users, histories 300-1,200), history 512, requests of 8, a few steps."""
  hstu_rank_synthetic.apply_quick(c)
  c.data.world = dict(long_world.QUICK_WORLD)
  c.ranking.update(dict(request_size=8, test_k=8, valid_k=8, min_history=8, bucket_min=64))
  cut_history(c, 512)
  c.train.batch_size = 8
  c.train.max_steps = 6
  c.train.log_every_steps = 3
  c.eval.batch_size = 16
  return c
