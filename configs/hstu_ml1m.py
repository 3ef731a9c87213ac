"""HSTU on MovieLens-1M, the HSTU reference's published configuration.

Paper: Zhai et al., "Actions Speak Louder than Words", ICML 2024 (arXiv 2402.17152); config
`configs/ml-1m/hstu-sampled-softmax-n128-final.gin` of meta-recsys/generative-recommenders:
2 blocks x 1 head x 50, item dim 50, max length 200, batch 128, 128 sampled negatives,
temperature 0.05, Adam lr 1e-3 (betas 0.9/0.98), dropout 0.2, 101 epochs, full-catalogue ranking
of each user's last item with the input window's items removed.

Data: ../shared/data/ml-1m (all 6,040 users, no timestamps -> the time bias is off and the results
file says so; the published numbers used real timestamps).

Command:   python -m experiments.run --config=configs/hstu_ml1m.py --workdir=workdirs/hstu_ml1m
Quick:     python -m experiments.run --config=configs/hstu_ml1m.py:quick
Hardware:  2-core x86 CPU, 24 GB: 27 min on an AMD EPYC Zen 3 (AVX2), 0.26–0.39 s per step.
Expected:  HR@10 .2886, NDCG@10 .1639 at the last epoch (results/ml-1m/hstu_ml1m.json; time bias off);
           published HR@10 .3097, NDCG@10 .1720 with timestamps.
"""
from configs import base


def get_config(arg: str | None = None):
  c = base.base()
  c.name = "hstu_ml1m"
  if arg == "quick":
    base.apply_quick(c)
  return c
