"""DLRM-style baseline for configs/hstu_rank_synthetic.py: same world, protocol, loss and selection.

Model: user feature embeddings, the mean of the history tokens, the candidate token and its item
embedding; their pairwise dot products with the mean history and candidate token -> MLP 256-128
-> one logit per task (recjax/models/dlrm.py). Order and recency of the history are invisible to it.

Command:   python -m experiments.run --config=configs/dlrm_rank_synthetic.py
Quick:     python -m experiments.run --config=configs/dlrm_rank_synthetic.py:quick
Hardware:  2-core x86 CPU; faster than the HSTU job: 6 min at seed 42, 6-14 min per seed on the shared box.
Result:    results/synthetic/dlrm_rank_synthetic.json (seed 42) and _seed{1,2,3}.json (`--config.seed=S
           --config.name=dlrm_rank_synthetic_seedS`): test mean NE 0.9606 ± 0.0019 over the four seeds
           (0.9588, 0.9627, 0.9593, 0.9618), best validation epoch 5 at each.
"""
import ml_collections

from configs import hstu_rank_synthetic


def get_config(arg: str | None = None):
  c = hstu_rank_synthetic.ranking_base("dlrm_rank_synthetic")
  c.model = ml_collections.ConfigDict(dict(name="dlrm", dim=64, mlp_dims=(256, 128), dropout=0.3))
  if arg == "quick":
    hstu_rank_synthetic.apply_quick(c)
  return c
