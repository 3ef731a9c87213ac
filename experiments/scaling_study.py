"""The compute-scaling study's table, fits and plot from a folder of runs (configs/scaling_ml1m.py,
configs/kunlun_scaling.py).

    python -m experiments.scaling_study --runs_dir=results/scaling/runs --out_stem=results/scaling/ml1m_scaling
        [--runs_workdirs=workdirs/scaling_ml1m] [--a=hstu --b=sasrec] [--num_bootstrap=1000] [--bootstrap_seed=0]

Reads every results file of `--runs_dir` (written by experiments/run.py; partial ones are skipped)
and writes
  <out>.csv   one row per run: model, size, dim, blocks, seed, parameters (total and non-embedding:
              without the item table and the position table), training FLOPs (the loop's count of
              every step: XLA's cost analysis plus the native loss kernel), examples seen, FLOPs per
              example, validation loss (`valid_nll`: full-catalogue softmax cross-entropy at the
              training temperature), validation and test NDCG@10 / HR@10, wall-clock, MFU;
  <out>.json  per model (`--a`, `--b`): the log-linear fit Q = Q0 − η·log10(C/C0) of validation
              NDCG@10 and of validation loss against training FLOPs C, and the power law
              L = a·C^(−b) + c of validation loss, each with percentile bootstrap intervals over
              runs; the scaling efficiency of A over B (slope ratio η_A/η_B and the iso-quality
              compute ratio at the geometric mean of all runs' compute) with two intervals: over
              runs (each family's runs resampled), and over validation users (one resample of the
              users shared by every run, runs fixed; needs `--runs_workdirs`, where each run saved its
              per-user ranks and NLL), and over users plus seed noise where a size of each family has
              several seeds (Gaussian, that size's sd at every size); and the seed spread;
  <out>.png   validation NDCG@10 and validation loss against training FLOPs, fits and bands.
Only the runs at --fit_seed (one per size) enter the fits; other seeds measure seed noise, which
the intervals over runs and over users do not contain.

Ranking runs (`task: ranking`, configs/kunlun_scaling.py) are read the same way with their own
columns (RANKING_COLUMNS) and fits: the quality is the mean validation NE over the tasks at the
epoch the run selected (its early-stopping epoch), fitted log-linear and as a power law with a floor
against training FLOPs; there are no per-user arrays, so only the intervals over runs (pass
`--runs_workdirs=`). For every log-linear fit the study also gives the quality gap A − B at the
geometric-mean compute (`gap_at_compute`, bootstrap over runs): "A's NE at or below B's at equal
FLOPs" is that gap's interval.
"""
from __future__ import annotations

import csv
import datetime
import glob
import json
import os
import sys
import time

from absl import app, flags
import numpy as np

from recjax.metrics.retrieval import per_query
from recjax.scaling import fits
from recjax.train import results

_RUNS_DIR = flags.DEFINE_string("runs_dir", "results/scaling/runs", "folder of the runs' results JSON files")
# Flag names are process-global in absl: these must not collide with other experiments modules
# (mixture_study defines --out and --workdirs; tests import both into one process).
_OUT = flags.DEFINE_string("out_stem", "results/scaling/ml1m_scaling", "output path without extension")
_WORKDIRS = flags.DEFINE_string("runs_workdirs", "workdirs/scaling_ml1m", "the runs' workdirs (per-user arrays in "
                                "<workdir>/eval/valid.npz); '' skips the bootstrap over users")
_A = flags.DEFINE_string("a", "hstu", "the family whose efficiency is measured")
_B = flags.DEFINE_string("b", "sasrec", "the baseline family")
_FIT_SEED = flags.DEFINE_integer("fit_seed", 42, "the seed whose runs are fitted")
_NUM_BOOTSTRAP = flags.DEFINE_integer("num_bootstrap", 1000, "bootstrap resamples (runs and users)")
_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "bootstrap seed")

COLUMNS = ("model", "size", "dim", "blocks", "seed", "params_total", "params_non_embedding", "train_flops",
           "examples_seen", "flops_per_example", "valid_nll", "valid_ndcg@10", "valid_hr@10", "test_nll",
           "test_ndcg@10", "test_hr@10", "epochs", "wall_clock_s", "mfu_measured", "commit", "results_file")
