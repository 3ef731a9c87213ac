"""Compute scaling of HSTU and SASRec on MovieLens-1M: one model at one size (issue 19, scaling study).

Paper: the scaling-efficiency measure of Kunlun (quality against log training compute, papers.md
§1.1, §2.5) and ULTRA-HSTU's efficiency ratios; the models are the HSTU reference's ML-1M settings
(configs/hstu_ml1m.py, configs/sasrec_ml1m.py: 1 head, dropout 0.2, 128 sampled negatives at
temperature 0.05, batch 128, Adam 1e-3, max length 200) with only the width and depth changed.

Argument: `<model>,<size>[,quick]`, model `hstu` | `sasrec`, size `d<width>` (2 blocks) or
`d<width>x<blocks>`; HSTU's dqk = dv = width, SASRec's FFN = width (as the reference's d = 50).

What differs from the ML-1M reference protocol, and why:
  * split `last_two` (train on all but each user's last two items, validate on the second to last,
    test on the last): the study fits quality on a validation split, never on the test split;
  * a fixed budget of NUM_EPOCHS epochs for every size (not 101): the grid has to fit in about an
    hour of a 2-core CPU shared with a dozen other jobs. Every size sees the same examples, so
    training FLOPs grow with the model only. SHORT runs: the absolute numbers are far below
    converged ones (the reference's d = 50 HSTU reaches NDCG@10 .16 on test after 101 epochs), and
    the fits describe quality at 4 epochs, not at convergence;
  * evaluation once, after the last epoch: validation (HR/NDCG@K, MRR and the full-catalogue
    softmax cross-entropy `nll` at the training temperature, the "validation loss") and test;
    per-user ranks and NLL are saved in the workdir (`eval/<split>.npz`) for bootstrap over users.

Command:   scripts/reproduce_scaling.sh (the whole grid, resumable, then the fits), or one run:
           python -m experiments.run --config=configs/scaling_ml1m.py:hstu,d64 \
               --workdir=workdirs/scaling_ml1m/hstu_d64_s42 --results=results/scaling/runs/hstu_d64_s42.json
Quick:     python -m experiments.run --config=configs/scaling_ml1m.py:sasrec,d16,quick
Hardware:  2-core x86 CPU shared with ~15 other jobs (load ≈ 30): 13 min (d8x1) to 36 min (SASRec d64)
           per run, 4–6 runs at a time; the 14-run grid took 63 min of wall-clock (4.4 h of run time).
Expected:  valid NDCG@10 .024 (HSTU d8x1) to .106 (HSTU d64), .017 to .087 (SASRec); HSTU / SASRec
           log-linear slope ratio 1.26 (results/scaling/ml1m_scaling.json, README "Compute scaling").
"""
import re

import ml_collections

from configs import base

NUM_EPOCHS = 4
MODELS = ("hstu", "sasrec")
_SIZE_RE = re.compile(r"d(\d+)(?:x(\d+))?")


def parse_size(size: str) -> tuple[int, int]:
  """'d64' -> (64, 2); 'd64x4' -> (64, 4)."""
  m = _SIZE_RE.fullmatch(size)
  if m is None or int(m.group(1)) < 1 or (m.group(2) is not None and int(m.group(2)) < 1):
    raise ValueError(f"scaling_ml1m: size must be d<width> or d<width>x<blocks> (e.g. d64, d64x4), got {size!r}")
  return int(m.group(1)), int(m.group(2) or 2)


def get_config(arg: str | None = None):
  parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
  quick = "quick" in parts
  parts = [p for p in parts if p != "quick"]
  if len(parts) != 2 or parts[0] not in MODELS:
    raise ValueError(f"scaling_ml1m: argument must be '<model>,<size>[,quick]' with model in {MODELS}, "
                     f"e.g. configs/scaling_ml1m.py:hstu,d64; got {arg!r}")
  model, size = parts
  dim, blocks = parse_size(size)
  c = base.base()
  c.name = f"scaling_ml1m_{model}_{size}"
  c.data.protocol = "last_two"
  c.model.name = model
  c.model.dim = dim
  c.model.num_blocks = blocks
  if model == "hstu":
    c.model.dqk = dim
    c.model.dv = dim
  else:   # SASRec's settings as in configs/sasrec_ml1m.py
    c.model = ml_collections.ConfigDict(dict(name="sasrec", dim=dim, num_blocks=blocks, num_heads=1, ffn_dim=dim,
                                             max_len=200, dropout=0.2, backend="xla", attention_tiling="auto"))
  c.train.num_epochs = NUM_EPOCHS
  c.train.eval_every_epochs = NUM_EPOCHS   # once, at the end
  c.train.checkpoint_every_steps = 10_000  # and at each epoch's end (the loop's rule)
  c.eval.nll = True                        # the validation loss: full-catalogue softmax cross-entropy
  c.eval.save_per_example = True           # eval/<split>.npz in the workdir: ranks and NLL per user
  if quick:
    base.apply_quick(c)
  return c
