"""SASRec on Amazon Sports under TIGER's protocol (configs/amazon_sports.py), the row TIGER's table quotes.

Paper row to compare with (TIGER, Rajput et al. NeurIPS 2023, Table 1, Sports): SASRec R@5 .0233,
R@10 .0350, N@5 .0154, N@10 .0192 (papers.md §6e; "as quoted there", from memory: verify).
Model (SASRec, Kang & McAuley 2018, the sparse Amazon settings): 2 blocks x 1 head, d = 50,
dropout 0.5, history 50; our trainer's loss (128 sampled negatives, temperature 0.05), Adam 1e-3,
batch 128; validation NDCG@10 every epoch selects the epoch whose test row is reported.

Command:   python -m experiments.run --config=configs/sasrec_amazon_sports.py --workdir=workdirs/sasrec_amazon_sports
Quick:     python -m experiments.run --config=configs/sasrec_amazon_sports.py:quick
Our default protocol (history items removed): --config=configs/sasrec_amazon_sports.py:history_removed
Hardware:  2-core x86 CPU.
Result:    seed 42 (results/amazon-sports/sasrec_amazon_sports.json, from 0026a05, 1.8 h for 100 epochs of
           279 steps on the shared 2-core box): validation selected epoch 67; test Recall@5 .0268,
           Recall@10 .0455, NDCG@5 .0153, NDCG@10 .0213 (final epoch: .0268 / .0443 / .0151 / .0207).
"""
import ml_collections

from configs import amazon_sports, base


def get_config(arg: str | None = None):
  args = amazon_sports.args_of(arg)
  c = base.base()
  c.name = "sasrec_amazon_sports"
  c.model = ml_collections.ConfigDict(dict(name="sasrec", dim=50, num_blocks=2, num_heads=1, ffn_dim=50,
                                           max_len=50, dropout=0.5, backend="xla", attention_tiling="auto"))
  amazon_sports.apply_sports(c, max_len=50, history_removed="history_removed" in args)
  c.train.num_epochs = 100
  if "quick" in args:
    base.apply_quick(c)
  return c