# (quality column, law) fitted against training FLOPs; NDCG rises with compute (η < 0), the loss falls
FITS = (("valid_ndcg@10", "log_linear"), ("valid_nll", "log_linear"), ("valid_nll", "power_law"))
RANKING_COLUMNS = ("model", "size", "dim", "blocks", "seed", "params_total", "train_flops", "examples_seen",
                   "flops_per_example", "valid_ne", "valid_auc", "test_ne", "test_auc", "test_gauc", "best_epoch",
                   "epochs", "wall_clock_s", "mfu_measured", "commit", "results_file")
RANKING_FITS = (("valid_ne", "log_linear"), ("valid_ne", "power_law"))


def task_of(rows: list[dict]) -> str:
  """"ranking" or "retrieval" (the runs' task; a folder mixing them is an error)."""
  tasks = {r.get("task", "retrieval") for r in rows}
  if len(tasks) != 1:
    raise ValueError(f"runs of several tasks in one folder: {sorted(tasks)}; fit each task's runs separately")
  return tasks.pop()


def ranking_row(r: dict, path: str) -> dict:
  """One finished ranking run -> its CSV row: quality at the epoch the run selected on validation."""
  model = r["config_values"]["model"]
  best = r["metrics"]["best_epoch"]
  test = r["metrics"]["test"]["mean"]
  train = r["train_flops"]
  if train["steps"] != r["steps"]:
    raise ValueError(f"train_flops covers {train['steps']} of {r['steps']} steps")
  # The family: InterFormer-lite is a Kunlun config (model.name "kunlun"), so it is read from the run's
  # name, which configs/kunlun_scaling.py makes kunlun_scaling_<dataset>_<model>_<size>.
  name = r["config"]
  family = (name[len("kunlun_scaling_"):].split("_", 1)[1].rsplit("_", 1)[0] if name.startswith("kunlun_scaling_")
            else model["name"])
  return {
      "task": "ranking", "dataset": r.get("dataset", ""), "model": family,
      "size": r["config"].rsplit("_", 1)[-1], "dim": model["dim"], "blocks": model.get("layers", ""),
      "seed": r["seed"], "params_total": r["num_params"], "train_flops": train["flops"],
      "examples_seen": train["examples"], "flops_per_example": train["per_example"],
      "valid_ne": best["mean"]["ne"], "valid_auc": best["mean"]["auc"], "test_ne": test["ne"],
      "test_auc": test["auc"], "test_gauc": test.get("gauc", float("nan")), "best_epoch": best["epoch"],
      "epochs": r["epochs"], "wall_clock_s": r["wall_clock_s"],
      "mfu_measured": (r.get("mfu") or {}).get("mfu_measured", float("nan")), "commit": r["commit"],
      "results_file": path}


def run_row(path: str) -> dict | None:
  """One results file -> a CSV row (None for a partial run). Missing fields raise naming the file."""
  with open(path) as f:
    r = json.load(f)
  if r.get("partial"):
    return None
  try:
    if r.get("task") == "ranking":
      return ranking_row(r, path)
    cfg = r["config_values"]
    model = cfg["model"]
    valid = [h for h in r["metrics"]["per_epoch"] if h.get("split") == "valid"][-1]
    test = r["metrics"]["test"]
    train = r["train_flops"]
    item_params = r["item_representation"]["params"]
    position_params = int(model["max_len"]) * int(model["dim"])
    if train["steps"] != r["steps"]:
      raise ValueError(f"train_flops covers {train['steps']} of {r['steps']} steps")
    return {
        "model": model["name"], "size": r["config"].rsplit("_", 1)[-1], "dim": model["dim"],
        "blocks": model["num_blocks"], "seed": r["seed"], "params_total": r["num_params"],
        "params_non_embedding": r["num_params"] - item_params - position_params,
        "train_flops": train["flops"], "examples_seen": train["examples"],
        "flops_per_example": train["per_example"], "valid_nll": valid["nll"], "valid_ndcg@10": valid["ndcg@10"],
        "valid_hr@10": valid["hr@10"], "test_nll": test.get("nll", float("nan")), "test_ndcg@10": test["ndcg@10"],
        "test_hr@10": test["hr@10"], "epochs": r["epochs"], "wall_clock_s": r["wall_clock_s"],
        "mfu_measured": (r.get("mfu") or {}).get("mfu_measured", float("nan")), "commit": r["commit"],
        "results_file": path}
  except (KeyError, IndexError, TypeError, ValueError) as e:
    raise ValueError(f"{path}: not a finished scaling run ({type(e).__name__}: {e}); made by "
                     f"configs/scaling_ml1m.py with eval.nll on, or configs/kunlun_scaling.py?") from None


