"""Issue 18's long-sequence study from its runs' results files: table, plots and the three verdicts.

    python -m experiments.long_sequences [--results_dir=results/long_sequences] [--preset=cpu] [--epochs=N]
        [--study_out=results/long_sequences/summary/<preset>[_e<N>]] [--quick_runs] [--count_inference]

Reads every results file of `--results_dir` written by a configs/long_sequences.py arm at
`--preset` ("cpu", "cpu_multi" or "world": configs/long_sequences.py PRESETS; partial runs and the
other preset's runs skipped; quick runs only with `--quick_runs`, and then only they, to smoke-test the pipeline) and writes
  <out>.md                 the table: per arm, the seeds, test NE (mean over the 8 feedbacks; mean
                           ± sample std over seeds where several), ΔNE vs hstu_full (relative), NE
                           and gap closed on the planted return-phase candidates (`planted.`, the
                           ranking task) with their AUC and calibration, the overall gap closed, training FLOPs per example and
                           their ratio to hstu_full; then the verdicts; then the ULTRA-HSTU ablations
                           that have run, in the paper's shape (ABLATIONS: ΔNE and training / inference
                           FLOPs per example against `ultra`, or the arm an entry names);
  <out>.json               the same rows, per-run rows, the verdicts with their numbers, the ablations;
  <out>_ne_vs_flops.png    test NE against training FLOPs per example, one point per arm;
  <out>_planted_ne.png     planted NE per arm, the oracle's NE on the same candidates beside;
  <out>_ne_vs_tokens.png   test and planted NE against the history tokens each arm's stack runs on
                           (quality against L: truncation to the newest H / f events and GACT folding
                           to H / f tokens as two lines, HSTU newest-256 / full as a third);
  <out>_scaling.png        only with the width runs below: test NE against training (and inference)
                           FLOPs per example, every run of ultra and hstu_full a point, their fits.
Every number is the test split at the epoch each run selected on validation (`metrics.test`).
Training FLOPs per example are the run's own count (`train_flops.per_example`: every step at its
batch's width, over all steps), not one entry of the per-shape `flops` list: ragged batches come
in several widths, and the arms differ in how often each width occurs.

The verdicts (each true, false or "not run" when an arm it needs has no finished run):
  1. "full-history HSTU beats newest-256 (planted NE)": hstu_full vs hstu_newest256 on planted NE.
  2. "ULTRA-HSTU within 0.5% NE of full HSTU at <= 50% of its training FLOPs": ultra's mean test NE
     at most 1.005 x hstu_full's, and its training FLOPs per example at most 0.5 x hstu_full's.
  3. "GACT f=4 beats truncation to the same token budget": gact_f4 vs trunc_f4 on test NE.
Scaling efficiency (issue 18): where ultra and hstu_full have runs at >= 3 widths (`w<D>` extras),
`scaling` fits test NE against log10 training FLOPs per example per family (every run one point)
and reports ultra's slope ratio and iso-NE compute ratio over hstu_full with bootstrap intervals (the
latter at hstu_full's largest run and at ultra's: `scaling`),
in the .md and under `scaling_efficiency` (`training`; `inference` the same against inference FLOPs
per example where every run has a count); the table and verdicts use the default width only.
Inference FLOPs per example (`--count_inference`, cached in <out>_inference_flops.json) are counted
here, not by the runs: for each arm's config, the ranking task's `inference_flops` (XLA's count of
the compiled forward pass over the test split's evaluation batches, each request at its own
history width; the world regenerated from its seed, no parameters needed). They depend on the
config only, so one count serves every seed. Arms without a count show "–".

"A beats B" is the paired rule of recjax/scaling/seeds.py on A − B over the seeds both have (lower
NE is better): true when the 95% t-interval lies below 0; with one common seed, the sign alone
(flagged "one seed: sign only"). The numbers beside each verdict say which case it was.
"""
from __future__ import annotations

import datetime
import glob
import json
import os
import sys
import time

from absl import app, flags
import numpy as np

from configs import long_sequences as ls_config
from experiments import scaling_study
from recjax.scaling import fits
from recjax.scaling import seeds as seeds_lib
from recjax.train import results

# Flag names are process-global in absl: none of scaling_study's or mixture_study's.
_RESULTS_DIR = flags.DEFINE_string("results_dir", "results/long_sequences", "folder of the arms' results JSON")
_PRESET = flags.DEFINE_enum("preset", "cpu", list(ls_config.PRESETS), "which world's runs to gather")
_STUDY_OUT = flags.DEFINE_string("study_out", None, "output path without extension "
                                 "(default <results_dir>/summary/<preset>[_quick])")
