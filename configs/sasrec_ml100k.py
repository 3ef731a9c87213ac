"""SASRec on MovieLens-100K with the ML-1M reference hyper-parameters (configs/sasrec_ml1m.py).

The HSTU paper publishes no ML-100K row; this is our own measurement with the same protocol
(max length 200, batch 128, 128 sampled negatives, temperature 0.05, Adam 1e-3, dropout 0.2,
101 epochs, full-catalogue ranking of each user's last item, input-window items removed).
Data: ../shared/data/ml-100k, the official u.data/u.item (943 users, 1,682 items, 100,000 ratings,
real timestamps, so HSTU's relative time bias is on).

Command:   python -m experiments.run --config=configs/sasrec_ml100k.py --workdir=workdirs/sasrec_ml100k
Quick:     python -m experiments.run --config=configs/sasrec_ml100k.py:quick
Hardware:  2-core x86 CPU; 8 steps per epoch, a few minutes for 101 epochs.
"""
from configs import base, sasrec_ml1m


def get_config(arg: str | None = None):
  c = sasrec_ml1m.get_config()
  c.name = "sasrec_ml100k"
  c.dataset_label = "ml-100k"
  c.data.name = "ml-100k"
  c.data.data_dir = "../shared/data/ml-100k"
  if arg == "quick":
    base.apply_quick(c)
  return c