def collect(runs_dir: str) -> list[dict]:
  rows = [row for p in sorted(glob.glob(os.path.join(runs_dir, "*.json"))) if (row := run_row(p)) is not None]
  if not rows:
    raise ValueError(f"{runs_dir}: no finished runs (*.json)")
  task_of(rows)
  return sorted(rows, key=lambda x: (x["model"], x["train_flops"], x["seed"]))


def write_csv(path: str, rows: list[dict]) -> None:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=RANKING_COLUMNS if task_of(rows) == "ranking" else COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)


def user_replicates(rows: list[dict], workdirs: str, num: int, seed: int, quality: str) -> np.ndarray:
  """[S, R] each run's validation `quality` over S bootstrap resamples of the validation users, one
  resample shared by all runs (the same users in every run's split: checked)."""
  per_user, users = [], None
  for row in rows:
    path = os.path.join(workdirs, f"{row['model']}_{row['size']}_s{row['seed']}", "eval", "valid.npz")
    with np.load(path) as z:
      if users is None:
        users = z["user_ids"]
      elif not np.array_equal(users, z["user_ids"]):
        raise ValueError(f"{path}: validation users differ from the other runs'; the user bootstrap needs one split")
      per_user.append(z["nll"] if quality == "valid_nll" else per_query(z["ranks"], 10)["ndcg"])
  per_user_UR = np.stack(per_user, axis=1)
  n = per_user_UR.shape[0]
  counts_SU = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=num).astype(np.float64)
  return counts_SU @ per_user_UR / n


def estimate_record(e: fits.Estimate) -> dict:
  return {"value": e.value, "lo": e.lo, "hi": e.hi, "level": e.level}


def _law(law) -> dict:
  return {k: v for k, v in vars(law).items()}


def seed_spread(rows: list[dict]) -> list[dict]:
  """Per (model, size) with several seeds: mean and sample sd of the fitted qualities."""
  qualities = (("valid_ne", "test_ne", "test_auc") if task_of(rows) == "ranking"
               else ("valid_ndcg@10", "valid_nll", "test_ndcg@10"))
  out = []
  for key in sorted({(r["model"], r["size"]) for r in rows}):
    group = [r for r in rows if (r["model"], r["size"]) == key]
    if len(group) > 1:
      out.append({"model": key[0], "size": key[1], "seeds": [r["seed"] for r in group],
                  **{q: {"mean": float(np.mean([r[q] for r in group])), "sd": float(np.std([r[q] for r in group], ddof=1))}
                     for q in qualities}})
  return out