_QUICK_RUNS = flags.DEFINE_bool("quick_runs", False, "gather the quick runs (a smoke test of the pipeline) instead")
_EPOCHS = flags.DEFINE_integer("epochs", None, "gather the runs trained for this many epochs (configs/long_sequences.py "
                                "`e<N>`; default its DEFAULT_EPOCHS)")
_COUNT_INFERENCE = flags.DEFINE_bool("count_inference", False, "count the inference FLOPs of every arm not yet in "
                                     "<out>_inference_flops.json (a few compiles per arm; see inference_flops)")

REFERENCE = "hstu_full"
NE_TOLERANCE, FLOPS_BUDGET = 0.005, 0.5     # verdict 2: within 0.5% NE at <= 50% of the FLOPs
VERDICTS = (
    ("full-history HSTU beats newest-256 (planted NE)", "beats", "hstu_full", "hstu_newest256", "planted_ne"),
    ("ULTRA-HSTU within 0.5% NE of full HSTU at <= 50% of its training FLOPs", "within", "ultra", "hstu_full",
     "test_ne"),
    ("GACT f=4 beats truncation to the same token budget", "beats", "gact_f4", "trunc_f4", "test_ne"),
)


def run_row(path: str, preset: str, quick: bool) -> dict | None:
  """One results file -> its row, or None when it is not a finished run of this study at `preset`."""
  with open(path) as f:
    r = json.load(f)
  study = (r.get("config_values") or {}).get("study") or {}
  if (r.get("partial") or study.get("name") != "long_sequences" or study.get("preset") != preset
      or bool(r["config_values"].get("quick")) != quick):
    return None
  try:
    if "best_epoch" not in r["metrics"]:   # no per-epoch evaluation (quick runs): the final test, no valid NE
      r["metrics"]["best_epoch"] = {"epoch": None, "mean": {"ne": np.nan, "auc": np.nan}}
    row = scaling_study.ranking_row(r, path)   # seed, FLOPs, test / valid NE, best epoch, wall-clock
    test = r["metrics"]["test"]
    planted = test.get("planted") or {}
    pm = planted.get("mean", {})
    row.update(arm=study["arm"], preset=preset, config=r["config"],
               width=int(study.get("width", ls_config.DEFAULT_WIDTH)),
               epoch_budget=int(study.get("epochs", ls_config.DEFAULT_EPOCHS)),
               test_gap_closed=test["mean"].get("gap_closed", np.nan),
               test_oracle_ne=test["mean"].get("oracle_ne", np.nan), planted_candidates=planted.get("candidates", 0),
               planted_ne=pm.get("ne", np.nan), planted_oracle_ne=pm.get("oracle_ne", np.nan),
               planted_auc=pm.get("auc", np.nan), planted_calibration=pm.get("calibration", np.nan),
               planted_gap_closed=pm.get("gap_closed", np.nan),
               history_events=int(r["config_values"]["ranking"]["history_len"]),
               history_tokens=history_tokens(r["config_values"]["ranking"]["history_len"],
                                             r["config_values"]["model"]))
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a finished configs/long_sequences.py run ({type(e).__name__}: {e})") from None
  return row


def history_tokens(history_len: int, model: dict) -> int:
  """The most history tokens a request's stacks run on, summed over the streams: each stream its events'
  tokens (two per event when interleaved), cut to its `stream_len` cap, over the GACT fold."""
  per_stream = int(history_len) * (2 if model.get("token_layout") == "interleaved" else 1)
  caps = list(model.get("stream_len") or ()) or [0] * len(model.get("stream_select") or (0,))
  return sum(min(int(c), per_stream) if c else per_stream for c in caps) // int(model.get("history_fold") or 1)


def collect(results_dir: str, preset: str, quick: bool = False) -> list[dict]:
  """This study's finished runs at `preset` (one row per run), sorted by arm and seed."""
  rows = [row for p in sorted(glob.glob(os.path.join(results_dir, "*.json")))
          if (row := run_row(p, preset, quick)) is not None]
  return sorted(rows, key=lambda x: (x["arm"], x["seed"]))


def config_argument(row: dict, quick: bool = False) -> str:
  """The configs/long_sequences.py argument that rebuilds a run's config (seed aside)."""
  parts = [row["arm"]] + ([row["preset"]] if row["preset"] != "world" else []) + (["quick"] if quick else [])
  if row["width"] != ls_config.DEFAULT_WIDTH:
    parts.append(f"w{row['width']}")
  if row["epoch_budget"] != ls_config.DEFAULT_EPOCHS:
    parts.append(f"e{row['epoch_budget']}")
  return ",".join(parts)


