"""DIN baseline as a two-task rating ranker on MovieLens-100K.

Data: ../shared/data/ml-100k, the official u.data/u.item/u.user (943 users, 1,682 items, 100,000
ratings with timestamps; demographics, genres and release year as context).

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: DIN baseline (recjax/models/din.py): target attention over the history (activation unit
64-32) -> MLP 256-128.

Command:   python -m experiments.run --config=configs/din_rank_ml100k.py --workdir=workdirs/din_rank_ml100k
Quick:     python -m experiments.run --config=configs/din_rank_ml100k.py:quick
Hardware:  2-core x86 CPU, 6 epochs of batch 128.
Result:    results/ml-100k/din_rank_ml100k.json, seed 42:
           474 steps (6 epochs of 79), 153 s of training on the shared, loaded 2-core box; best
           validation epoch 4. Test mean NE 0.842, AUC 0.768, GAUC 0.697; rating >= 4: NE 0.818,
           AUC 0.775, GAUC 0.698; rating = 5: NE 0.866, AUC 0.761, GAUC 0.695.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("din", "ml100k", arg)
