"""HSTU on Amazon Sports under TIGER's protocol (configs/amazon_sports.py).

Row to compare with: an open reproduction's HSTU R@10 .0365 / N@10 .0207 (github.com/phonism/genrec
README, PROVENANCE.md); TIGER's table has no HSTU row (TIGER R@10 .0400 / N@10 .0225, SASRec
.0350 / .0192). Model: the ML-1M reference block (configs/base.py: 2 blocks x 1 head x 50,
relative position bias; no timestamps in this file, so no time bias) with history 50 and dropout
0.5 for the sparser data; 128 sampled negatives, Adam 1e-3, batch 128; validation NDCG@10 every
epoch selects the epoch whose test row is reported.

Command:   python -m experiments.run --config=configs/hstu_amazon_sports.py --workdir=workdirs/hstu_amazon_sports
Quick:     python -m experiments.run --config=configs/hstu_amazon_sports.py:quick
Our default protocol (history items removed): --config=configs/hstu_amazon_sports.py:history_removed
Hardware:  2-core x86 CPU.
Expected:  279 steps per epoch; 18 min nearly alone on the 2-core box (short test runs beside it) (26 steps/s plus a validation pass per
           epoch). Measured (seed 42, from 3def614, results/amazon-sports/hstu_amazon_sports.json):
           epoch 90 selected, test R@5 .0278, R@10 .0442, N@5 .0158, N@10 .0210.
           `:history_removed` (17 min, results/amazon-sports/hstu_amazon_sports_history_removed.json):
           epoch 99 selected, test R@5 .0328, R@10 .0480, N@5 .0220, N@10 .0269.
"""
from configs import amazon_sports, base


def get_config(arg: str | None = None):
  args = amazon_sports.args_of(arg)
  c = base.base()
  c.name = "hstu_amazon_sports"
  amazon_sports.apply_sports(c, max_len=50, history_removed="history_removed" in args)
  c.model.dropout = 0.5
  c.train.num_epochs = 100
  if "quick" in args:
    base.apply_quick(c)
  return c