def inference_flops(argument: str) -> dict:
  """Forward FLOPs per example of an arm's config on its test split (RankingTask.inference_flops)."""
  import tempfile  # pylint: disable=import-outside-toplevel
  from recjax.tasks.ranking import RankingTask  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  with tempfile.TemporaryDirectory(prefix="recjax_inference_flops_") as work:   # the world, regenerated
    task = RankingTask(ls_config.get_config(argument), work)
    counted = task.inference_flops(task.build_model()[0])
  return {**counted, "argument": argument, "count_seconds": round(time.time() - t0, 1)}


def add_inference_flops(rows: list[dict], cache_path: str, quick: bool, count: bool) -> dict:
  """Sets row["inference_flops_per_example"] from the counts cached at `cache_path` (a results file whose
  `counts` maps each config argument to its count), counting (and caching) the missing arguments when
  `count`; NaN where none. Returns the counts."""
  counts, seconds = {}, 0.0
  if os.path.exists(cache_path):
    with open(cache_path) as f:
      cached = json.load(f)
    counts, seconds = cached.get("counts", {}), float(cached.get("wall_clock_s", 0.0))
  missing = sorted({config_argument(r, quick) for r in rows} - set(counts))
  if count and missing:
    t0 = time.time()
    for argument in missing:
      print(f"counting inference FLOPs of {argument}", flush=True)
      counts[argument] = inference_flops(argument)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results.write_results(cache_path, {   # the fields every results file carries, then the counts
        "dataset": "long_sequences (the arms' test splits)", "model": ", ".join(sorted(counts)),
        "config": "configs/long_sequences.py",
        "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.long_sequences"] + sys.argv[1:]),
        "commit": results.git_commit(repo), "versions": results.versions(), "hardware": results.hardware(),
        "wall_clock_s": seconds + time.time() - t0, "seed": None,
        "metrics": {"inference_flops_per_example": {a: c["flops_per_example"] for a, c in sorted(counts.items())}},
        "counts": dict(sorted(counts.items()))})
  for r in rows:
    r["inference_flops_per_example"] = counts.get(config_argument(r, quick), {}).get("flops_per_example", np.nan)
  return counts


def _mean_std(values) -> dict:
  s = seeds_lib.summarise([float(v) for v in values]) if all(np.isfinite(values)) else None
  return {"mean": s.mean, "std": s.std, "n": s.n} if s else {"mean": float("nan"), "std": float("nan"), "n": len(values)}


def arm_summaries(rows: list[dict]) -> dict[str, dict]:
  """Per arm: seeds, the qualities' mean ± std over seeds, FLOPs per example, and the ratios to hstu_full."""
  order = {a: i for i, a in enumerate(ls_config.ARMS)}
  out = {}
  for arm in sorted({r["arm"] for r in rows}, key=lambda a: order.get(a, len(order))):
    group = [r for r in rows if r["arm"] == arm]
    out[arm] = {"seeds": [r["seed"] for r in group],
                **{q: _mean_std([r.get(q, np.nan) for r in group]) for q in
                   ("test_ne", "test_auc", "test_gap_closed", "planted_ne", "planted_oracle_ne", "planted_auc",
                    "planted_calibration",
                    "planted_gap_closed", "flops_per_example", "inference_flops_per_example", "valid_ne")},
                "planted_candidates": group[0]["planted_candidates"],
                "history_events": group[0]["history_events"], "history_tokens": group[0]["history_tokens"]}
  ref = out.get(REFERENCE)
  for s in out.values():
    s["delta_ne_vs_ref"] = (s["test_ne"]["mean"] / ref["test_ne"]["mean"] - 1.0) if ref else float("nan")
    s["flops_vs_ref"] = (s["flops_per_example"]["mean"] / ref["flops_per_example"]["mean"]) if ref else float("nan")
    s["inference_flops_vs_ref"] = (s["inference_flops_per_example"]["mean"] / ref["inference_flops_per_example"]["mean"]
                                   if ref else float("nan"))
  return out


def _by_seed(rows: list[dict], arm: str, quality: str) -> dict[int, float]:
  return {r["seed"]: r[quality] for r in rows if r["arm"] == arm}


