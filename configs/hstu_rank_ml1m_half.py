"""HSTU ranker as a two-task rating ranker on ML-1M users 1-2999.

Data: ../shared/data/ml-1m, the half of the shared copy with ratings and timestamps (users 1-2999,
see its PROVENANCE.md); demographics from users.dat, genres and year from movies.dat.

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: HSTU ranker, 2 blocks x 2 heads, D = 64, dqk = dv = 32, time bias, dropout 0.3; one head
per task.

Command:   python -m experiments.run --config=configs/hstu_rank_ml1m_half.py --workdir=workdirs/hstu_rank_ml1m_half
Quick:     python -m experiments.run --config=configs/hstu_rank_ml1m_half.py:quick
Hardware:  2-core x86 CPU, 6 epochs of 417 steps of batch 128.
Result:    results/ml-1m-users1-2999/hstu_rank_ml1m_half.json, seed 42:
           2,502 steps, 474 s of training on the shared, loaded 2-core box; best validation epoch 6
           (the last). Test mean NE 0.796, AUC 0.800, GAUC 0.699; rating >= 4: NE 0.786, AUC 0.797,
           GAUC 0.689; rating = 5: NE 0.806, AUC 0.804, GAUC 0.710. DLRM: mean NE 0.811.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("hstu", "ml1m_half", arg)
