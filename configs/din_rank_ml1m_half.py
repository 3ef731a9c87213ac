"""DIN baseline as a two-task rating ranker on ML-1M users 1-2999.

Data: ../shared/data/ml-1m, the half of the shared copy with ratings and timestamps (users 1-2999,
see its PROVENANCE.md); demographics from users.dat, genres and year from movies.dat.

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: DIN baseline (recjax/models/din.py): target attention over the history (activation unit
64-32) -> MLP 256-128.

Command:   python -m experiments.run --config=configs/din_rank_ml1m_half.py --workdir=workdirs/din_rank_ml1m_half
Quick:     python -m experiments.run --config=configs/din_rank_ml1m_half.py:quick
Hardware:  2-core x86 CPU, 6 epochs of 417 steps of batch 128.
Result:    not run yet (results/ml-1m-users1-2999/din_rank_ml1m_half.json); ≈ 14 min expected.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("din", "ml1m_half", arg)
