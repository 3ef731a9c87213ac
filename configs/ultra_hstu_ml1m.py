"""HSTU with ULTRA-HSTU's semi-local attention on MovieLens-1M retrieval (issue 18; papers.md §2.2).

ULTRA-HSTU (arXiv 2602.16986) is a ranker; what carries over to next-item retrieval on item-only
sequences is its sparse attention. This config is `configs/hstu_ml1m.py` (the HSTU reference's
protocol and widths: 2 blocks x 1 head x 50, batch 128, 128 sampled negatives, 101 epochs,
evaluated every epoch) with:
  * SLA: each query sees the K1 = 64 newest keys up to itself plus the K2 = 16 oldest positions
    (`model.local_window`, `model.global_window`), evaluated blockwise (`model.sla_block` = 32,
    `layers/sla.py`): at most 80 of up to 200 keys per query.
  * no relative attention bias, as ULTRA-HSTU (its blocked SLA path takes none); order comes from
    the absolute position embedding HSTU already has. ML-1M's full file has no timestamps, so the
    HSTU row it sits beside has the position bias only.
Choices (the paper gives K1, K2 only at 3k-16k events): K1 = 64 ~ a third of the window, K2 = 16.
Summed action tokens, attention truncation and the mixture of transducers are the ranker's
(models/ultra_hstu.py): ML-1M retrieval has no actions, and truncation would drop the outputs of
the older positions that the every-position loss trains.

Arguments: `full` keeps plain causal attention with the bias still off (the control that
separates SLA from the bias removal); `quick` as everywhere (comma-combined: `full,quick`).

Command:   python -m experiments.run --config=configs/ultra_hstu_ml1m.py[:full] --workdir=workdirs/<name>
           SEEDS="1 2 3" scripts/reproduce_movielens.sh ultra_hstu_ml1m ultra_hstu_ml1m:full
Hardware:  2-core x86 CPU, 24 GB; about as long as hstu_ml1m (~30 min a seed on an idle box).
Measured:  seed 1 (results/ml-1m/ultra_hstu_ml1m_seed1.json, 43 min on a 2-core Xeon beside another
           run): HR@10 .2758, NDCG@10 .1554 at epoch 101 (best .1589 at 92), 6.4% below hstu_ml1m's
           3-seed .1661. The `full` control, seed 1 (16 min, attention on the C++ kernel): HR@10
           .2818, NDCG@10 .1579: the bias removal costs -4.9%, SLA a further -1.6% (one seed each).
"""
from configs import base

K1, K2, SLA_BLOCK = 64, 16, 32


def get_config(arg: str | None = None):
  parts = {p.strip() for p in (arg or "").split(",") if p.strip()}
  if parts - {"full", "quick"}:
    raise ValueError(f"ultra_hstu_ml1m: unknown argument {arg!r}; use 'full' and / or 'quick'")
  c = base.base()
  c.name = "ultra_hstu_ml1m"
  c.model.use_position_bias = False
  c.model.use_time_bias = "off"
  c.model.local_window = 0 if "full" in parts else K1
  c.model.global_window = 0 if "full" in parts else K2
  c.model.sla_block = 0 if "full" in parts else SLA_BLOCK
  if "full" in parts:
    c.name += "_full"
  if "quick" in parts:
    base.apply_quick(c)
  return c
