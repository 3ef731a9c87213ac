"""Fit the data-mixture laws to any table of runs and predict the best mixture.

    python -m experiments.mixture_law --runs=FILE.csv [--fit_model_size=122e6 --fit_n_tokens=9.998e9]
        [--split=random|model_size|n_tokens] [--train_frac=0.8] [--seed=0] [--bisection=log|linear]
        [--target_model_size=1.3e9 --target_n_tokens=3e10] [--name=NAME] [--out=PATH]

FILE.csv has one row per run: `weight_<domain>`, `model_size` (parameters), `n_tokens`, and
`<domain>_loss` (`recjax/scaling/runs.py`). Rows are first restricted by the --fit_* filters
(0 = no filter), then split into fitted and held-out rows:
  random      a seeded permutation, the first int(M·train_frac) rows fitted (the authors' split);
  model_size  rows at the largest model size (or at/above --split_at) held out, the rest fitted
              ("fit small, predict large");
  n_tokens    the same by token count.
It fits the capacity-competition law (Dai & Zheng 2026) and the exponential law (Ye et al. 2024) on
the same rows, prints train and held-out MRE / MAE / RMSE for both and each law's optimal mixture
at the target scale (default: the largest model and token count in the table), and writes a
results JSON (default results/mixture_law/<name>.json).
"""
from __future__ import annotations

import datetime
import os
import sys
import time

from absl import app, flags
import numpy as np

from recjax.scaling import mixture_law, runs
from recjax.train import results

_RUNS = flags.DEFINE_string("runs", None, "CSV table of runs (see the module docstring)")
_FIT_MODEL_SIZE = flags.DEFINE_float("fit_model_size", 0.0, "keep only rows with this model_size (0: all)")
_FIT_N_TOKENS = flags.DEFINE_float("fit_n_tokens", 0.0, "keep only rows with this n_tokens (0: all)")
_SPLIT = flags.DEFINE_enum("split", "random", ["random", "model_size", "n_tokens"], "which rows are held out")
_TRAIN_FRAC = flags.DEFINE_float("train_frac", 0.8, "share of rows fitted (--split=random)")
_SPLIT_AT = flags.DEFINE_float("split_at", 0.0, "--split=model_size|n_tokens: rows at or above this value are held "
                               "out (0: only the largest value)")
_SEED = flags.DEFINE_integer("seed", 0, "split, initial values and basin hopping")
_NITER = flags.DEFINE_integer("niter", 10, "basin-hopping iterations")
_RESTARTS = flags.DEFINE_integer("restarts", 20, "random starts of the optimal-mixture search and of the exponential fit")
_BISECTION = flags.DEFINE_enum("bisection", "log", ["log", "linear"],
                               "x* solver: log (the law as written) | linear (the authors' code, to reproduce it)")
_TARGET_MODEL_SIZE = flags.DEFINE_float("target_model_size", 0.0, "optimal mixture at this size (0: largest)")
_TARGET_N_TOKENS = flags.DEFINE_float("target_n_tokens", 0.0, "optimal mixture at this many tokens (0: largest)")
_NAME = flags.DEFINE_string("name", None, "results name (default: the CSV's file name)")
_OUT = flags.DEFINE_string("out", None, "results JSON path (default results/mixture_law/<name>.json)")


def split_rows(table: runs.RunsTable, split: str, train_frac: float, seed: int, split_at: float = 0.0):
  """(fitted rows, held-out rows) as index arrays into `table`."""
  if split == "random":
    return runs.random_split(len(table), train_frac, seed)
  column = table.model_size_M if split == "model_size" else table.n_tokens_M
  cut = split_at or column.max()
  fit, held = np.where(column < cut)[0], np.where(column >= cut)[0]
  if len(fit) == 0 or len(held) == 0:
    raise ValueError(f"--split={split} at {cut:g}: {len(fit)} rows to fit, {len(held)} held out; "
                     f"{split} values present: {sorted(set(column.tolist()))}")
  return fit, held


def _filter(table: runs.RunsTable) -> runs.RunsTable:
  keep = np.ones(len(table), bool)
  if _FIT_MODEL_SIZE.value:
    keep &= np.isclose(table.model_size_M, _FIT_MODEL_SIZE.value, rtol=1e-9)
  if _FIT_N_TOKENS.value:
    keep &= np.isclose(table.n_tokens_M, _FIT_N_TOKENS.value, rtol=1e-9)
  if not keep.any():
    pairs = sorted(set(zip(table.model_size_M.tolist(), table.n_tokens_M.tolist())))
    raise ValueError(f"{table.source}: no row has model_size={_FIT_MODEL_SIZE.value:g}, "
                     f"n_tokens={_FIT_N_TOKENS.value:g}; (model_size, n_tokens) present: {pairs[:20]}"
                     + (" ..." if len(pairs) > 20 else ""))
  return table.select(np.where(keep)[0])


