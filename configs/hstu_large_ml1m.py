"""HSTU-large on MovieLens-1M: 8 blocks x 2 heads x 25 (reference `hstu-sampled-softmax-n128-large-final.gin`).

Everything else as configs/hstu_ml1m.py (published HR@10 .3294, NDCG@10 .1893, with timestamps).

Command:   python -m experiments.run --config=configs/hstu_large_ml1m.py --workdir=workdirs/hstu_large_ml1m
Quick:     python -m experiments.run --config=configs/hstu_large_ml1m.py:quick
Hardware:  2-core x86 CPU, 24 GB: 2.3 h on an AMD EPYC Zen 3 (≈ 1.6 s per step).
Result:    HR@10 .3046, NDCG@10 .1714 without the time bias (results/ml-1m/hstu_large_ml1m.json).
"""
from configs import base


def get_config(arg: str | None = None):
  c = base.base()
  c.name = "hstu_large_ml1m"
  c.model.num_blocks = 8
  c.model.num_heads = 2
  c.model.dqk = 25
  c.model.dv = 25
  if arg == "quick":
    base.apply_quick(c)
  return c
