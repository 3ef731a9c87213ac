"""Kunlun's ablation as a picture: ΔNE vs full Kunlun against training FLOPs per request.

    python scripts/plot_kunlun_ablation.py      # writes results/synthetic/kunlun_ablation.png

The rows are make_readme_tables.kunlun_ablation_rows() (the same numbers as the README table); the
grey band is ± 2 seed standard deviations of the noise yardstick config (NOISE_CONFIG), one seed per
point, so a point inside the band is not told apart from the full model.
"""
from __future__ import annotations

import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_readme_tables import NOISE_CONFIG, ROOT, kunlun_ablation_rows, seed_std  # noqa: E402


def plot(out: str) -> str | None:
  full, rows, missing = kunlun_ablation_rows()
  if full is None or full["gflops"] is None:
    return None
  std, n_seeds = seed_std(NOISE_CONFIG)
  fig, ax = plt.subplots(figsize=(7.5, 4.5))
  if std is not None:
    ax.axhspan(-2 * std, 2 * std, color="0.85", label=f"± 2σ seed noise ({NOISE_CONFIG}, {n_seeds} seeds)")
  ax.axhline(0, color="0.5", lw=0.8)
  ax.scatter([full["gflops"]], [0.0], marker="*", s=160, color="k", zorder=3, label="full Kunlun")
  for r in rows:
    if r["gflops"] is None:
      continue
    ax.scatter([r["gflops"]], [r["d_ne"]], s=40, zorder=3)
    ax.annotate(r["run"].replace("kunlun_rank_synthetic_", ""), (r["gflops"], r["d_ne"]),
                textcoords="offset points", xytext=(6, 4), fontsize=8)
  ax.set_xlabel("training GFLOPs per request (XLA count)")
  ax.set_ylabel("test mean NE − full Kunlun's (positive: worse)")
  title = "Kunlun ablation, synthetic world, one seed per point"
  ax.set_title(title + (f" (PARTIAL: {len(missing)} rows missing)" if missing else ""), fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="best")
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main():
  out = plot(os.path.join(ROOT, "results", "synthetic", "kunlun_ablation.png"))
  print(f"wrote {out}" if out else "no full Kunlun results file with FLOPs: nothing to plot")


if __name__ == "__main__":
  main()
