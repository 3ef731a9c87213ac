"""dcnv2 as a two-task rating ranker on MovieLens-100K (issue 20: Kunlun and its baselines on real data).

Data: ../shared/data/ml-100k (943 users, 1,682 items, 100,000 ratings with timestamps; demographics,
genres and release year as context). Protocol, tasks (rating >= 4, rating = 5), loss, 6 epochs and
selection: configs/rank_movielens.py, the same as {hstu,dlrm,din}_rank_ml100k.py.
Model: DCNv2 baseline, configs/dcnv2_rank_synthetic.py's model.

Command:   python -m experiments.run --config=configs/dcnv2_rank_ml100k.py --workdir=workdirs/dcnv2_rank_ml100k
Quick:     python -m experiments.run --config=configs/dcnv2_rank_ml100k.py:quick
Hardware:  2-core x86 CPU; minutes.
Result:    results/ml-100k/dcnv2_rank_ml100k.json, seed 42 (one seed), from 137dc17: best validation epoch
           3 of 6; test mean NE 0.8437, AUC 0.7672, GAUC 0.6927; 1 min of training
           on the shared, loaded 2-core box.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("dcnv2", "ml100k", arg)
