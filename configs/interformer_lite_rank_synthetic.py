"""InterFormer-lite: Kunlun with its efficiency modules swapped back (issue 20's definition).

Issue 20 defines InterFormer-lite (InterFormer, arXiv 2411.09852) only as "personalised FFN, PMA,
full attention". Every one of those is a Kunlun switch, so this is configs/kunlun_rank_synthetic.py
with: pooling="pma" (summary_tokens seeds, no SumKronLinear), window=0 (full self-attention),
compskip=False (every layer runs the personalised FFN, attention and pooling), uniform event
capacity (event_personalisation=False), one expert. The personalised FFN act(S W1ᵀ) W2 with
context-generated W1, W2 is computed by the GDPA layer: the same numbers (tests/layers/
test_kunlun.py checks the identity), so on this XLA path the FLOPs are the same too; what
InterFormer loses on a GPU (a memory-bound per-sample matmul) is not modelled. Its interaction arch
is Kunlun's Wukong block, not InterFormer's: a stand-in, not a reproduction of InterFormer.

Command:   python -m experiments.run --config=configs/interformer_lite_rank_synthetic.py
Quick:     python -m experiments.run --config=configs/interformer_lite_rank_synthetic.py:quick
Hardware:  2-core x86 CPU; slower than Kunlun (no CompSkip, full attention).
Result (results/synthetic/interformer_lite_rank_synthetic.json, seed 42, one seed): 664 steps in 2656 s
           on the box while it also ran tests (over the 10-minute budget; step time not comparable);
           best validation epoch 6; test mean NE 0.961, AUC 0.630 (Kunlun 0.958 at 25% fewer FLOPs).
"""
from configs import kunlun_rank_synthetic


def get_config(arg: str | None = None):
  if arg and arg != "quick":   # Kunlun's ablation arguments would rename this run: not InterFormer's
    raise ValueError(f"unknown config argument {arg!r}; use 'quick' or nothing")
  c = kunlun_rank_synthetic.get_config(arg)
  c.name = "interformer_lite_rank_synthetic"
  c.model.update(dict(pooling="pma", window=0, compskip=False, event_personalisation=False, layers=2,
                      experts=1))
  return c
