"""Compute scaling of Kunlun and InterFormer-lite as rankers: one model at one width (issue 20).

Paper: Kunlun (arXiv 2602.10016) reports its scaling efficiency over InterFormer as the slope of NE
against log compute (papers.md §1.1, §1.10: "≈2×"). This config is one point of that curve: the
model of configs/kunlun_rank_synthetic.py (or configs/interformer_lite_rank_synthetic.py) with every
width scaled by width / 32 and everything else unchanged, on the synthetic KuaiRand-format world or
on MovieLens-100K's rating ranker (the data, protocol, loss, optimiser and selection of
configs/kunlun_rank_{synthetic,ml100k}.py).

Argument: `<model>,<size>,<dataset>[,quick]`: model `kunlun` | `interformer_lite`, size `d<width>`
(d8, d16, d32, d64; d32 is the default configs' model), dataset `synthetic` | `ml100k`.
What scales with the width D: the item and context embeddings and the shared event width (D), the
per-type event widths (D, D, D/2: the default's 32, 32, 16), the Weight Generation and expert MLPs'
hidden layers (2D). Heads (2), layers, windows, seeds and summary tokens stay: the study varies
compute through the width only, as the ML-1M study does (configs/scaling_ml1m.py).

What differs from the default configs, and why:
  * NUM_EPOCHS epochs instead of 8 (synthetic) / 6 (ML-100K): the grid (2 models x 4 widths x 2
    datasets) has to fit in about an hour and a half of a 2-core CPU. Every width sees the same
    examples, so training FLOPs grow with the model only; the best validation epoch within the
    budget is selected as in the default configs (early stopping on mean validation NE). These are
    fixed-budget fits, not converged ones.

Command:   scripts/reproduce_kunlun_scaling.sh (the grid, resumable, then the fits), or one run:
           python -m experiments.run --config=configs/kunlun_scaling.py:kunlun,d64,synthetic \
               --workdir=workdirs/kunlun_scaling/synthetic/kunlun_d64_s42 \
               --results=results/kunlun_scaling/runs/synthetic/kunlun_d64_s42.json
Quick:     python -m experiments.run --config=configs/kunlun_scaling.py:kunlun,d16,ml100k,quick
Hardware:  2-core x86 CPU, two runs at a time: minutes per run (see the results files' wall_clock_s).
Result:    results/kunlun_scaling/{synthetic,ml100k}_scaling.{json,csv,png} (experiments/scaling_study.py)
           and the README section "Kunlun vs InterFormer-lite: compute scaling".
"""
import re

import ml_collections

from configs import hstu_rank_synthetic, interformer_lite_rank_synthetic, kunlun_rank_synthetic, rank_movielens

NUM_EPOCHS = 4
MODELS = ("kunlun", "interformer_lite")
DATASETS = ("synthetic", "ml100k")
BASE_WIDTH = 32
_SIZE_RE = re.compile(r"d(\d+)")


def parse_width(size: str) -> int:
  m = _SIZE_RE.fullmatch(size)
  if m is None or int(m.group(1)) < 4 or int(m.group(1)) % 4:
    raise ValueError(f"kunlun_scaling: size must be d<width> with width a multiple of 4 (>= 4: the halved "
                     f"long-view width must split over 2 heads), e.g. d8, d64; got {size!r}")
  return int(m.group(1))


def scale_model(model: ml_collections.ConfigDict, width: int) -> None:
  """Every width of the default model times width / 32 (in place); the rest unchanged."""
  f = width / BASE_WIDTH
  model.dim = width
  model.width = width
  model.event_widths = tuple(int(round(w * f)) for w in model.event_widths)
  model.weight_gen_hidden = int(round(model.weight_gen_hidden * f))
  model.expert_hidden = int(round(model.expert_hidden * f))


def get_config(arg: str | None = None):
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  quick = "quick" in parts
  parts = [p for p in parts if p != "quick"]
  if len(parts) != 3 or parts[0] not in MODELS or parts[2] not in DATASETS:
    raise ValueError(f"kunlun_scaling: argument must be '<model>,<size>,<dataset>[,quick]' with model in "
                     f"{MODELS} and dataset in {DATASETS}, e.g. configs/kunlun_scaling.py:kunlun,d64,synthetic; "
                     f"got {arg!r}")
  model, size, dataset = parts
  width = parse_width(size)
  if dataset == "synthetic":
    c = (kunlun_rank_synthetic if model == "kunlun" else interformer_lite_rank_synthetic).get_config()
  else:
    c = rank_movielens.ranking_config(model, "ml100k")
  c.name = f"kunlun_scaling_{dataset}_{model}_{size}"
  scale_model(c.model, width)
  c.train.num_epochs = NUM_EPOCHS
  if quick:
    (hstu_rank_synthetic if dataset == "synthetic" else rank_movielens).apply_quick(c)
  return c
