"""DIN baseline as a two-task rating ranker on ML-1M users 1-2999.

Data: ../shared/data/ml-1m, the half of the shared copy with ratings and timestamps (users 1-2999,
see its PROVENANCE.md); demographics from users.dat, genres and year from movies.dat.

Protocol, tasks (rating >= 4, rating = 5), loss and selection: configs/rank_movielens.py.
Model: DIN baseline (recjax/models/din.py): target attention over the history (activation unit
64-32) -> MLP 256-128.

Command:   python -m experiments.run --config=configs/din_rank_ml1m_half.py --workdir=workdirs/din_rank_ml1m_half
Quick:     python -m experiments.run --config=configs/din_rank_ml1m_half.py:quick
Hardware:  2-core x86 CPU, 6 epochs of 417 steps of batch 128.
Result:    results/ml-1m-users1-2999/din_rank_ml1m_half.json, seed 42: 2,502 steps, 90 min on the
           shared, heavily loaded 2-core box (load average 25-30; ≈ 14 min expected on idle cores);
           best validation epoch 6 (the last). Test mean NE 0.807, AUC 0.799, GAUC 0.701;
           rating >= 4: NE 0.801, AUC 0.794, GAUC 0.691; rating = 5: NE 0.814, AUC 0.804, GAUC 0.712.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("din", "ml1m_half", arg)
