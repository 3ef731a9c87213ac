"""TIGER (generative retrieval over semantic IDs) on MovieLens-1M, beside HSTU and SASRec.

Issue 17's "TIGER vs SASRec vs HSTU on ML-1M, on the same split and evaluation": the data, split and
evaluation are configs/hstu_ml1m.py's (all 6,040 users, train on all but the last item, rank the whole
catalogue of 3,883 movies (movies.dat; both models rank the same set) for the last one, the input window's items removed, HR@K = Recall@K with one
target, NDCG@K), so the rows sit beside results/ml-1m/{hstu,sasrec}_ml1m*.json. TIGER reads the
newest 20 items (its paper's history); the retrieval models read 200.
Model: configs/tiger_amazon_sports.py's TIGER (papers.md §6e: encoder and decoder 4 layers, 6 heads x 64,
MLP 1024, model dim 128, dropout 0.1, 2,000 hashed user tokens; AdamW, lr 0.01, inverse-sqrt decay
after 10k warm-up steps, batch 256). SIDs: ML-1M has item text, so the route is content, as TIGER's
(there: Sentence-T5 embeddings quantised by an RQ-VAE): movies.dat titles with their year (TF-IDF)
beside genre one-hots, SVD to 64, L2-normalised, RQ-KMeans 3 levels x 256 codes plus the dedup level
for colliding movies (semantic_ids/catalogue_sids.py). Evaluation: beam search of 20 beams
constrained to the catalogue's SID trie, HR/NDCG@5/10, collision-aware and SID-level.

Command:   python -m experiments.run --config=configs/tiger_ml1m.py --workdir=workdirs/tiger_ml1m
Short:     python -m experiments.run --config=configs/tiger_ml1m.py:short --workdir=workdirs/tiger_ml1m_short
           (a labelled CPU budget run: configs/tiger_amazon_sports.py's `short` TIGER, 1/8 of the
           paper-size FLOPs, 100 warm-up steps, 10 beams, for SHORT_EPOCHS epochs, final parameters tested)
Quick:     python -m experiments.run --config=configs/tiger_ml1m.py:quick  (10 steps, 256 test users)
Hardware:  2-core x86 CPU. The paper-size model is an accelerator job (configs/tiger_amazon_sports.py:
           seconds per step on this CPU). See the `short` row for the measured budget run.
Expected:  no published TIGER row on ML-1M; HSTU here reads HR@10 .2886, NDCG@10 .1639
           (results/ml-1m/hstu_ml1m.json), SASRec .2801 / .1555.
Measured:  `:short` (seed 1, from 8555dbf, 23 min nearly alone on the 2-core box (short test runs beside it): 2.8 steps/s, then the test
           beam search; results/ml-1m/tiger_ml1m_short.json): HR@5 .0497, HR@10 .0727, NDCG@5 .0313,
           NDCG@10 .0389, collision-aware = SID-level (30% of movies collide before the dedup level,
           none after). A miss against HSTU by 4x, from 1/200 of TIGER's steps at 1/8 of its size.
"""
from configs import base, tiger_amazon_sports

SHORT_EPOCHS = 1   # 3,860 steps of batch 256: every training prefix once


def get_config(arg: str | None = None):
  args = set(filter(None, (arg or "").split(",")))
  known = {"quick", "short"}
  if args - known:
    raise ValueError(f"unknown config argument(s) {sorted(args - known)}; known: {sorted(known)}")
  c = tiger_amazon_sports.get_config("short" if "short" in args else None)
  ml1m = base.base()
  c.name = "tiger_ml1m" + ("_short" if "short" in args else "")
  c.dataset_label = ml1m.get("dataset_label", "ml-1m")
  c.data = ml1m.data
  c.data.max_len = 20
  c.eval.exclude_history = ml1m.eval.exclude_history
  c.eval.test_at_each_eval = ml1m.eval.get("test_at_each_eval", False)
  c.eval.ks = (5, 10)
  c.sid.vectors = "content:tfidf"
  if "short" in args:
    c.train.max_steps = 0
    c.train.num_epochs = SHORT_EPOCHS
  if "quick" in args:
    base.apply_quick(c)
    c.eval.max_examples = 256
  return c
