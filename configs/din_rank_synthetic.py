"""DIN baseline for configs/hstu_rank_synthetic.py: same world, protocol, loss and selection.

Model: target attention over the history (activation unit MLP 64-32 on [h, e, h − e, h ⊙ e], no
softmax), [interest, candidate, mean history, user features] -> MLP 256-128 -> one logit per task
(recjax/models/din.py).

Command:   python -m experiments.run --config=configs/din_rank_synthetic.py
Quick:     python -m experiments.run --config=configs/din_rank_synthetic.py:quick
Hardware:  2-core x86 CPU: 12 min at seed 42; 35 min for seed 1 on the shared box (load average 25-30).
Result:    results/synthetic/din_rank_synthetic.json (seed 42) and _seed{1,2,3}.json (`--config.seed=S
           --config.name=din_rank_synthetic_seedS`): test mean NE 0.9776 (42), 0.9798, 0.9764, 0.9777
           (0.9779 ± 0.0014); seeds 2 and 3 took 19 and 13 min on the shared box.
"""
import ml_collections

from configs import hstu_rank_synthetic


def get_config(arg: str | None = None):
  c = hstu_rank_synthetic.ranking_base("din_rank_synthetic")
  c.model = ml_collections.ConfigDict(dict(name="din", dim=64, attention_dims=(64, 32), mlp_dims=(256, 128),
                                           dropout=0.3))
  if arg == "quick":
    hstu_rank_synthetic.apply_quick(c)
  return c
