"""Regenerates the README's result tables from the committed results files.

    python scripts/make_readme_tables.py          # rewrites the marked sections of README.md
    python scripts/make_readme_tables.py --check  # exit 1 if README.md is out of date

Sections live between `<!-- BEGIN <name> -->` and `<!-- END <name> -->` markers:
  reproduction  results/ml-1m/*.json, results/ml-100k/*.json, beside the published HSTU-paper rows
  ranking       every results file with task "ranking" (but Kunlun's ablation rows)
  kunlun_ablation  results/synthetic/kunlun_rank_synthetic{,_no_<component>}.json: one component
                removed per row, beside the paper's reported numbers (plot: plot_kunlun_ablation.py)
  speed         results/bench/train_cpu.json (scripts/bench_train.py)
  mixture       results/mixture_study/{comparison,fit_small}.json (experiments/mixture_study.py --phase=report)
  sports        results/amazon-sports/*.json (TIGER's Sports protocol), beside the published Sports rows
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The HSTU paper / generative-recommenders README (papers.md §3.3); full ranking, last item.
PUBLISHED = {
    ("ml-1m", "sasrec"): (0.2853, 0.1603, 0.5474, 0.2185, 0.7528, 0.2498),
    ("ml-1m", "hstu"): (0.3097, 0.1720, 0.5754, 0.2307, 0.7716, 0.2606),
    ("ml-1m", "hstu_large"): (0.3294, 0.1893, 0.5935, 0.2481, 0.7839, 0.2771),
}
COLS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "hr@200", "ndcg@200")
ORDER = ("sasrec", "hstu", "hstu_large")


def _model_key(r):
  name = r["config"]
  return "hstu_large" if "large" in name else r["model"]


def _fmt_time(s):
  return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


_SEED_SUFFIX = re.compile(r"_seed(\d+)$")


def _group_name(config: str) -> str:
  """`hstu_ml1m_seed2` -> `hstu_ml1m`: the runs of one config at several seeds form one row."""
  return _SEED_SUFFIX.sub("", config)


def _mean_std(values) -> str:
  """`mean ± std` (sample std, n-1) over seeds; a single run is shown bare."""
  if len(values) == 1:
    return f"{values[0]:.4f}"
  m = sum(values) / len(values)
  sd = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5
  return f"{m:.4f} ± {sd:.4f}"


def _load_runs():
  runs = []
  for path in sorted(glob.glob(os.path.join(ROOT, "results", "ml-*", "*.json"))
                     + glob.glob(os.path.join(ROOT, "results", "synthetic", "*.json"))):
    r = json.load(open(path))
    if r.get("config", "").endswith("_quick") or r.get("task", "retrieval") != "retrieval":
      continue
    if r.get("dataset_stats", {}).get("cold_items"):   # a cold-start split is not the reference protocol
      continue
    r["_path"] = os.path.relpath(path, ROOT)
    runs.append(r)
  return runs


def reproduction_table() -> str:
  """One row per (dataset, config) with the mean ± std over its seeds (files `<config>_seed<S>.json`).

  A config that has seeded runs hides its older single-run file (`<config>.json`, the earlier
  protocol); one that has none yet shows that single run, labelled "1 seed".
  """
  groups: dict[tuple[str, str], list[dict]] = {}
  for r in _load_runs():
    seeded = bool(_SEED_SUFFIX.search(r["config"]))
    groups.setdefault((r["dataset"], _group_name(r["config"]) + ("" if seeded else " ")), []).append(r)
  for key, rs in list(groups.items()):
    groups[key] = sorted(rs, key=lambda r: r["seed"])
    # An earlier single run stays until its config has a finished seeded run.
    seeded_key = (key[0], key[1].rstrip())
    if key[1].endswith(" ") and any(not r.get("partial") for r in groups.get(seeded_key, [])):
      del groups[key]
  order = sorted(groups, key=lambda k: (k[0] == "synthetic", k[0],
                                        ORDER.index(_model_key(groups[k][0])) if _model_key(groups[k][0]) in ORDER else 9,
                                        k[1]))
  out = ["| dataset | model | source | seeds | HR@10 | NDCG@10 | HR@50 | NDCG@50 | HR@200 | NDCG@200 | epochs "
         "| wall-clock / seed | notes |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  seen_published = set()
  for key in order:
    rs = groups[key]
    dataset, model = key[0], _model_key(rs[0])
    if (dataset, model) in PUBLISHED and (dataset, model) not in seen_published:
      seen_published.add((dataset, model))
      vals = " | ".join(f"{v:.4f}" for v in PUBLISHED[(dataset, model)])
      out.append(f"| {dataset} | {model} | published (HSTU paper) | 1 | {vals} | 101 | – | with timestamps |")
    vals = " | ".join(_mean_std([r["metrics"]["test"][c] for r in rs]) for c in COLS)
    notes = sorted({n for r in rs for n in r.get("notes", [])})
    if any(r.get("partial") for r in rs):
      notes.insert(0, "PARTIAL: " + ", ".join(f"seed {r['seed']}" for r in rs if r.get("partial")))
    if not _SEED_SUFFIX.search(rs[0]["config"]) and dataset != "synthetic":
      notes.append("single run, earlier protocol (evaluated every 5th epoch)")
    links = ", ".join(f"[{r['seed']}]({r['_path']})" for r in rs)
    epochs = "/".join(sorted({f"{r['epochs']:.0f}" for r in rs}))
    wall = _fmt_time(sum(r["wall_clock_s"] for r in rs) / len(rs))
    when = "latest checkpoint (PARTIAL)" if any(r.get("partial") for r in rs) else "last epoch"
    out.append(f"| {dataset} | {model} | recjax `{key[1].rstrip()}`, {when} | {links} | {vals} | {epochs} | {wall} | "
               f"{'; '.join(notes)} |")
    bests = [r["metrics"]["best_epoch"] for r in rs if r["metrics"].get("best_epoch")]
    if len(bests) == len(rs):
      bvals = " | ".join(_mean_std([b[c] for b in bests]) for c in COLS)
      eps = ", ".join(str(b["epoch"]) for b in bests)
      out.append(f"| {dataset} | {model} | recjax, best epoch (selected on test: optimistic) | {len(rs)} | {bvals} | "
                 f"{eps} | – | |")
  return "\n".join(out)


def _ms_or_zero(s: float) -> str:
  """Parts are differences of medians; one under a millisecond is shown as ≈0, not as noise."""
  return "≈0" if s < 1e-3 else f"{s * 1e3:.0f}"


def speed_table() -> str:
  path = os.path.join(ROOT, "results", "bench", "train_cpu.json")
  if not os.path.exists(path):
    return "_not yet measured: run `python scripts/bench_train.py`_"
  b = json.load(open(path))
  out = [f"Measured {b['date'][:10]} on {b['hardware']['cpu']} ({b['hardware']['cores']} cores), jax "
         f"{b['versions']['jax']}, {b['data']}; matmul peak measured in the same run: "
         f"{b['matmul_peak_gflops']:.0f} GFLOP/s; peak RSS of the "
         f"{'largest row (each in its own process)' if 'peak_rss_note' in b else 'whole benchmark process'}: "
         f"{b['peak_rss_mb']:.0f} MB"
         + (f"; malloc tuned: {'yes' if b['hardware'].get('malloc_tuned') else 'no'}, fused C++ loss kernel: "
            f"{'yes' if b['hardware'].get('native_kernels') else 'no'}" if "malloc_tuned" in b["hardware"] else "")
         + (". GFLOP / step is the timed step's: XLA's count (skipped attention tiles counted as computed, an upper "
            "bound) plus the C++ kernels' (the fused loss; the attention's real query-key pairs where it runs in "
            "C++)." if "attention_kernel_flops_per_step" in b["rows"][0] else
            ". GFLOP / step is the timed step's: XLA's count (skipped attention tiles counted as computed, an upper "
            "bound) plus the fused loss kernel's." if "xla_flops_per_step" in b["rows"][0] else
            ". GFLOP / step is XLA's count for the plain step (dense attention, XLA loss), the work the step stands for."),
         "",
         "| model | ms / step | forward | backward | optimizer | real tokens/s | examples/s | GFLOP / step | "
         "utilisation | PyTorch reference, as shipped | speed-up | reference, tuned allocator | speed-up |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in b["rows"]:
    peer = f"{r['peer_step_s_median'] * 1e3:.0f} ms" if "peer_step_s_median" in r else "–"
    sp = f"{r['speedup_vs_peer']:.1f}×" if "speedup_vs_peer" in r else "–"
    tpeer = (f"{r['peer_tuned_allocator_step_s_median'] * 1e3:.0f} ms"
             if "peer_tuned_allocator_step_s_median" in r else "–")
    tsp = f"{r['speedup_vs_peer_tuned_allocator']:.1f}×" if "speedup_vs_peer_tuned_allocator" in r else "–"
    name = r["config"] + (" (unpacked)" if r.get("model", "").endswith("_unpacked") else
                          " (attention in XLA)" if r.get("model", "").endswith("_xla_attention") else "")
    # Ranking rows: an example is a request; its candidates are the scored unit.
    cands = f" ({r['candidates_per_s']:,.0f} candidates)" if "candidates_per_s" in r else ""
    out.append(f"| {name} | {r['step_s_median'] * 1e3:.0f} | {r['forward_s'] * 1e3:.0f} | "
               f"{r['backward_s'] * 1e3:.0f} | {_ms_or_zero(r['optimizer_s'])} | {r['tokens_per_s']:,.0f} | "
               f"{r['examples_per_s']:.0f}{cands} | {r['flops_per_step'] / 1e9:.1f} | {r['utilisation_vs_matmul_peak']:.1%} | "
               f"{peer} | {sp} | {tpeer} | {tsp} |")
  if b.get("peer"):
    p = b["peer"]
    out.append("")
    out.append(f"Reference: generative-recommenders research trainer @ {str(p.get('peer_commit'))[:8]}, torch "
               f"{p.get('torch_version')}, anomaly detection {'on' if p.get('anomaly_detection') else 'off'}, "
               f"timed in the same benchmark invocation by ../shared/tools/peer-hstu (median of its 20 steps; "
               f"tuned allocator = GLIBC_TUNABLES from the peer README).")
  return "\n".join(out)


# The tasks whose NE the ranking table shows, where a results file has them: the two common
# feedbacks of KuaiRand-format data, and both MovieLens rating tasks.
RANKING_HEADLINE_TASKS = ("is_click", "long_view", "rating_ge_4", "rating_eq_5")


def _same_or_mean_std(values) -> str:
  """A value every seed shares (the synthetic oracle: the world does not depend on the seed) bare."""
  return f"{values[0]:.4f}" if max(values) - min(values) < 1e-12 else _mean_std(values)


def ranking_table() -> str:
  """Ranking runs (`config.task="ranking"`): test metrics at the epoch chosen on validation NE.

  One row per (dataset, config): the runs `<config>.json` (the config's default seed) and
  `<config>_seed<S>.json` (`--config.seed=S --config.name=<config>_seed<S>`) are seeds of one
  config and show as mean ± std (sample std) over the seeds, with a link to each seed's file.
  """
  groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "results", "*", "*.json"))):
    r = json.load(open(path))
    if not isinstance(r, dict) or r.get("task") != "ranking" or r.get("config", "").endswith("_quick"):
      continue
    # The run's config name, not the model's: two configs of one model (e.g. 1 and 2 transducer
    # streams, short and full runs) must be told apart.
    name = _group_name(r.get("config") or r["model"])
    if name in KUNLUN_ABLATION_CONFIGS:   # one component removed: shown in the ablation table only
      continue
    groups.setdefault((r["dataset"], name), []).append((os.path.relpath(path, ROOT), r))
  if not groups:
    return "_no ranking runs yet_"
  out = ["| dataset | run (config) | seeds | test mean NE | AUC | GAUC | oracle NE | share of gap closed (mean NE) | "
         "gap closed per task, averaged | NE per headline task | steps | wall-clock / seed |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  ms = lambda vs: "–" if not vs or any(v is None for v in vs) else _mean_std(vs)
  mean_ne = lambda rs: sum(r["metrics"]["test"]["mean"]["ne"] for _, r in rs) / len(rs)
  for (dataset, name), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], mean_ne(kv[1]))):
    rs = sorted(rs, key=lambda x: x[1]["seed"])
    tests = [r["metrics"]["test"] for _, r in rs]
    means = [t["mean"] for t in tests]
    oracles = [m.get("oracle_ne") for m in means]
    has_oracle = all(o is not None and o < 1 for o in oracles)
    # (NE_base − NE_model) / (NE_base − NE_oracle) with NE_base = 1 (NE is normalised by the base rate),
    # on the task-averaged NE: per-task ratios of rare feedbacks have tiny denominators. The next
    # column is the task's own average of the per-task ratios (`metrics.test.mean.gap_closed`).
    share = [(1 - m["ne"]) / (1 - o) for m, o in zip(means, oracles)] if has_oracle else None
    per_task = ", ".join(f"{k} {ms([t[k]['ne'] for t in tests])}" for k in RANKING_HEADLINE_TASKS
                         if all(k in t for t in tests)) or "–"
    links = ", ".join(f"[{r['seed']}]({rel})" + (" (PARTIAL)" if r.get("partial") else "") for rel, r in rs)
    steps = "/".join(sorted({str(r["steps"]) for _, r in rs}, key=int))
    wall = _fmt_time(sum(r["wall_clock_s"] for _, r in rs) / len(rs))
    out.append(f"| {dataset} | {name} | {links} | {ms([m['ne'] for m in means])} | {ms([m.get('auc') for m in means])} | "
               f"{ms([m.get('gauc') for m in means])} | {_same_or_mean_std(oracles) if has_oracle else '–'} | "
               f"{'–' if share is None else _mean_std(share)} | {ms([m.get('gap_closed') for m in means])} | "
               f"{per_task} | {steps} | {wall} |")
  return "\n".join(out)


# Kunlun's ablation (issue 20): configs/kunlun_rank_synthetic.py, and one row per component removed
# (its config argument `:<row>`, a test keeps these in step with the config's ABLATIONS), with what
# the paper reports for that component (../shared/research/papers.md §1.10: secondary sources;
# relative NE, Meta's sign: a positive NE gain is better).
KUNLUN_FULL = "kunlun_rank_synthetic"
KUNLUN_ABLATIONS = (   # (row, what is removed, the paper's numbers for the component)
    ("no_compskip", "CompSkip (every layer GDPA + fresh HSP + window)", "CompSkip: FLOPs −43.1%, QPS +35%, NE-neutral"),
    ("no_window", "sliding window (full attention)", "window: FLOPs −29.5%, QPS +31.1%, NE-neutral"),
    ("no_hsp", "HSP (PMA pooling instead)", "HSP vs PMA: +0.08% NE; PMA 8.8% faster"),
    ("no_moe", "Mixture of Wukong Experts (1 expert, not 2)", "expert parallelism: QPS +4%; NE not given"),
    ("no_event_personalisation", "event-level personalisation (shared capacity)",
     "FLOPs −11%, QPS +13%; NE not given"),
    ("no_gdpa", "GDPA (the same personalised FFN as per-sample matmuls)", "−GDPA: MFU 37%→34%, NE −0.04%"),
    ("no_sumkron", "SumKronLinear (one [S, T] token map compresses the seeds)", "SumKronLinear: +0.03% NE"),
)
# The same ablation rows on real data: MovieLens-100K's rating ranker (configs/kunlun_rank_ml100k.py).
KUNLUN_ABLATION_DATASETS = {   # full config -> (results folder, seed-noise yardstick config or None)
    "kunlun_rank_synthetic": ("synthetic", "kunlun_rank_synthetic"),   # Kunlun's own seeds (42, 1, 2)
    "kunlun_rank_ml100k": ("ml-100k", "kunlun_rank_ml100k"),   # Kunlun's own seeds (42, 1, 2) on ML-100K
}
KUNLUN_ABLATION_CONFIGS = {f"{full}_{row}" for full in KUNLUN_ABLATION_DATASETS for row, _, _ in KUNLUN_ABLATIONS}
NOISE_CONFIG = KUNLUN_ABLATION_DATASETS[KUNLUN_FULL][1]


def seed_std(config: str, dataset: str = "synthetic") -> tuple[float | None, int]:
  """(sample std of test mean NE over the seeds of `config`, number of seeds); None under 2 seeds."""
  nes = []
  for path in glob.glob(os.path.join(ROOT, "results", dataset, f"{config}*.json")):
    r = json.load(open(path))
    if _group_name(r.get("config", "")) == config and not r.get("partial"):
      nes.append(r["metrics"]["test"]["mean"]["ne"])
  if len(nes) < 2:
    return None, len(nes)
  m = sum(nes) / len(nes)
  return (sum((v - m) ** 2 for v in nes) / (len(nes) - 1)) ** 0.5, len(nes)


def kunlun_ablation_rows(full_config: str = KUNLUN_FULL) -> tuple[dict | None, list[dict], list[str]]:
  """(the full model's row, one row per ablation run found, the ablation rows not yet run).

  A row: run, removed, paper, path, ne, auc, gauc, share (of the oracle gap, on mean NE),
  gflops (train GFLOPs per request), best_epoch, epochs, partial; ablation rows add d_ne (row − full:
  positive = removing the component hurts) and flops_change (full / row − 1: the component's share of
  FLOPs saved, negative when it saves, the paper's sign); both None without a full row.
  """
  def load(name, removed, paper):
    path = os.path.join(ROOT, "results", KUNLUN_ABLATION_DATASETS[full_config][0], f"{name}.json")
    if not os.path.exists(path):
      return None
    r = json.load(open(path))
    mean = r["metrics"]["test"]["mean"]
    oracle = mean.get("oracle_ne")
    flops = (r.get("flops") or [{}])[0].get("flops_per_example")
    return {"run": name, "removed": removed, "paper": paper, "path": os.path.relpath(path, ROOT),
            "ne": mean["ne"], "auc": mean.get("auc"), "gauc": mean.get("gauc"),
            "share": (1 - mean["ne"]) / (1 - oracle) if oracle is not None and oracle < 1 else None,
            "gflops": flops / 1e9 if flops else None,
            "best_epoch": (r["metrics"].get("best_epoch") or {}).get("epoch"),
            "epochs": r.get("config_values", {}).get("train", {}).get("num_epochs", r.get("epochs")),
            "partial": bool(r.get("partial"))}
  full = load(full_config, "none (full Kunlun)", "")
  rows, missing = [], []
  for row, removed, paper in KUNLUN_ABLATIONS:
    r = load(f"{full_config}_{row}", removed, paper)
    if r is None:
      missing.append(row)
      continue
    r["d_ne"] = r["ne"] - full["ne"] if full else None
    r["flops_change"] = full["gflops"] / r["gflops"] - 1 if full and full["gflops"] and r["gflops"] else None
    rows.append(r)
  return full, rows, missing


KUNLUN_ABLATION_BENCH = os.path.join("results", "bench", "kunlun_ablation_cpu.json")


def kunlun_ablation_bench() -> dict:
  """Bench row name (`kunlun`, `kunlun_<row>`) -> (requests/s, utilisation of the measured matmul peak)
  from `python scripts/bench_train.py --models kunlun_ablation --out results/bench/kunlun_ablation_cpu.json`:
  every row's training step timed in one invocation, rounds alternating; {} before it has run."""
  path = os.path.join(ROOT, KUNLUN_ABLATION_BENCH)
  if not os.path.exists(path):
    return {}
  rows = json.load(open(path))["rows"]
  return {r["model"]: (r["examples_per_s"], r["utilisation_vs_matmul_peak"]) for r in rows}


def kunlun_ablation_table(full_config: str = KUNLUN_FULL) -> str:
  full, rows, missing = kunlun_ablation_rows(full_config)
  # The step throughput bench runs on the synthetic world: its columns belong to that table only.
  bench = kunlun_ablation_bench() if full_config == KUNLUN_FULL else {}
  if full is None and not rows:
    return "_no Kunlun ablation runs yet: scripts/reproduce_kunlun_ablation.sh_"
  folder, noise_config = KUNLUN_ABLATION_DATASETS[full_config]
  std, n_seeds = seed_std(noise_config, folder) if noise_config else (None, 0)
  band = 2 * std if std is not None else None
  f4 = lambda v: "–" if v is None else f"{v:.4f}"   # noqa: E731
  out = []
  if missing or full is None:
    out += [f"**PARTIAL**: not yet run: {', '.join(([] if full else [full_config]) + missing)}.", ""]
  out += ["| component removed | run | test mean NE | ΔNE vs full (relative) | AUC | GAUC | share of gap closed | "
          "train GFLOPs / request | the component's FLOPs change | best epoch | requests / s (bench) | "
          "MFU (bench) | paper, for the component |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in ([full] if full else []) + rows:
    link = f"[{r['run']}]({r['path']})" + (" (PARTIAL)" if r["partial"] else "")
    if r is full:
      d, fc = "–", "–"
    else:
      d = "–" if r["d_ne"] is None else (f"{r['d_ne']:+.4f} ({100 * r['d_ne'] / full['ne']:+.2f}%)"
                                        + (" within noise" if band is not None and abs(r["d_ne"]) < band else ""))
      fc = "–" if r["flops_change"] is None else f"{100 * r['flops_change']:+.1f}%"
    gf = "–" if r["gflops"] is None else f"{r['gflops']:.4f}"
    best = "–" if r["best_epoch"] is None else f"{r['best_epoch']} of {r['epochs']}"
    b = bench.get("kunlun" if r is full else "kunlun_" + r["run"][len(full_config) + 1:])
    ex, util = ("–", "–") if b is None else (f"{b[0]:.0f}", f"{100 * b[1]:.1f}%")
    out.append(f"| {r['removed']} | {link} | {f4(r['ne'])} | {d} | {f4(r['auc'])} | {f4(r['gauc'])} | "
               f"{f4(r['share'])} | {gf} | {fc} | {best} | {ex} | {util} | {r['paper'] or '–'} |")
  noise = (f"{noise_config}'s test mean NE std over its {n_seeds} seeds is {std:.4f}, so |ΔNE| < 2σ = {band:.4f} "
           f"is marked within noise" if std is not None else "no seed-noise yardstick on this dataset yet")
  out += ["", f"One seed (42) per row: same data, protocol and epochs; test split at the epoch chosen on validation "
          f"NE. ΔNE = row − full (positive: removing the component hurts); relative = ΔNE / full NE. Seed noise: "
          f"{noise}. FLOPs: XLA's count of one training step / 128 requests; the component's FLOPs change = "
          f"full / row − 1 (negative: the component saves), the sign of the paper's numbers. "
          + (f"Requests / s and MFU: every row's training step timed side by side in one invocation of "
             f"`scripts/bench_train.py --models kunlun_ablation` ({KUNLUN_ABLATION_BENCH}; 128 requests per step, "
             f"MFU = XLA-counted FLOPs / step time / the matmul peak measured in the same run). "
             if bench else ("Requests / s and MFU: measured on the synthetic world only (its table). "
                            if full_config != KUNLUN_FULL else "Requests / s and MFU: the bench has not run yet. "))
          + "Paper: papers.md §1.10, from secondary sources; its NE numbers are relative, a positive NE gain is better."]
  return "\n".join(out)


def _count_numbers(tree) -> int:
  """Fitted parameters of a law as stored in fit_small.json (nested dicts and lists of numbers)."""
  if isinstance(tree, dict):
    return sum(_count_numbers(v) for v in tree.values())
  if isinstance(tree, list):
    return sum(_count_numbers(v) for v in tree)
  return 1


MIXTURE_LABELS = {"predicted": "predicted by the mixture law", "uniform": "uniform", "natural": "natural",
                  "bestsmall": "best of the small grid"}


def mixture_tables() -> str:
  """The mixture study: both laws' MRE (fitted on the small runs, held out on the larger model's
  runs), the larger model's four mixtures as mean ± std over seeds, and the paired differences with
  the done-when verdict (the rule of recjax/scaling/seeds.py)."""
  folder = os.path.join(ROOT, "results", "mixture_study")
  if not os.path.exists(os.path.join(folder, "comparison.json")):
    return "_not yet run: scripts/reproduce_mixture_study.sh_"
  c = json.load(open(os.path.join(folder, "comparison.json")))
  fit = json.load(open(os.path.join(folder, "fit_small.json")))
  sd = lambda mean, std, n: f"{mean:.4f}" if n == 1 else f"{mean:.4f} ± {std:.4f}"
  held = c["heldout_larger_model"]
  out = [f"| law | params | fitted MRE ({c['small_runs']} small runs) | held-out MRE (the larger model's "
         f"{c['heldout_runs']} runs) |", "|---|---|---|---|"]
  for key, name in (("mixture_law", "mixture law (capacity competition + noise)"),
                    ("exponential_law", "exponential law (Ye et al., no N or D)")):
    out.append(f"| {name} | {_count_numbers(fit['params'][key])} | {fit['metrics'][key]['train']['mre']:.2%} | "
               f"{held[key]['mre']:.2%} |")
  scale = c["scale"]
  out += ["", f"The larger model (width {scale['dim']}, {scale['targets']:,} targets, {scale['model_size']:,} "
          f"parameters) at four mixtures; mean ± sample std over the seeds (the training seed; the drawn targets "
          f"are the same at every seed):", "",
          "| mixture (tab0 … tab3) | seeds | tab losses | mean held-out loss | HR@10 |", "|---|---|---|---|---|"]
  for m in ("predicted", "uniform", "natural", "bestsmall"):
    if m not in c["comparison"]:
      continue
    r = c["comparison"][m]
    n = len(r["seeds"])
    w = "" if m == "uniform" else " (" + ", ".join(f"{x:.3f}" for x in r["weights"]) + ")"
    tabs = ", ".join(f"{mu:.3f}" + ("" if n == 1 else f" ± {s:.3f}")
                     for mu, s in zip(r["tab_losses"]["mean"], r["tab_losses"]["std"]))
    out.append(f"| {MIXTURE_LABELS[m]}{w} | {', '.join(map(str, r['seeds']))} | {tabs} | "
               f"{sd(r['mean_loss']['mean'], r['mean_loss']['std'], n)} | {sd(r['hr@10']['mean'], r['hr@10']['std'], n)} |")
  out += ["", "Paired by seed (same initial weights and batch order; only the supervised targets differ):", "",
          "| difference of mean held-out loss | per seed | mean ± std | 95% t-interval | verdict |",
          "|---|---|---|---|---|"]
  for k, v in c["paired"].items():
    per = ", ".join(f"{s}: {d:+.4f}" for s, d in zip(v["seeds"], v["diffs"]))
    ci = "–" if v["ci"] is None else f"[{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
    out.append(f"| {k.replace('_minus_', ' − ')} | {per} | {v['mean']:+.4f} ± {v['std']:.4f} | {ci} | "
               f"{v['verdict']} |")
  dw = c["done_when"]
  if dw:
    yes = lambda b: "no worse" if b else "WORSE"
    out += ["", f"Done-when ({dw['seeds']} seed{'s' if dw['seeds'] != 1 else ''}"
            f"{', PARTIAL' if dw['partial'] else ''}): predicted vs uniform **{yes(dw['predicted_no_worse_than_uniform'])}** "
            f"({dw['verdict_vs_uniform']}), vs natural **{yes(dw['predicted_no_worse_than_natural'])}** "
            f"({dw['verdict_vs_natural']}). Rule: {dw['rule']}."]
  return "\n".join(out)


# Amazon Sports under TIGER's protocol (papers.md §6e): Recall@5, Recall@10, NDCG@5, NDCG@10.
PUBLISHED_SPORTS = (
    ("TIGER (TIGER paper, Table 1)", (0.0264, 0.0400, 0.0181, 0.0225)),
    ("SASRec as quoted by TIGER", (0.0233, 0.0350, 0.0154, 0.0192)),
    ("HSTU, an open reproduction (github.com/phonism/genrec)", (None, 0.0365, None, 0.0207)),
)
SPORTS_COLS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")   # one target per user: Recall@K = HR@K


def sports_table() -> str:
  """Published Sports rows, then one row per results/amazon-sports/*.json (seeds grouped)."""
  out = ["| model | source | seeds | Recall@5 | Recall@10 | NDCG@5 | NDCG@10 | epochs / steps | wall-clock / seed | notes |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for name, vals in PUBLISHED_SPORTS:
    cells = " | ".join("–" if v is None else f"{v:.4f}" for v in vals)
    out.append(f"| {name} | published | – | {cells} | – | – | |")
  groups: dict[str, list[dict]] = {}
  for path in sorted(glob.glob(os.path.join(ROOT, "results", "amazon-sports", "*.json"))):
    r = json.load(open(path))
    if r.get("config", "").endswith("_quick"):
      continue
    r["_path"] = os.path.relpath(path, ROOT)
    groups.setdefault(_group_name(r["config"]), []).append(r)
  for config, rs in sorted(groups.items()):
    rs = sorted(rs, key=lambda r: r["seed"])
    seeds = ", ".join(f"[{r['seed']}]({r['_path']})" for r in rs)
    cells = " | ".join(_mean_std([r["metrics"]["test"][c] for r in rs]) for c in SPORTS_COLS)
    epochs = rs[0].get("epochs")
    size = (f"{epochs:.0f} epochs" if epochs and epochs == int(epochs) else f"{rs[0].get('steps', '?')} steps")
    notes = []
    # A finished run re-evaluated under another protocol (experiments/run.py --snapshot): complete
    # training, but its test row is the final parameters', not the validation-selected epoch's.
    reevaluated = [r for r in rs if "per_epoch_before_eval_change" in r["metrics"]]
    if reevaluated:
      notes.append("final epoch's parameters re-evaluated (no epoch selection): "
                   + ", ".join(f"seed {r['seed']}" for r in reevaluated))
    if any(r.get("partial") and r not in reevaluated for r in rs):
      notes.append("PARTIAL: " + ", ".join(f"seed {r['seed']}" for r in rs if r.get("partial") and r not in reevaluated))
    notes.append("history items removed (our protocol)" if "history_removed" in config
                 else "history items stay candidates (TIGER's protocol)")
    when = _fmt_time(sum(r["wall_clock_s"] for r in rs) / len(rs))
    out.append(f"| {rs[0]['model']} | recjax `{config}` | {seeds} | {cells} | {size} | {when} | {'; '.join(notes)} |")
  return "\n".join(out)


def _fmt_mean_std(ms: dict) -> str:
  return _mean_std([ms["mean"]]) + (f" ± {ms['std']:.4f}" if ms.get("std") is not None else "")


def sid_items_table() -> str:
  """The SID-vs-ID item-table runs (configs/sid_hstu_*.py, any dataset), as experiments/semantic_ids.py
  gathers them: one row per config, mean ± std over seeds, last-epoch test metrics with their warm /
  cold split (cold items never trained)."""
  sys.path.insert(0, ROOT)
  from experiments import semantic_ids  # pylint: disable=import-outside-toplevel
  rows = semantic_ids.gather_item_tables(os.path.join(ROOT, "results"))
  out = ["| dataset | cold items | item table | rows of D (x smaller than ID) | seeds | epochs | NDCG@10 | HR@10 "
         "| warm NDCG@10 | cold HR@10 (hits / cold targets) | cold HR@200 |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in sorted(rows, key=lambda r: (r["dataset"], r["cold_items"], r["table"] != "ID", r["config"])):
    size = f"{r['rows']:,}" + (f" ({r['shrink']:.1f}x)" if "shrink" in r else "")
    cold_cell = _fmt_mean_std(r["cold_hr@10"]) if "cold_hr@10" in r else "–"
    if "cold_hr@10" in r and r["cold_hr@10"]["n"] == 1:
      cold_cell += f" ({round(r['cold_hr@10']['mean'] * r['cold_targets'])} / {r['cold_targets']})"
    seeds = ", ".join(f"[{s}]({os.path.relpath(f, ROOT)})" for s, f in zip(r["seeds"], r["files"]))
    epochs = "/".join(f"{e:.0f}" for e in r["epochs"])
    out.append(f"| {r['dataset']} | {r['cold_items']:.0%} | {r['table']} | {size} | {seeds} | {epochs} | "
               f"{_fmt_mean_std(r['ndcg@10'])} | {_fmt_mean_std(r['hr@10'])} | "
               f"{_fmt_mean_std(r['warm_ndcg@10']) if 'warm_ndcg@10' in r else '–'} | {cold_cell} | "
               f"{_fmt_mean_std(r['cold_hr@200']) if 'cold_hr@200' in r else '–'} |")
  return "\n".join(out)


SECTIONS = {"reproduction": reproduction_table, "ranking": ranking_table, "speed": speed_table,
            "kunlun_ablation": kunlun_ablation_table,
            "kunlun_ablation_ml100k": lambda: kunlun_ablation_table("kunlun_rank_ml100k"), "mixture": mixture_tables,
            "sports": sports_table, "sid_items": sid_items_table}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--check", action="store_true")
  args = ap.parse_args()
  path = os.path.join(ROOT, "README.md")
  text = open(path, encoding="utf-8").read()
  new = text
  for name, fn in SECTIONS.items():
    pat = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.S)
    if not pat.search(new):
      print(f"README.md has no {name} markers", file=sys.stderr)
      continue
    new = pat.sub(lambda m: m.group(1) + fn() + "\n" + m.group(2), new)
  if args.check:
    sys.exit(0 if new == text else 1)
  with open(path, "w", encoding="utf-8") as f:
    f.write(new)
  print("README.md tables regenerated")


if __name__ == "__main__":
  main()
