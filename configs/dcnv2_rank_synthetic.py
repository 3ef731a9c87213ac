"""DCNv2 baseline for configs/kunlun_rank_synthetic.py: same world, protocol, loss and selection.

Model (recjax/models/dcnv2.py): x_0 = [26 user feature embeddings, mean history token, candidate
token, candidate item embedding] with D = 16 (464 features), 2 full-rank cross layers
x_{l+1} = x_0 ⊙ (W x_l + b) + x_l, deep tower 256-128 stacked on them, dropout 0.3, one logit per task.

Command:   python -m experiments.run --config=configs/dcnv2_rank_synthetic.py
Quick:     python -m experiments.run --config=configs/dcnv2_rank_synthetic.py:quick
Hardware:  2-core x86 CPU; a few minutes.
Result (results/synthetic/dcnv2_rank_synthetic.json, seed 42, one seed): 664 steps in 247 s on the loaded
           box; best validation epoch 4; test mean NE 0.974, AUC 0.595 (DLRM 0.962: a miss for DCNv2).
"""
import ml_collections

from configs import hstu_rank_synthetic


def get_config(arg: str | None = None):
  c = hstu_rank_synthetic.ranking_base("dcnv2_rank_synthetic")
  c.model = ml_collections.ConfigDict(dict(name="dcnv2", dim=16, num_cross=2, mlp_dims=(256, 128), dropout=0.3))
  if arg == "quick":
    hstu_rank_synthetic.apply_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
  return c