def verdicts(rows: list[dict], arms: dict[str, dict]) -> list[dict]:
  """The three claims of issue 18 (module docstring) -> [{claim, verdict: true/false/"not run", numbers}]."""
  out = []
  for claim, kind, a, b, quality in VERDICTS:
    entry = {"claim": claim, "a": a, "b": b, "quality": quality}
    missing = [x for x in (a, b) if x not in arms]
    if missing:
      out.append({**entry, "verdict": "not run", "numbers": f"no finished run of {', '.join(missing)}"})
      continue
    qa, qb = arms[a][quality]["mean"], arms[b][quality]["mean"]
    if not (np.isfinite(qa) and np.isfinite(qb)):
      out.append({**entry, "verdict": "not run", "numbers": f"{quality} missing ({a} {qa}, {b} {qb})"})
      continue
    if kind == "beats":
      common = set(_by_seed(rows, a, quality)) & set(_by_seed(rows, b, quality))
      if not common:
        out.append({**entry, "verdict": "not run", "numbers": f"{a} and {b} share no seed"})
        continue
      d = seeds_lib.paired_difference(_by_seed(rows, a, quality), _by_seed(rows, b, quality))
      ok = d["verdict"] == "better" or (d["n"] == 1 and d["mean"] < 0)
      ci = "" if d["ci"] is None else f", 95% CI [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
      numbers = (f"{quality} {a} {qa:.4f} vs {b} {qb:.4f}; paired {a} − {b} over seeds {d['seeds']}: "
                 f"{d['mean']:+.4f}{ci} ({d['verdict']})")
      out.append({**entry, "verdict": bool(ok), "paired": d, "numbers": numbers})
    else:
      rel = qa / qb - 1.0
      ratio = arms[a]["flops_vs_ref"] if b == REFERENCE else (
          arms[a]["flops_per_example"]["mean"] / arms[b]["flops_per_example"]["mean"])
      ok = rel <= NE_TOLERANCE and ratio <= FLOPS_BUDGET
      numbers = (f"test NE {a} {qa:.4f} vs {b} {qb:.4f} ({100 * rel:+.2f}%, limit +{100 * NE_TOLERANCE:.1f}%); "
                 f"training FLOPs per example {ratio:.2f}x (limit {FLOPS_BUDGET:.2f}x); seeds {arms[a]['seeds']} "
                 f"vs {arms[b]['seeds']} (means)")
      out.append({**entry, "verdict": bool(ok), "relative_ne": rel, "flops_ratio": ratio, "numbers": numbers})
  return out


# The ULTRA-HSTU ablations in the paper's shape (papers.md §2: ΔNE, training and inference FLOPs per
# example, each against the arm it changes, the full ULTRA-HSTU arm unless a third entry names another):
# arm -> what it changes.
ABLATION_BASE = "ultra"
ABLATIONS = (
    ("ultra_k1_0", "K1 = 0 (no local band)"),
    ("ultra_k2_0", "K2 = 0 (no global columns)"),
    ("ultra_no_trunc", "attention truncation off"),
    ("ultra_mot", "mixture of two transducers on (ultra: one stream)"),
    ("ultra_mot_budget", "mixture of two transducers in ultra's token budget (3H/4 all events + H/4 engagement)"),
    ("ultra_interleaved", "interleaved item, action tokens (ultra: summed)"),
    ("ultra_newest1k", "ultra on its newest H/4 tokens"),
    ("ultra_mot_newest1k", "mixture of two transducers in an H/4 budget that binds (3H/16 all + H/16 engagement)",
     "ultra_newest1k"),
)


def ablations(rows: list[dict], arms: dict[str, dict]) -> list[dict]:
  """Each ABLATIONS arm with a finished run beside its base arm (ultra unless named): test ΔNE relative to
  the base (the means; with the paired difference over the seeds both have), planted ΔNE, and training /
  inference FLOPs over the base's."""
  out = []
  for arm, change, *named in ABLATIONS:
    base_arm = named[0] if named else ABLATION_BASE
    base = arms.get(base_arm)
    if arm not in arms or base is None:
      continue
    s = arms[arm]
    entry = {"arm": arm, "change": change, "base": base_arm, "seeds": s["seeds"],
             "delta_ne": s["test_ne"]["mean"] / base["test_ne"]["mean"] - 1.0,
             "delta_planted_ne": s["planted_ne"]["mean"] / base["planted_ne"]["mean"] - 1.0,
             "flops_vs_base": s["flops_per_example"]["mean"] / base["flops_per_example"]["mean"],
             "inference_flops_vs_base": (s["inference_flops_per_example"]["mean"]
                                         / base["inference_flops_per_example"]["mean"])}
    a, b = _by_seed(rows, arm, "test_ne"), _by_seed(rows, base_arm, "test_ne")
    entry["paired"] = seeds_lib.paired_difference(a, b) if set(a) & set(b) else None
    out.append(entry)
  return out


