"""DLRM baseline as a two-task rating ranker on ML-1M users 1-2999.

Data: ../shared/data/ml-1m, the half of the shared copy with ratings and timestamps (users 1-2999,
see its PROVENANCE.md); demographics from users.dat, genres and year from movies.dat.

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: DLRM-style baseline (recjax/models/dlrm.py): user features, mean history, candidate;
pairwise dots -> MLP 256-128.

Command:   python -m experiments.run --config=configs/dlrm_rank_ml1m_half.py --workdir=workdirs/dlrm_rank_ml1m_half
Quick:     python -m experiments.run --config=configs/dlrm_rank_ml1m_half.py:quick
Hardware:  2-core x86 CPU, 6 epochs of 417 steps of batch 128.
Result:    results/ml-1m-users1-2999/dlrm_rank_ml1m_half.json, seed 42:
           2,502 steps, 162 s of training on the shared, loaded 2-core box; best validation epoch 2.
           Test mean NE 0.811, AUC 0.789, GAUC 0.688; rating >= 4: NE 0.804, AUC 0.785, GAUC 0.678;
           rating = 5: NE 0.818, AUC 0.794, GAUC 0.699.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("dlrm", "ml1m_half", arg)
