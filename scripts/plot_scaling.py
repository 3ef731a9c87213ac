"""Scaling-law fits and plot from a CSV of runs (columns family, compute, quality).

    python scripts/plot_scaling.py runs.csv --out results/scaling.png [--law power_law] [--baseline B]
        [--at_compute 1e10] [--num_bootstrap 1000]

Fits each family (log-linear Q = Q0 − η·log10(C/C0), or power law L = a·C^(−b) + c) with bootstrap
intervals, writes the PNG (quality against log compute, fitted lines, bands) and prints each fit; with
--baseline, also each family's scaling efficiency over it (slope ratio and iso-quality compute ratio
at --at_compute, default the largest compute in the table).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from recjax.scaling import fits  # noqa: E402


def _fmt(e: fits.Estimate) -> str:
  return f"{e.value:.4g} [{e.lo:.4g}, {e.hi:.4g}]"


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("csv")
  ap.add_argument("--out", required=True, help="PNG path")
  ap.add_argument("--law", choices=fits.LAWS, default="log_linear")
  ap.add_argument("--baseline", help="family every other family is compared with")
  ap.add_argument("--at_compute", type=float, help="compute of the iso-quality ratio (default: the largest)")
  ap.add_argument("--num_bootstrap", type=int, default=1000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--ylabel", default="quality")
  args = ap.parse_args(argv)
  families = fits.read_compute_runs(args.csv)
  if args.baseline is not None and args.baseline not in families:
    ap.error(f"--baseline {args.baseline!r} is not a family in {args.csv}: {sorted(families)}")
  out = fits.plot_scaling(args.out, families, law=args.law, num_bootstrap=args.num_bootstrap, seed=args.seed,
                          ylabel=args.ylabel)
  for name, fit in out.items():
    print(f"{name}: " + ", ".join(f"{k} = {_fmt(e)}" for k, e in fit.params.items()) + f", rmse {fit.rmse:.3g}")
  if args.baseline:
    at = args.at_compute or max(float(c.max()) for c, _ in families.values())
    cb, qb = families[args.baseline]
    for name, (ca, qa) in families.items():
      if name != args.baseline:
        eff = fits.scaling_efficiency(ca, qa, cb, qb, at_compute=at, law=args.law,
                                      num_bootstrap=args.num_bootstrap, seed=args.seed)
        print(f"{name} over {args.baseline}: slope ratio {_fmt(eff.slope_ratio)}, "
              f"iso-quality compute ratio at {at:.3g} {_fmt(eff.iso_compute_ratio)}")
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
