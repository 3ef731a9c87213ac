"""kunlun as a two-task rating ranker on MovieLens-100K (issue 20: Kunlun and its baselines on real data).

Data: ../shared/data/ml-100k (943 users, 1,682 items, 100,000 ratings with timestamps; demographics,
genres and release year as context). Protocol, tasks (rating >= 4, rating = 5), loss, 6 epochs and
selection: configs/rank_movielens.py, the same as {hstu,dlrm,din}_rank_ml100k.py.
Model: Kunlun (arXiv 2602.10016), configs/kunlun_rank_synthetic.py's model with MovieLens's event types: every
rated movie, the liked ones (rating >= 4) and the loved ones (rating = 5).

Command:   python -m experiments.run --config=configs/kunlun_rank_ml100k.py --workdir=workdirs/kunlun_rank_ml100k
Quick:     python -m experiments.run --config=configs/kunlun_rank_ml100k.py:quick
Ablation:  python -m experiments.run --config=configs/kunlun_rank_ml100k.py:no_hsp (one component removed per
           run, the rows of configs/kunlun_rank_synthetic.py's ABLATIONS; run kunlun_rank_ml100k_no_<component>)
Hardware:  2-core x86 CPU; minutes.
Result:    results/ml-100k/kunlun_rank_ml100k.json, seed 42 (one seed), from 137dc17: best validation epoch
           2 of 6; test mean NE 0.8277, AUC 0.7766, GAUC 0.6893; 27 min of training
           on the shared, loaded 2-core box. Seeds 1, 2 (kunlun_rank_ml100k_seed{1,2}.json): 0.8150, 0.8279;
           over the three seeds 0.8235 ± 0.0074.
"""
from configs import rank_movielens


def get_config(arg: str | None = None):
  return rank_movielens.ranking_config("kunlun", "ml100k", arg)