def _ablation_markdown(found: list[dict]) -> str:
  if not found:
    return ""
  lines = ["", "ULTRA-HSTU ablations (each against the arm it changes; ΔNE relative, on the means; the paired test NE "
           "difference over the seeds both have, with its 95% t-interval from 2 seeds on):", "",
           "| ablation | arm | against | seeds | ΔNE | planted ΔNE | paired ΔNE (abs.) | training FLOPs | "
           "inference FLOPs |",
           "|---|---|---|---|---|---|---|---|---|"]
  for e in found:
    d = e["paired"]
    paired = "no common seed" if d is None else f"{d['mean']:+.4f}" + (
        f" [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]" if d["ci"] else " (one seed)")
    lines.append(f"| {e['change']} | {e['arm']} | {e['base']} | {','.join(map(str, e['seeds']))} | {100 * e['delta_ne']:+.2f}% | "
                 + ("–" if not np.isfinite(e["delta_planted_ne"]) else f"{100 * e['delta_planted_ne']:+.2f}%")
                 + f" | {paired} | {_times(e['flops_vs_base'])} | {_times(e['inference_flops_vs_base'])} |")
  return "\n".join(lines) + "\n"


def _times(x: float) -> str:
  """A FLOPs ratio as the tables print it: "0.58x", or "–" where a count is missing."""
  return "–" if not np.isfinite(x) else f"{x:.2f}x"


def _pm(s: dict, fmt: str = ".4f") -> str:
  if not np.isfinite(s["mean"]):
    return "–"
  return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}" if s["n"] > 1 else f"{s['mean']:{fmt}}"


def markdown(arms: dict[str, dict], found: list[dict], preset: str) -> str:
  """The table and the verdicts as markdown."""
  titles = ("arm", "seeds", "test NE", "ΔNE vs hstu_full", "planted NE (oracle)", "planted AUC",
            "planted calibration", "planted gap closed",
            "gap closed", "train FLOPs / example", "FLOPs vs hstu_full", "inference FLOPs / example",
            "inference vs hstu_full")
  lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
  for arm, s in arms.items():
    oracle = s["planted_oracle_ne"]["mean"]
    lines.append("| " + " | ".join((
        arm, ",".join(str(x) for x in s["seeds"]), _pm(s["test_ne"]),
        "–" if not np.isfinite(s["delta_ne_vs_ref"]) else f"{100 * s['delta_ne_vs_ref']:+.2f}%",
        _pm(s["planted_ne"]) + ("" if not np.isfinite(oracle) else f" ({oracle:.4f})"),
        _pm(s["planted_auc"], ".3f"), _pm(s["planted_calibration"], ".2f"),
        _pm(s["planted_gap_closed"], ".3f"), _pm(s["test_gap_closed"], ".3f"),
        f"{s['flops_per_example']['mean']:.3g}",
        _times(s["flops_vs_ref"]),
        "–" if not np.isfinite(s["inference_flops_per_example"]["mean"]) else
        f"{s['inference_flops_per_example']['mean']:.3g}",
        _times(s["inference_flops_vs_ref"]))) + " |")
  counts = sorted({s["planted_candidates"] for s in arms.values()})
  lines += ["", f"Preset `{preset}`; test split at each run's selected epoch; NE = mean over the 8 feedbacks "
            f"(± sample std over seeds); planted = the {'/'.join(map(str, counts))} test candidates that are "
            "planted return-phase events; planted AUC and calibration (mean predicted / observed rate) are means "
            "over the 8 feedbacks there: whether an arm ranks those candidates (reads the old affinity) or "
            "only sets their level.", "", "Verdicts:", ""]
  for v in found:
    mark = v["verdict"] if isinstance(v["verdict"], str) else ("true" if v["verdict"] else "false")
    lines.append(f"- {v['claim']}: **{mark}** ({v['numbers']})")
  return "\n".join(lines) + "\n"


