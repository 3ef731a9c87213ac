"""Kunlun (arXiv 2602.10016) as a multi-task ranker on the default synthetic world (issue 20).

Data, protocol, loss, training and selection: exactly configs/hstu_rank_synthetic.py's
(`ranking_base`: 2,000 users, 8 KuaiRand feedbacks as tasks, last 8 events per user test, 8 before
valid, requests of 8 candidates with <= 64 history events, multi-task BCE, early stopping on
validation NE, AdamW 1e-3 with weight decay 0.1, 8 epochs, batch 128 requests).
Model (recjax/models/kunlun_ranker.py -> recjax/models/kunlun.py): context = the 26 user feature
embeddings; three event types cut from the history by the action bitmask: every event, clicks,
long views; D = 32, per type 3 layers (CompSkip: GDPA + HSP, window attention, GDPA + HSP), 2
heads, 4 summary tokens from 16 seeds, window 8; 2 Wukong experts (hidden 64), 4 head tokens per
candidate; dropout 0.3 before the task heads (as the baselines).
Switches: model.compskip, window, pooling, experts, event_personalisation. With event
personalisation on, each type's window is `event_windows[i]`, so `--config.model.window=0` alone
changes nothing: full attention needs `event_windows=(0, 0, 0)` too. The ablation study's rows are
therefore config arguments, one component removed each (ABLATIONS below, checked by
tests/models/test_kunlun_ranker.py); each names its run kunlun_rank_synthetic_no_<component>:
  :no_compskip                every layer GDPA + fresh HSP + window attention
  :no_window                  full self-attention in every event type
  :no_hsp                     PMA pooling (summary_tokens seeds, no SumKronLinear) instead of HSP
  :no_moe                     1 Wukong expert instead of 2
  :no_event_personalisation   every event type the shared width 32, 3 layers, window 8, 4 tokens
  :no_gdpa                    the personalised FFN as InterFormer computes it (per-sample matmuls with
                              the generated weights) instead of GDPA: same function, other computation
  :no_sumkron                 HSP's seeds compressed by one [S, T] token map instead of SumKronLinear
Combine with quick as e.g. :no_window,quick.

Command:   python -m experiments.run --config=configs/kunlun_rank_synthetic.py
Ablation:  python -m experiments.run --config=configs/kunlun_rank_synthetic.py:no_window (one row each)
Quick:     python -m experiments.run --config=configs/kunlun_rank_synthetic.py:quick
Baselines: configs/{dcnv2,wukong,dlrm,din,hstu}_rank_synthetic.py (same data, protocol, loss).
Hardware:  2-core x86 CPU; budget <= 10 minutes of training on the shared box.
Measured:  664 steps in 503 s of training on the shared, heavily loaded box (582 ms/step).
Result (results/synthetic/kunlun_rank_synthetic.json, seed 42, one seed): best validation epoch 7 of 8;
           test mean NE 0.958 (oracle 0.858), AUC 0.642, GAUC 0.625; is_click NE 0.823. Beats DLRM
           (0.962), HSTU, DCNv2, DIN; Wukong alone (0.952) beats it: a miss at this budget.
Ablation (scripts/reproduce_kunlun_ablation.sh, seed 42, one seed per row; 4-7 min each on the box):
           test mean NE :no_window 0.9585, :no_event_personalisation 0.9577 (both within noise),
           :no_moe 0.9629, :no_compskip 0.9637 (1.6x the FLOPs), :no_hsp 0.9658; README table.
           From 69fe50c: :no_gdpa 0.9588 (the same function computed another way: equal up to
           float rounding), :no_sumkron 0.9676.
"""
import ml_collections

from configs import hstu_rank_synthetic


# One component removed per row of the ablation table (scripts/make_readme_tables.py, section
# kunlun_ablation): the model-setting overrides of each config argument `no_<component>`.
ABLATIONS = {
    "no_compskip": dict(compskip=False),
    "no_window": dict(window=0, event_windows=(0, 0, 0)),
    "no_hsp": dict(pooling="pma"),
    "no_moe": dict(experts=1),
    "no_event_personalisation": dict(event_personalisation=False),
    "no_gdpa": dict(sequence_ffn="pffn"),
    "no_sumkron": dict(hsp_compress="token_linear"),
}


def get_config(arg: str | None = None):
  parts = [p for p in (arg or "").split(",") if p]
  unknown = [p for p in parts if p != "quick" and p not in ABLATIONS]
  ablations = [p for p in parts if p in ABLATIONS]
  if unknown or len(ablations) > 1:
    raise ValueError(f"unknown config argument {arg!r}; use 'quick', one of {sorted(ABLATIONS)}, "
                     f"or one of those and quick joined by a comma")
  c = hstu_rank_synthetic.ranking_base("kunlun_rank_synthetic")
  c.model = ml_collections.ConfigDict(dict(
      name="kunlun", dim=32, events=("all", "click", "long_view"), event_bits=(-1, 0, 6),
      event_personalisation=True, event_widths=(32, 32, 16), event_layers=(3, 3, 1),
      event_windows=(8, 8, 8), event_summary_tokens=(4, 4, 2), width=32, layers=3, window=8,
      summary_tokens=4, heads=2, kron_rank=2, compskip=True, pooling="hsp", sequence_ffn="gdpa",
      hsp_compress="sum_kron", context_summary_tokens=4,
      weight_gen_hidden=64, experts=2, expert_hidden=64, head_tokens=4, time_buckets=32, dropout=0.3,
      backend="xla"))
  for name in ablations:
    c.model.update(ABLATIONS[name])
    c.name = f"kunlun_rank_synthetic_{name}"
  if "quick" in parts:
    hstu_rank_synthetic.apply_quick(c)
  return c