def main(argv):
  del argv
  t0 = time.time()
  commit = results.git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # the code that runs
  table = _filter(runs.read_runs_csv(_RUNS.value))
  fit_rows, held_rows = split_rows(table, _SPLIT.value, _TRAIN_FRAC.value, _SEED.value, _SPLIT_AT.value)
  fit, held = table.select(fit_rows), table.select(held_rows)
  target_n = (_TARGET_MODEL_SIZE.value or table.model_size_M.max()) / 1e6
  target_d = (_TARGET_N_TOKENS.value or table.n_tokens_M.max()) / 1e9
  print(f"{table.source}: {len(table)} rows after filters, {len(fit)} fitted / {len(held)} held out "
        f"(split={_SPLIT.value}); domains: {', '.join(table.domains)}", flush=True)

  law, law_info = mixture_law.fit_mixture_law(fit.weights_MK, fit.losses_MK, fit.N_M, fit.D_M, seed=_SEED.value,
                                              niter=_NITER.value, bisection=_BISECTION.value)
  exp_law, exp_info = mixture_law.fit_exponential_law(fit.weights_MK, fit.losses_MK, seed=_SEED.value,
                                                      restarts=_RESTARTS.value)
  metrics = {}
  for name, predict in (("mixture_law", lambda t: mixture_law.predict_losses(law, t.weights_MK, t.N_M, t.D_M)),
                        ("exponential_law", lambda t: mixture_law.predict_exponential(exp_law, t.weights_MK))):
    metrics[name] = {part: mixture_law.fit_metrics(predict(t), t.losses_MK, t.weights_MK)
                     for part, t in (("train", fit), ("heldout", held)) if len(t)}
    if _SPLIT.value == "model_size":   # how the error grows with the distance of the extrapolation
      metrics[name]["heldout_by_model_size"] = {
          f"{size:g}": mixture_law.fit_metrics(predict(part), part.losses_MK, part.weights_MK)
          for size in sorted(set(held.model_size_M.tolist()))
          for part in [held.select(np.where(held.model_size_M == size)[0])]}
  h_law, loss_law = mixture_law.optimal_mixture(law, target_n, target_d, seed=_SEED.value, restarts=_RESTARTS.value)
  h_exp, loss_exp = mixture_law.optimal_mixture_exponential(exp_law, seed=_SEED.value, restarts=_RESTARTS.value)

  print(f"\n{'law':<18}{'params':>8}{'train MRE':>12}{'held-out MRE':>14}{'held-out MAE':>14}{'held-out RMSE':>15}")
  for name, n_params in (("mixture_law", 5 * len(table.domains) + 1),
                         ("exponential_law", len(table.domains) ** 2 + 2 * len(table.domains))):
    m = metrics[name]
    h = m.get("heldout", {})
    print(f"{name:<18}{n_params:>8}{m['train']['mre']:>12.4%}{h.get('mre', float('nan')):>14.4%}"
          f"{h.get('mae', float('nan')):>14.4e}{h.get('rmse', float('nan')):>15.4e}")
  for name in metrics:
    for size, m in metrics[name].get("heldout_by_model_size", {}).items():
      print(f"  {name} held out at model_size {size}: MRE {m['mre']:.4%} ({m['entries']} entries)")
  print(f"\noptimal mixture at N = {target_n:g} M params, D = {target_d:g} B tokens "
        f"(mean predicted loss {loss_law:.4f}; exponential law: scale-free, {loss_exp:.4f}):")
  for i, d in enumerate(table.domains):
    print(f"  {d:<16} mixture law {h_law[i]:.4f}   exponential law {h_exp[i]:.4f}")

  name = _NAME.value or os.path.splitext(os.path.basename(_RUNS.value))[0]
  out = _OUT.value or os.path.join("results", "mixture_law", f"{name}.json")
  record = {
      "study": "mixture_law", "config": name,
      "dataset": os.path.splitext(os.path.basename(_RUNS.value))[0], "model": "mixture_law vs exponential_law",
      "command": " ".join([os.path.basename(sys.executable), "-m", "experiments.mixture_law"] + sys.argv[1:]),
      "commit": commit,
      "versions": results.versions(), "hardware": results.hardware(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "seed": _SEED.value, "wall_clock_s": time.time() - t0,
      "data": {"runs": os.path.abspath(_RUNS.value), "rows": len(table), "fitted_rows": len(fit),
               "heldout_rows": len(held), "split": _SPLIT.value, "train_frac": _TRAIN_FRAC.value,
               "split_at": _SPLIT_AT.value,
               "domains": list(table.domains), "ignored_columns": list(table.ignored_columns),
               "filters": {"model_size": _FIT_MODEL_SIZE.value, "n_tokens": _FIT_N_TOKENS.value}},
      "bisection": _BISECTION.value,
      "metrics": metrics,
      "fit": {"mixture_law": law_info, "exponential_law": exp_info},
      "params": {"mixture_law": law.as_dict(table.domains),
                 "exponential_law": {"c": exp_law.c.tolist(), "k": exp_law.k.tolist(), "t": exp_law.t.tolist()}},
      "optimal_mixture": {"target_model_size_m": target_n, "target_n_tokens_b": target_d,
                          "mixture_law": dict(zip(table.domains, h_law.tolist())),
                          "mixture_law_mean_loss": loss_law,
                          "exponential_law": dict(zip(table.domains, h_exp.tolist())),
                          "exponential_law_mean_loss": loss_exp},
  }
  results.write_results(out, record)
  print(f"\nresults written to {out}")


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
