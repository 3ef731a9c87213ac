"""How much stochastic length takes off a long-sequence arm's training epoch (counted, not timed).

    python scripts/stochastic_length_load.py [--preset cpu] [--seed 1] [--workdir /tmp/sl_load]
                                             [--out results/bench/stochastic_length_cpu.json]

Builds the ranking task of configs/long_sequences.py `hstu_sl,<preset>` (HSTU's stochastic length,
alpha = SL_ALPHA) and of `hstu_full,<preset>` (whole histories) on the same world and split, draws one
training epoch of batches from each (`task.train_dataset`, the batches the trainer reads) and
counts, per epoch: padded history tokens (sum over batches of rows x width) and the attention-cost
proxy sum of rows x width². Also the per-request expectation from the SL law
(`StochasticLength.expected_lengths`) over the training requests. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import long_sequences as ls   # pylint: disable=wrong-import-position
from recjax import tasks                    # pylint: disable=wrong-import-position
from recjax.train import results            # pylint: disable=wrong-import-position


def epoch_load(task, batch_size: int, seed: int) -> dict:
  """One epoch of the task's training batches -> padded tokens and sum of rows x width²."""
  ds = task.train_dataset(batch_size, 1, seed=seed)
  tokens = squares = 0.0
  widths = []
  for i in range(len(ds)):
    b = ds[i]
    rows, width = b["hist_ids"].shape
    tokens += rows * width
    squares += rows * float(width) ** 2
    widths.append(width)
  return {"steps": len(ds), "padded_tokens": tokens, "rows_x_width_sq": squares,
          "widths": {int(w): int(c) for w, c in zip(*np.unique(widths, return_counts=True))}}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--preset", default="cpu", choices=("cpu", "world"))
  ap.add_argument("--seed", type=int, default=1)
  ap.add_argument("--workdir", default="/tmp/sl_load")
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  out = args.out or f"results/bench/stochastic_length_{args.preset}.json"
  t0 = time.time()
  suffix = "" if args.preset == "world" else f",{args.preset}"
  sl_task = tasks.make_task(ls.get_config("hstu_sl" + suffix), args.workdir)
  full_cfg = ls.get_config("hstu_full" + suffix)
  full_task = tasks.make_task(full_cfg, args.workdir)   # same workdir: the same generated world
  sl, ex = sl_task.stochastic_length, sl_task.examples["train"]
  n = ex.arrays["hist_lengths"].astype(np.float64)
  e = sl.expected_lengths(n)
  p = sl.subsample_probability(n)
  e_sq = p * np.minimum(n, sl.threshold) ** 2 + (1 - p) * n ** 2
  b = full_cfg.train.batch_size
  got, ref = epoch_load(sl_task, b, args.seed), epoch_load(full_task, b, args.seed)
  record = {
      "kind": "stochastic_length_load", "preset": args.preset, "alpha": sl.alpha, "max_len": sl.max_len,
      "threshold": sl.threshold, "select": sl.select, "training_requests": int(len(n)),
      "share_longer_than_threshold": float(np.mean(n > sl.threshold)), "batch_size": b, "seed": args.seed,
      "expected": {"tokens_ratio": float(e.sum() / n.sum()), "len_sq_ratio": float(e_sq.sum() / (n ** 2).sum())},
      "epoch": {"sl": got, "full": ref, "padded_tokens_ratio": got["padded_tokens"] / ref["padded_tokens"],
                "rows_x_width_sq_ratio": got["rows_x_width_sq"] / ref["rows_x_width_sq"]},
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "commit": results.git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      "versions": results.versions(), "hardware": results.hardware(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "wall_clock_s": time.time() - t0}
  print(f"stochastic length alpha {sl.alpha} on the {args.preset} world: threshold {sl.threshold}, "
        f"{record['share_longer_than_threshold']:.0%} of {len(n)} training requests longer")
  print("| measure | SL / whole histories |\n|---|---|")
  print(f"| expected tokens per request (law) | {record['expected']['tokens_ratio']:.3f} |")
  print(f"| expected len² per request (law) | {record['expected']['len_sq_ratio']:.3f} |")
  print(f"| one epoch's padded tokens (batches) | {record['epoch']['padded_tokens_ratio']:.3f} |")
  print(f"| one epoch's rows x width² (batches) | {record['epoch']['rows_x_width_sq_ratio']:.3f} |")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  results.write_results(out, record)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
