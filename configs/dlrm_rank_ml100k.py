"""DLRM baseline as a two-task rating ranker on MovieLens-100K.

Data: ../shared/data/ml-100k, the official u.data/u.item/u.user (943 users, 1,682 items, 100,000
ratings with timestamps; demographics, genres and release year as context).

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: DLRM-style baseline (recjax/models/dlrm.py): user features, mean history, candidate;
pairwise dots -> MLP 256-128.

Command:   python -m experiments.run --config=configs/dlrm_rank_ml100k.py --workdir=workdirs/dlrm_rank_ml100k
Quick:     python -m experiments.run --config=configs/dlrm_rank_ml100k.py:quick
Hardware:  2-core x86 CPU, 6 epochs of batch 128.
Result:    results/ml-100k/dlrm_rank_ml100k.json, seed 42:
           474 steps (6 epochs of 79), 24 s of training on the shared, loaded 2-core box; best
           validation epoch 4. Test mean NE 0.843, AUC 0.770, GAUC 0.699; rating >= 4: NE 0.819,
           AUC 0.777, GAUC 0.701; rating = 5: NE 0.867, AUC 0.762, GAUC 0.697.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("dlrm", "ml100k", arg)
