"""Per-epoch evaluation curves of finished runs, one PNG per dataset folder.

    python scripts/plot_history.py [results/ml-1m ...]     # default: every results/<dataset>/ folder

Reads the `metrics.per_epoch` history of each results JSON and writes <folder>/curves.png
(HR@10 and NDCG@10 against epoch, one line per config, published values as dotted lines where
known).
"""
from __future__ import annotations

import glob
import json
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_readme_tables import PUBLISHED, _model_key  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plot_folder(folder: str) -> str | None:
  runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
  runs = [r for r in runs if r.get("metrics", {}).get("per_epoch")]
  if not runs:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for r in runs:
    h = r["metrics"]["per_epoch"]
    for ax, key in zip(axes, ("hr@10", "ndcg@10")):
      line, = ax.plot([x["epoch"] for x in h], [x[key] for x in h], marker=".", label=r["config"])
      pub = PUBLISHED.get((r["dataset"], _model_key(r)))
      if pub:
        ax.axhline(pub[0 if key == "hr@10" else 1], color=line.get_color(), ls=":", lw=1)
  for ax, key in zip(axes, ("HR@10", "NDCG@10")):
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test {key}")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.suptitle(f"{os.path.basename(folder)}: per-epoch test metrics (dotted: published, with timestamps)")
  fig.tight_layout()
  out = os.path.join(folder, "curves.png")
  fig.savefig(out, dpi=110)
  plt.close(fig)
  return out


def main():
  folders = sys.argv[1:] or sorted(d for d in glob.glob(os.path.join(ROOT, "results", "*")) if os.path.isdir(d)
                                   and not d.endswith("bench"))
  for f in folders:
    out = plot_folder(f)
    if out:
      print(f"wrote {out}")


if __name__ == "__main__":
  main()