def study(rows: list[dict], *, a: str, b: str, fit_seed: int, num_bootstrap: int, seed: int,
          workdirs: str | None) -> dict:
  ranking = task_of(rows) == "ranking"
  if ranking:
    workdirs = None   # no per-user arrays: intervals over runs only
  fitted = [r for r in rows if r["seed"] == fit_seed]
  fam = {m: [r for r in fitted if r["model"] == m] for m in (a, b)}
  for m, rs in fam.items():
    if len(rs) < 2:
      raise ValueError(f"model {m!r}: {len(rs)} finished run(s) at seed {fit_seed}; a fit needs ≥ 2 sizes")
  at = float(np.exp(np.mean(np.log([r["train_flops"] for r in fitted]))))
  out = {"fitted_runs": {m: [f"{r['size']}" for r in rs] for m, rs in fam.items()}, "fits": {}, "efficiency": {},
         "at_compute": at, "seed_spread": seed_spread(rows)}
  for q, law in (RANKING_FITS if ranking else FITS):
    name = f"{q}:{law}"
    if law == "power_law" and min(len(rs) for rs in fam.values()) < 4:
      out["fits"][name] = "skipped: the power law needs runs at ≥ 4 sizes"
      continue
    data = {m: (np.array([r["train_flops"] for r in rs]), np.array([r[q] for r in rs])) for m, rs in fam.items()}
    eff = fits.scaling_efficiency(*data[a], *data[b], at_compute=at, law=law, num_bootstrap=num_bootstrap, seed=seed)
    out["fits"][name] = {
        m: {"law": _law(f.law), "params": {k: estimate_record(e) for k, e in f.params.items()}, "rmse": f.rmse,
            "ci": f"{round(100 * f.level)}% percentile bootstrap over runs ({num_bootstrap} resamples)",
            # an exponent at the edge of the searched range: the law is not identified by these runs
            **({"b_at_search_bound": bool(min(abs(np.log(f.law.b / x)) for x in fits.B_RANGE) < 1e-6)}
               if law == "power_law" else {})}
        for m, f in ((a, eff.fit_a), (b, eff.fit_b))}
    entry = {"slope_ratio": estimate_record(eff.slope_ratio), "iso_compute_ratio": estimate_record(eff.iso_compute_ratio),
             "ci": "bootstrap over runs (each family resampled independently)"}
    if law == "log_linear":
      entry["gap_at_compute"] = estimate_record(gap_at_compute(eff, at))
    if workdirs:
      reps = {m: user_replicates(rs, workdirs, num_bootstrap, seed, q) for m, rs in fam.items()}
      rep = fits.replicate_efficiency(*data[a], reps[a], *data[b], reps[b], at_compute=at, law=law)
      entry["over_users"] = {"slope_ratio": estimate_record(rep.slope_ratio), "iso_compute_ratio": estimate_record(rep.iso_compute_ratio),
                             f"slope_{a}": estimate_record(rep.slope_a), f"slope_{b}": estimate_record(rep.slope_b),
                             "ci": f"bootstrap over validation users, one resample shared by all runs "
                                   f"({rep.replicates} resamples); runs fixed"}
      spread = {x["model"]: x for x in out["seed_spread"]}
      if a in spread and b in spread:   # add seed noise: N(0, sd) per run, sd measured where seeds were repeated
        rng = np.random.default_rng(seed + 2)
        noisy = {m: reps[m] + rng.normal(0.0, spread[m][q]["sd"], reps[m].shape) for m in (a, b)}
        rep = fits.replicate_efficiency(*data[a], noisy[a], *data[b], noisy[b], at_compute=at, law=law)
        entry["over_users_and_seeds"] = {
            "slope_ratio": estimate_record(rep.slope_ratio), "iso_compute_ratio": estimate_record(rep.iso_compute_ratio),
            f"slope_{a}": estimate_record(rep.slope_a), f"slope_{b}": estimate_record(rep.slope_b),
            "seed_sd": {m: spread[m][q]["sd"] for m in (a, b)},
            "ci": (f"the users bootstrap plus Gaussian seed noise on every run, sd from the repeated seeds at "
                   f"{a} {spread[a]['size']} / {b} {spread[b]['size']}, assumed the same at every size")}
    out["efficiency"][name] = entry
  return out


def gap_at_compute(eff, at: float) -> "fits.Estimate":
  """Quality of A minus quality of B, both fits read at compute `at`, with the bootstrap refits' spread."""
  value = float(eff.fit_a.law.predict(at) - eff.fit_b.law.predict(at))
  samples = np.array([float(fa.predict(at) - fb.predict(at)) for fa, fb in zip(eff.fit_a.boot, eff.fit_b.boot)])
  lo, hi = np.percentile(samples, [100 * (1 - eff.fit_a.level) / 2, 100 * (1 + eff.fit_a.level) / 2])
  return fits.Estimate(value, float(lo), float(hi), eff.fit_a.level)


def plot(path: str, rows: list[dict], *, a: str, b: str, fit_seed: int, num_bootstrap: int, seed: int) -> None:
  fitted = [r for r in rows if r["seed"] == fit_seed]
  ranking = task_of(rows) == "ranking"
  panels = []
  specs = ((("valid_ne", "log_linear", "validation mean NE (selected epoch)"),) if ranking else
           (("valid_ndcg@10", "log_linear", "validation NDCG@10"),
            ("valid_nll", "log_linear", "validation loss (catalogue cross-entropy)")))
  for q, law, label in specs:
    fams = {m: (np.array([r["train_flops"] for r in fitted if r["model"] == m]),
                np.array([r[q] for r in fitted if r["model"] == m])) for m in (a, b)}
    panels.append(fits.Panel(fams, law, label))
  dataset = fitted[0].get("dataset") or "ML-1M"
  fits.plot_panels(path, panels, num_bootstrap=num_bootstrap, seed=seed, xlabel="training FLOPs",
                   title="{}, {} epochs; {}% bootstrap bands over runs".format(
                       dataset, int(round(np.median([r["epochs"] for r in fitted]))), 95))