def plot(stem: str, arms: dict[str, dict], preset: str) -> list[str]:
  """The three PNGs (module docstring) -> their paths."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = list(arms)
  paths = [f"{stem}_ne_vs_flops.png", f"{stem}_planted_ne.png", f"{stem}_ne_vs_tokens.png"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for arm in names:
    s = arms[arm]
    x, y = s["flops_per_example"]["mean"], s["test_ne"]["mean"]
    if np.isfinite(x) and np.isfinite(y):
      ax.errorbar(x, y, yerr=s["test_ne"]["std"] if s["test_ne"]["n"] > 1 else None, fmt="o", capsize=3)
      ax.annotate(arm, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
  ax.set_xscale("log")
  ax.set_xlabel("training FLOPs per example (request)")
  ax.set_ylabel("test NE (mean over feedbacks)")
  ax.set_title(f"long-sequence study ({preset}): NE vs training FLOPs")
  fig.tight_layout()
  fig.savefig(paths[0], dpi=120)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(names) + 2), 4.5))
  pos = np.arange(len(names))
  ne = [arms[a]["planted_ne"]["mean"] for a in names]
  err = [arms[a]["planted_ne"]["std"] if arms[a]["planted_ne"]["n"] > 1 else 0.0 for a in names]
  ax.bar(pos, ne, yerr=err, capsize=3, color="tab:blue", label="model")
  ax.scatter(pos, [arms[a]["planted_oracle_ne"]["mean"] for a in names], color="black", marker="_", s=300,
             label="oracle (same candidates)", zorder=3)
  finite = [v for v in ne + [arms[a]["planted_oracle_ne"]["mean"] for a in names] if np.isfinite(v)]
  if finite:
    ax.set_ylim(min(finite) - 0.02, max(finite) + 0.02)
  ax.set_xticks(pos)
  ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
  ax.set_ylabel("test NE on planted return-phase candidates")
  ax.set_title(f"long-sequence study ({preset}): planted NE per arm")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(paths[1], dpi=120)
  plt.close(fig)
  plot_tokens(paths[2], arms, preset)
  return paths


# The families of the quality-vs-token-budget plot: which arms draw one line, in budget order.
TOKEN_FAMILIES = (
    ("newest events only (ULTRA-HSTU model, no folding)", "tab:orange", ("trunc_f8", "trunc_f4", "trunc_f2")),
    ("whole history folded (GACT f = 8, 4, 2)", "tab:green", ("gact_f8", "gact_f4", "gact_f2")),
    ("HSTU: newest 256 / whole history", "tab:blue", ("hstu_newest256", "hstu_full")),
)


def plot_tokens(path: str, arms: dict[str, dict], preset: str) -> str:
  """Test NE and planted NE against the history tokens an arm's stack runs on (its history window over its
  fold: GACT f reads every event in H / f tokens, truncation the newest H / f events): quality against L,
  and verdict 3 (GACT vs truncation at the same budget) as two lines. Arms outside TOKEN_FAMILIES (ultra
  and its ablations) are single points."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
  in_family = {a for _, _, members in TOKEN_FAMILIES for a in members}
  for ax, quality, label in ((axes[0], "test_ne", "test NE (mean over feedbacks)"),
                             (axes[1], "planted_ne", "NE on planted return-phase candidates")):
    for name, color, members in TOKEN_FAMILIES:
      pts = [(arms[a]["history_tokens"], arms[a][quality]) for a in members if a in arms
             and np.isfinite(arms[a][quality]["mean"])]
      if pts:
        ax.errorbar([x for x, _ in pts], [q["mean"] for _, q in pts],
                    yerr=[q["std"] if q["n"] > 1 else 0.0 for _, q in pts], fmt="o-", capsize=3, color=color,
                    label=name)
    singles = [a for a, s in arms.items() if a not in in_family and np.isfinite(s[quality]["mean"])]
    for i, arm in enumerate(singles):
      s = arms[arm]
      ax.errorbar([s["history_tokens"]], [s[quality]["mean"]],
                  yerr=[s[quality]["std"] if s[quality]["n"] > 1 else 0.0], fmt="s", capsize=3, color="tab:red")
      ax.annotate(arm, (s["history_tokens"], s[quality]["mean"]), textcoords="offset points",
                  xytext=(6, 6 - 12 * (i % 2)), fontsize=8)   # alternate: same-budget arms overlap
    ax.set_xscale("log", base=2)
    ax.set_xlabel("history tokens the stack runs on (max per request)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=7)
  fig.suptitle(f"long-sequence study ({preset}): quality against the history token budget "
               "(mean ± std over seeds)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


SCALING_PAIRS = (("ultra", REFERENCE),)   # (A, B): scaling efficiency of A over B
SCALING_BOOTSTRAP = 1000


def scaling(rows: list[dict], *, num_bootstrap: int = SCALING_BOOTSTRAP, seed: int = 0) -> dict:
  """Scaling efficiency of each SCALING_PAIRS A over B from runs at several widths (`w<D>` extras):
  log-linear fits of test NE against training FLOPs per example, every run (width x seed) one point,
  the slope ratio A / B and the iso-NE compute ratio (the FLOPs B needs for the NE A reaches at a
  compute C, over C: > 1 favours A) at two C: the reference B's largest measured FLOPs (as first
  stated; where A is much cheaper this reads A's line far beyond its runs) and A's largest measured
  FLOPs (`_at_a`: A's NE inside its runs), each with a 95% bootstrap interval over runs. A pair whose
  families have fewer than 3 widths each is "not run"."""
  out = {}
  for a, b in SCALING_PAIRS:
    fam = {m: [r for r in rows if r["arm"] == m] for m in (a, b)}
    widths = {m: sorted({r["width"] for r in fam[m]}) for m in fam}
    name = f"{a} over {b}"
    if min(len(w) for w in widths.values()) < 3:
      out[name] = {"verdict": "not run", "widths": widths,
                   "why": "needs each family at >= 3 widths (configs/long_sequences.py `w<D>`)"}
      continue
    out[name] = {"a": a, "b": b, "widths": widths, "law": "test NE = a + b log10(FLOPs per example)",
                 "ci": f"95% percentile bootstrap over runs ({num_bootstrap} resamples, families resampled "
                       "independently)"}
    for phase, key in (("training", "flops_per_example"), ("inference", "inference_flops_per_example")):
      data = {m: (np.array([r.get(key, np.nan) for r in fam[m]]), np.array([r["test_ne"] for r in fam[m]]))
              for m in (a, b)}
      if not all(np.isfinite(x).all() for x, _ in data.values()):
        out[name][phase] = {"verdict": "not run", "why": f"{key} missing for some runs (--count_inference)"}
        continue
      # Two places to read the iso-NE ratio: at B's largest run (the ratio as first stated; it extrapolates
      # A's line when A's runs are all cheaper), and at A's largest run (A's NE measured there; B's line
      # read near its own range when A's best NE is close to B's).
      at, at_a = float(np.max(data[b][0])), float(np.max(data[a][0]))
      eff, eff_a = (fits.scaling_efficiency(*data[a], *data[b], at_compute=x, law="log_linear",
                                            num_bootstrap=num_bootstrap, seed=seed) for x in (at, at_a))
      out[name][phase] = {"at_flops_per_example": at,
                          "slope_ratio": scaling_study.estimate_record(eff.slope_ratio),
                          "iso_ne_compute_ratio": scaling_study.estimate_record(eff.iso_compute_ratio),
                          "at_a_flops_per_example": at_a,
                          "iso_ne_compute_ratio_at_a": scaling_study.estimate_record(eff_a.iso_compute_ratio),
                          "flops_range": {m: [float(np.min(data[m][0])), float(np.max(data[m][0]))] for m in (a, b)}}
  return out


def gather(results_dir: str, preset: str, stem: str, quick: bool = False, count_inference: bool = False,
           epochs: int = ls_config.DEFAULT_EPOCHS) -> dict:
  """collect (the runs of `epochs` epochs) -> inference FLOPs (cached; counted when `count_inference`) ->
  summaries -> verdicts -> <stem>.md, .json and the PNGs; returns the record."""
  t0 = time.time()
  all_rows = [r for r in collect(results_dir, preset, quick) if r["epoch_budget"] == epochs]
  add_inference_flops(all_rows, stem + "_inference_flops.json", quick, count_inference)
  rows = [r for r in all_rows if r["width"] == ls_config.DEFAULT_WIDTH]   # the table: every arm at D = 64
  if not rows:
    raise ValueError(f"{results_dir}: no finished configs/long_sequences.py runs at preset {preset!r}"
                     f"{' (quick)' if quick else ''}, width {ls_config.DEFAULT_WIDTH} and {epochs} epochs")
  arms = arm_summaries(rows)
  found = verdicts(rows, arms)
  efficiency = scaling(all_rows)
  ablated = ablations(rows, arms)
  os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
  table = markdown(arms, found, preset) + _ablation_markdown(ablated) + _scaling_markdown(efficiency)
  with open(stem + ".md", "w") as f:
    f.write(table)
  pngs = plot(stem, arms, preset) + plot_scaling(stem + "_scaling.png", all_rows, efficiency, preset)
  record = {   # the fields every results file carries (results.py), then the study's own
      "dataset": f"long_sequences ({preset} world)", "model": ", ".join(arms), "config": "configs/long_sequences.py",
      "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.long_sequences"] + sys.argv[1:]),
      "commit": results.git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      "versions": results.versions(), "hardware": results.hardware(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "seed": sorted({r["seed"] for r in rows}),
      "metrics": {"verdicts": {v["claim"]: v["verdict"] for v in found},
                  "test_ne": {a: s["test_ne"] for a, s in arms.items()},
                  "planted_ne": {a: s["planted_ne"] for a, s in arms.items()}},
      "study": "long_sequences", "preset": preset, "epochs": epochs, "quick_runs": quick, "results_dir": results_dir,
      "arms": arms, "verdicts": found, "ablations": ablated, "scaling_efficiency": efficiency, "runs": all_rows, "table": stem + ".md",
      "plots": pngs,
      "wall_clock_s": time.time() - t0,   # the gatherer's; the runs' own are summed below
      "runs_wall_clock_s": float(sum(r["wall_clock_s"] for r in all_rows))}
  results.write_results(stem + ".json", record)
  return record


def plot_scaling(path: str, rows: list[dict], efficiency: dict, preset: str) -> list[str]:
  """<out>_scaling.png: test NE against FLOPs per example of every SCALING_PAIRS family's runs (every width
  and seed a point), the log-linear fit and its bootstrap band, a panel per phase that `scaling` fitted
  (training; inference where counted) -> [path], or [] when no pair was fitted."""
  panels = []
  for phase, key in (("training", "flops_per_example"), ("inference", "inference_flops_per_example")):
    fams = {}
    for (a, b), e in zip(SCALING_PAIRS, efficiency.values()):
      if e.get("verdict") == "not run" or e[phase].get("verdict") == "not run":
        continue
      for m in (a, b):
        fam = [r for r in rows if r["arm"] == m]
        fams[m] = (np.array([r[key] for r in fam]), np.array([r["test_ne"] for r in fam]))
    if fams:
      panels.append(fits.Panel(fams, law="log_linear", ylabel="test NE (mean over feedbacks)",
                               xlabel=f"{phase} FLOPs per example", title=f"{phase}: NE = q0 − η log10(C / c0)"))
  if not panels:
    return []
  families = {m for pair in SCALING_PAIRS for m in pair}
  widths = sorted({r["width"] for r in rows if r["arm"] in families})
  fits.plot_panels(path, panels, num_bootstrap=SCALING_BOOTSTRAP,
                   title=f"long-sequence study ({preset}): scaling over widths {widths}")
  return [path]


def _ci(e: dict) -> str:
  return f"{e['value']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]"


def _scaling_markdown(efficiency: dict) -> str:
  lines = ["", "Scaling efficiency (test NE vs training FLOPs per example, log-linear, runs at several widths):", ""]
  for name, e in efficiency.items():
    if e.get("verdict") == "not run":
      lines.append(f"- {name}: not run ({e['why']}; widths {e['widths']})")
      continue
    for phase in ("training", "inference"):
      p = e[phase]
      if p.get("verdict") == "not run":
        lines.append(f"- {name}, {phase}: not run ({p['why']})")
        continue
      sr, iso, iso_a = p["slope_ratio"], p["iso_ne_compute_ratio"], p["iso_ne_compute_ratio_at_a"]
      a = e["a"]
      at, at_a = p["at_flops_per_example"], p["at_a_flops_per_example"]
      beyond = f"; reads {a}'s line beyond its runs, which end at {at_a:.3g}" if at_a < at else ""
      lines.append(f"- {name}, {phase}: slope ratio {_ci(sr)}; iso-NE compute ratio {_ci(iso)} at {at:.3g} "
                   f"{phase} FLOPs per example (the reference's largest run{beyond}), {_ci(iso_a)} at {a}'s "
                   f"largest run ({at_a:.3g}); 95% bootstrap over runs")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  epochs = ls_config.DEFAULT_EPOCHS if _EPOCHS.value is None else _EPOCHS.value
  stem = _STUDY_OUT.value or os.path.join(
      _RESULTS_DIR.value, "summary", _PRESET.value + ("" if epochs == ls_config.DEFAULT_EPOCHS else f"_e{epochs}")
      + ("_quick" if _QUICK_RUNS.value else ""))
  record = gather(_RESULTS_DIR.value, _PRESET.value, stem, _QUICK_RUNS.value, _COUNT_INFERENCE.value, epochs)
  with open(record["table"]) as f:
    print(f.read())
  print(f"wrote {stem}.md, {stem}.json, {', '.join(record['plots'])} ({len(record['runs'])} runs)")


if __name__ == "__main__":
  app.run(main)
