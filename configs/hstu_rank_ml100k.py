"""HSTU ranker as a two-task rating ranker on MovieLens-100K.

Data: ../shared/data/ml-100k, the official u.data/u.item/u.user (943 users, 1,682 items, 100,000
ratings with timestamps; demographics, genres and release year as context).

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: HSTU ranker, 2 blocks x 2 heads, D = 64, dqk = dv = 32, time bias, dropout 0.3; one head
per task.

Command:   python -m experiments.run --config=configs/hstu_rank_ml100k.py --workdir=workdirs/hstu_rank_ml100k
Quick:     python -m experiments.run --config=configs/hstu_rank_ml100k.py:quick
Hardware:  2-core x86 CPU, 6 epochs of batch 128.
Result:    results/ml-100k/hstu_rank_ml100k.json, seed 42:
           474 steps (6 epochs of 79), 114 s of training on the shared, loaded 2-core box; best
           validation epoch 6 (still improving). Test mean NE 0.834, AUC 0.780, GAUC 0.705; rating >= 4:
           NE 0.812, AUC 0.782, GAUC 0.706; rating = 5: NE 0.856, AUC 0.777, GAUC 0.704. Best of the three.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("hstu", "ml100k", arg)
