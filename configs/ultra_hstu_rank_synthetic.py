"""ULTRA-HSTU (arXiv 2602.16986, papers.md §2) as a multi-task ranker on the default synthetic world.

Data, protocol, loss, training and evaluation: exactly those of configs/hstu_rank_synthetic.py
(`ranking_base`): the default KuaiRand-format synthetic world (2,000 users, 1,000 videos), per user
the last 8 events test and the 8 before validation, requests of 8 candidates sharing the <= 64
events before them, multi-task BCE on the 8 feedbacks, NE / AUC / GAUC and the oracle, early
stopping on validation NE.
Model (recjax/models/ultra_hstu.py): summed item + action tokens (action bitmask + watch-ratio
bucket; candidates carry none), layout [5 user-context tokens | history | 8 candidates],
semi-local attention K1 = 16 local keys, K2 = 4 global history columns (+ the context), attention
truncation after N1 = 1 of 2 blocks to the newest L' = 16 events, a mixture of two transducers
(every event with all its feedbacks; the engagement events, bits like / follow / comment /
forward / hate / profile = 190, with those bits) fused by concat + Dense, one head per feedback;
D = 64, 2 heads, dqk = dv = 32, dropout 0.3 as the HSTU ranker.
At this history length (64) SLA and truncation save little; the config exists to run the model
through the same protocol as the HSTU ranker and to compare NE and training FLOPs per example.

Command:   python -m experiments.run --config=configs/ultra_hstu_rank_synthetic.py
Quick:     python -m experiments.run --config=configs/ultra_hstu_rank_synthetic.py:quick
Short:     python -m experiments.run --config=configs/ultra_hstu_rank_synthetic.py:short  (3 epochs;
           beside configs/hstu_rank_synthetic.py:short)
Ablations: --config.model.local_window=0 (global only), --config.model.global_window=0 (local
           only), --config.model.truncated_len=0 (no truncation), --config.model.sla=False,
           --config.model.stream_select="(0,)" --config.model.stream_encode="(255,)" (one stream).
Hardware:  2-core x86 CPU; the budget is <= 10 minutes end to end on idle cores.
Result:    short run only (3 epochs, seed 42, one seed; results/synthetic/ultra_hstu_rank_synthetic_short.json,
           767 s of training on the loaded 2-core box): test mean NE 0.9682, AUC 0.603 (oracle NE
           0.858); is_click NE 0.814, long_view 0.866; best validation epoch 3 of 3 (still improving).
           HSTU ranker on the same short run (hstu_rank_synthetic_short.json): NE 0.9707, AUC 0.580.
           Training FLOPs per example (XLA): 62.0M vs HSTU's 28.3M (two streams of two blocks, and at
           history 64 SLA and truncation save little). One stream (the ablation command above,
           --config.name=ultra_hstu_rank_synthetic_short_1stream): NE 0.9647, AUC 0.605, 31.0M FLOPs
           per example, best epoch 3 of 3. Single seed each. The full 8-epoch run has not been made.
"""
import ml_collections

from configs import hstu_rank_synthetic

ENGAGEMENT_BITS = 2 | 4 | 8 | 16 | 32 | 128   # like, follow, comment, forward, hate, profile_enter


def get_config(arg: str | None = None):
  c = hstu_rank_synthetic.ranking_base("ultra_hstu_rank_synthetic")
  c.model = ml_collections.ConfigDict(dict(
      name="ultra_hstu", dim=64, num_blocks=2, num_heads=2, dqk=32, dv=32, max_history=64,
      attn_norm_len=72, dropout=0.3, num_time_buckets=129,
      sla=True, local_window=16, global_window=4, sla_block=16,
      full_layers=1, truncated_len=16,
      stream_select=(0, ENGAGEMENT_BITS), stream_encode=(255, ENGAGEMENT_BITS), fusion="concat_mlp",
      remat=False, remat_policy="nothing", backend="xla"))
  if arg == "quick":
    hstu_rank_synthetic.apply_quick(c)   # small world, 18 steps; also sets max_history / attn_norm_len
    c.model.local_window = 4
    c.model.global_window = 2
    c.model.sla_block = 4
    c.model.truncated_len = 8
  elif arg == "short":
    hstu_rank_synthetic.apply_short(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}: use 'quick' or 'short'")
  return c
