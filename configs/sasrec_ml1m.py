"""SASRec on MovieLens-1M with sampled softmax, as in the HSTU reference (`sasrec-sampled-softmax-n128-final.gin`).

2 blocks x 1 head, d = 50, FFN 50 (ReLU), dropout 0.2 (embeddings, attention weights, FFN), the
same loss, optimizer, batch and evaluation as configs/hstu_ml1m.py. Published HR@10 .2853,
NDCG@10 .1603. SASRec reads no timestamps, so this row is directly comparable.

Command:   python -m experiments.run --config=configs/sasrec_ml1m.py --workdir=workdirs/sasrec_ml1m
Quick:     python -m experiments.run --config=configs/sasrec_ml1m.py:quick
Hardware:  2-core x86 CPU (AVX-512), 24 GB.
"""
import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.base()
  c.name = "sasrec_ml1m"
  c.model = ml_collections.ConfigDict(dict(name="sasrec", dim=50, num_blocks=2, num_heads=1, ffn_dim=50,
                                           max_len=200, dropout=0.2, backend="xla",
                                           attention_tiling="auto"))
  if arg == "quick":
    base.apply_quick(c)
  return c
