"""Wukong baseline for configs/kunlun_rank_synthetic.py: same world, protocol, loss and selection.

Model (recjax/models/wukong.py): per candidate the tokens [26 user feature embeddings, mean
history token, candidate token, candidate item embedding, 1 filler] (30 x D = 32), 2 Wukong layers
(2 experts, FM hidden 64, linear compression), flatten -> MLP 256, dropout 0.3, one logit per task.

Command:   python -m experiments.run --config=configs/wukong_rank_synthetic.py
Quick:     python -m experiments.run --config=configs/wukong_rank_synthetic.py:quick
Hardware:  2-core x86 CPU; a few minutes.
Result (results/synthetic/wukong_rank_synthetic.json, seed 42, one seed): 664 steps in 358 s on the loaded
           box; best validation epoch 2 (then overfits); test mean NE 0.952, AUC 0.649, GAUC 0.619.
"""
import ml_collections

from configs import hstu_rank_synthetic


def get_config(arg: str | None = None):
  c = hstu_rank_synthetic.ranking_base("wukong_rank_synthetic")
  c.model = ml_collections.ConfigDict(dict(name="wukong", dim=32, num_layers=2, experts=2, expert_hidden=64,
                                           mlp_dims=(256,), dropout=0.3))
  if arg == "quick":
    hstu_rank_synthetic.apply_quick(c)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
  return c
