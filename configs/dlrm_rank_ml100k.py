"""DLRM as a two-task rating ranker on MovieLens-100K (../shared/data/ml-100k: official u.data/u.item/u.user; 943 users, 1,682 items, 100,000 ratings with timestamps).

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: DLRM-style baseline (recjax/models/dlrm.py): user features, mean history, candidate; pairwise dots -> MLP 256-128.

Command:   python -m experiments.run --config=configs/dlrm_rank_ml100k.py --workdir=workdirs/dlrm_rank_ml100k
Quick:     python -m experiments.run --config=configs/dlrm_rank_ml100k.py:quick
Hardware:  2-core x86 CPU, 6 epochs of batch 128.
Result:    RESULT_PLACEHOLDER
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("dlrm", "ml100k", arg)
