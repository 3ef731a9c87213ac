"""Where the long-history world's planted signal falls under the study's split (counted, not trained).

    python scripts/long_world_split_signal.py [--preset cpu] [--variant KEY=V[,KEY=V...] ...]
                                              [--out results/long_sequences/summary/world_split_signal_cpu.json]

The long-sequence study (configs/long_sequences.py) asks whether a model reading the whole history
beats one reading the newest 256 events on the planted return-phase candidates. A model can only
learn that from the planted return-phase events among its *training* candidates. For the preset's
world (configs/long_world.py) and, with `--variant`, copies of it with some `WorldConfig` fields
changed, this builds the world (no training), applies the study's split (the `hstu_full` arm's
test_k / valid_k / train_k / min_history) and prints, per split, how many candidates are planted
return-phase events and the expected NE of the generator's four Bayes predictors on them
(recjax/data/synthetic_signal.py `split_signal`: oracle, full history, newest 256, no history).
Default variants: the preset itself and three that start the return phase earlier or raise its
rate (more training examples of the signal, at the price of a smaller full-vs-newest gap, since
return-phase events inside the window reveal the same old affinity). Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import long_sequences as ls   # pylint: disable=wrong-import-position
from recjax.data import synthetic as sy    # pylint: disable=wrong-import-position
from recjax.data import synthetic_signal   # pylint: disable=wrong-import-position
from recjax.train import results           # pylint: disable=wrong-import-position

DEFAULT_VARIANTS = ("", "dormant_return_from=0.6", "dormant_return_from=0.6,dormant_return_rate=0.1",
                    "dormant_early_until=0.2,dormant_return_from=0.5,dormant_return_rate=0.1")


def parse_variant(spec: str) -> dict:
  """'key=v,key=v' -> {key: float}; keys must be WorldConfig fields (an unknown one raises naming them)."""
  fields = {f.name for f in dataclasses.fields(sy.WorldConfig)}
  out = {}
  for part in filter(None, (p.strip() for p in spec.split(","))):
    key, sep, value = part.partition("=")
    if not sep or key not in fields:
      raise ValueError(f"--variant {spec!r}: {part!r} is not KEY=VALUE with KEY a WorldConfig field "
                       f"({sorted(fields)})")
    try:
      out[key] = float(value)
    except ValueError:
      raise ValueError(f"--variant {spec!r}: {key} needs a number, got {value!r}") from None
  return out


def measure(preset: str, overrides: dict) -> dict:
  """The study's split of the preset's world with `overrides` -> split_signal's dict + the world used."""
  c = ls.get_config("hstu_full" + ("" if preset == "world" else f",{preset}"))
  kinds = {f.name: f.type for f in dataclasses.fields(sy.WorldConfig)}   # annotations are strings here
  world = {**c.data.world.to_dict(), **{k: int(v) if kinds[k] == "int" else v for k, v in overrides.items()}}
  cfg = sy.WorldConfig(**world)
  r = c.ranking
  got = synthetic_signal.split_signal(sy.build_world(cfg), test_k=r.test_k, valid_k=r.valid_k,
                                      train_k=r.get("train_k", 0), min_history=r.min_history)
  return {"overrides": overrides, "world": dataclasses.asdict(cfg), "splits": got}


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--preset", default="cpu", choices=tuple(ls.PRESETS))
  ap.add_argument("--variant", action="append", default=None,
                  help="WorldConfig fields to change, KEY=V[,KEY=V]; '' is the preset itself (repeatable)")
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  out = args.out or f"results/long_sequences/summary/world_split_signal_{args.preset}.json"
  variants = DEFAULT_VARIANTS if args.variant is None else tuple(args.variant)
  t0 = time.time()
  rows = [measure(args.preset, parse_variant(v)) for v in variants]
  print(f"planted return-phase candidates per split and expected NE on the test ones ({args.preset} world)")
  print("| variant | train | valid | test | planted share of dormant-topic train candidates "
        "| test NE: oracle / full / newest 256 / none | train NE: full / newest 256 |")
  print("|---|---|---|---|---|---|---|")
  for v, row in zip(variants, rows):
    s = row["splits"]
    ne = lambda split: s[split]["ne"] or {}   # noqa: E731
    fmt = lambda d, keys: " / ".join(f"{d[k]:.4f}" if k in d else "-" for k in keys)   # noqa: E731
    print(f"| {v or '(preset)'} | {s['train']['planted_return']} of {s['train']['candidates']} | "
          f"{s['valid']['planted_return']} | {s['test']['planted_return']} | "
          f"{s['train']['planted_return'] / max(s['train']['dormant_topic'], 1):.2f} | "
          f"{fmt(ne('test'), ('oracle', 'full_history', 'newest_256', 'no_history'))} | "
          f"{fmt(ne('train'), ('full_history', 'newest_256'))} |")
  record = {
      "kind": "long_world_split_signal", "preset": args.preset, "variants": list(variants), "rows": rows,
      "dataset": f"long_world {args.preset} preset (configs/long_world.py), generated, with each variant's overrides",
      "model": "none: the generator's Bayes predictors (oracle, full history, newest 256, no history)",
      "config": f"configs/long_sequences.py:hstu_full{'' if args.preset == 'world' else ',' + args.preset} (its split)",
      "metrics": {v or "preset": row["splits"] for v, row in zip(variants, rows)},
      "definition": "per split of configs/long_sequences.py's hstu_full arm: candidates, planted return-phase "
                    "candidates, and the expected NE (mean of the 8 feedbacks, true probability as label) of "
                    "the generator's Bayes predictors on them (recjax/data/synthetic_signal.py split_signal)",
      "seed": None, "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
      "commit": results.git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
      "versions": results.versions(), "hardware": results.hardware(),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "wall_clock_s": time.time() - t0}
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  results.write_results(out, record)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