# Per task: the README table's column titles and one run's cells.
_TABLE = {
    "ranking": (("model", "size", "params", "training FLOPs", "FLOPs / example", "valid NE (epoch)", "test NE",
                 "test AUC", "seed", "wall-clock"),
                lambda r: (r["model"], r["size"], f"{r['params_total']:,}", f"{r['train_flops']:.3g}",
                           f"{r['flops_per_example']:.3g}", f"{r['valid_ne']:.4f} ({r['best_epoch']})",
                           f"{r['test_ne']:.4f}", f"{r['test_auc']:.4f}", r["seed"],
                           f"{r['wall_clock_s'] / 60:.0f} min")),
    "retrieval": (("model", "size", "params (non-emb.)", "training FLOPs", "valid loss", "valid NDCG@10",
                   "valid HR@10", "test NDCG@10", "seed", "wall-clock"),
                  lambda r: (r["model"], r["size"], f"{r['params_total']:,} ({r['params_non_embedding']:,})",
                             f"{r['train_flops']:.3g}", f"{r['valid_nll']:.4f}", f"{r['valid_ndcg@10']:.4f}",
                             f"{r['valid_hr@10']:.4f}", f"{r['test_ndcg@10']:.4f}", r["seed"],
                             f"{r['wall_clock_s'] / 60:.0f} min")),
}


def markdown_table(rows: list[dict]) -> str:
  """The runs as a README table."""
  titles, cells = _TABLE[task_of(rows)]
  lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
  lines += ["| " + " | ".join(str(c) for c in cells(r)) + " |" for r in rows]
  return "\n".join(lines)


def main(argv):
  del argv
  rows = collect(_RUNS_DIR.value)
  out = _OUT.value
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  write_csv(out + ".csv", rows)
  workdirs = _WORKDIRS.value or None
  t0 = time.time()
  fitted = study(rows, a=_A.value, b=_B.value, fit_seed=_FIT_SEED.value, num_bootstrap=_NUM_BOOTSTRAP.value,
                 seed=_SEED.value, workdirs=workdirs)
  ranking = task_of(rows) == "ranking"
  q = "valid_ne" if ranking else "valid_ndcg@10"
  headline = fitted["efficiency"][f"{q}:log_linear"]
  record = {
      "study": "scaling", "dataset": rows[0].get("dataset") or "ml-1m", "model": f"{_A.value} vs {_B.value}",
      "config": "configs/kunlun_scaling.py" if ranking else "configs/scaling_ml1m.py",
      "seed": _SEED.value,
      "metrics": {f"slope_ratio_{q}": headline["slope_ratio"], f"iso_compute_ratio_{q}": headline["iso_compute_ratio"],
                  f"gap_{q}_at_compute": headline["gap_at_compute"],
                  **{f"slope_ratio_{q}_{k}": headline[k]["slope_ratio"]
                     for k in ("over_users", "over_users_and_seeds") if k in headline}},
      "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.scaling_study"] + sys.argv[1:]),
      "commit": results.git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      "versions": results.versions(), "hardware": results.hardware(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "runs_csv": out + ".csv", "runs": rows, **fitted,
      "wall_clock_s": time.time() - t0,   # the fits'; the runs' own are in `runs`, summed below
      "runs_wall_clock_s": float(sum(r["wall_clock_s"] for r in rows)),
  }
  results.write_results(out + ".json", record)
  plot(out + ".png", rows, a=_A.value, b=_B.value, fit_seed=_FIT_SEED.value, num_bootstrap=_NUM_BOOTSTRAP.value,
       seed=_SEED.value)
  for name, e in record["efficiency"].items():
    s = e["slope_ratio"]
    line = f"{name}: {_A.value}/{_B.value} slope ratio {s['value']:.3g} [{s['lo']:.3g}, {s['hi']:.3g}] (runs)"
    if "gap_at_compute" in e:
      g = e["gap_at_compute"]
      line += f"; {_A.value} − {_B.value} at {record['at_compute']:.3g} FLOPs {g['value']:+.4f} [{g['lo']:+.4f}, {g['hi']:+.4f}]"
    for key, what in (("over_users", "users"), ("over_users_and_seeds", "users + seeds")):
      if key in e:
        u = e[key]["slope_ratio"]
        line += f", [{u['lo']:.3g}, {u['hi']:.3g}] ({what})"
    print(line)
  print(markdown_table(rows))
  print(f"wrote {out}.csv, {out}.json, {out}.png ({len(rows)} runs)")


if __name__ == "__main__":
  app.run(main)
