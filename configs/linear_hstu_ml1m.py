"""Linear HSTU on MovieLens-1M retrieval (issue 18; papers.md §6b; `recjax/models/linear_hstu.py`).

HSTU's block with its O(L²) pointwise attention replaced by a causal running state (QGS's Linear
HSTU: "outer" rank-1 state updates, chunked scan of 64 tokens), at HSTU's reference widths and
protocol (`configs/hstu_ml1m.py`: 2 blocks x 1 head x 50, dropout 0.2, max length 200, batch 128,
128 sampled negatives, 101 epochs, evaluated every epoch, the input window's items removed). No
relative bias (it has no running-state form); order from the absolute position embedding.

Command:   python -m experiments.run --config=configs/linear_hstu_ml1m.py --workdir=workdirs/linear_hstu_ml1m
           SEEDS="1 2 3" scripts/reproduce_movielens.sh linear_hstu_ml1m
Quick:     python -m experiments.run --config=configs/linear_hstu_ml1m.py:quick
Hardware:  2-core x86 CPU, 24 GB (~30-40 min a seed on an idle box).
Measured:  seed 1 (results/ml-1m/linear_hstu_ml1m_seed1.json, 22 min alone on a 2-core Xeon): HR@10
           .2758, NDCG@10 .1543 at epoch 101, 7.1% below hstu_ml1m's 3-seed .1661 and .0036 below the
           no-bias plain-attention control (ultra_hstu_ml1m:full, .1579): about one of HSTU's seed
           spreads (±.0031), so not separable at one seed each.
"""
import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.base()
  c.name = "linear_hstu_ml1m"
  c.model = ml_collections.ConfigDict(dict(name="linear_hstu", dim=50, num_blocks=2, num_heads=1, dqk=50,
                                           dv=50, max_len=200, dropout=0.2, state_kind="outer", chunk=64))
  if arg == "quick":
    base.apply_quick(c)
  elif arg:
    raise ValueError(f"linear_hstu_ml1m: unknown argument {arg!r}; use 'quick'")
  return c
