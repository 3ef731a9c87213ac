"""Comparisons over training seeds: mean ± std per arm, paired differences, the "no worse" verdict.

A study trains each arm (e.g. a data mixture) at several seeds. Runs at the same seed share what
the seed sets (initial weights, batch order, dropout masks) when the arms differ only in their
data, so the difference of two arms is taken *per seed* (paired) and summarised over seeds.

The verdict rule (fixed before the mixture study's extra seeds were run, issue 19):
  d_s = loss(A, seed s) − loss(B, seed s) over the n seeds both arms have; mean d̄, sample std s_d
  (n − 1), and the two-sided 95% Student-t interval d̄ ± t(0.975, n − 1)·s_d/√n.
    "better"        the interval lies below 0   (A's loss lower at 95%)
    "worse"         the interval lies above 0   (A's loss higher at 95%)
    "within noise"  the interval contains 0
  A is "no worse" than B unless the verdict is "worse": the done-when asks "no worse", and a
  difference the seeds cannot tell from 0 is not evidence of worse. This is lenient at few seeds
  (at n = 3, t = 4.30: the interval is wide), so `mean_no_worse` (d̄ <= 0) is reported beside it;
  "within noise" is no claim of equivalence. With one paired seed there is no spread: the verdict
  is the sign alone ("one seed: sign only").
Lower is better throughout (losses).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class SeedSummary:
  """Mean and sample std (n − 1; 0 for one seed) of one quantity over seeds."""
  mean: float
  std: float
  n: int

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def summarise(values: Sequence[float]) -> SeedSummary:
  """Values over seeds -> mean ± sample std."""
  x = np.asarray(values, np.float64)
  if x.ndim != 1 or len(x) == 0:
    raise ValueError(f"summarise: values must be a non-empty list of numbers, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"summarise: values must be finite, got {x.tolist()}")
  return SeedSummary(float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, len(x))


def summarise_columns(values_SK) -> dict:
  """[S seeds, K columns] (e.g. per-domain losses) -> per-column {"mean": [K], "std": [K], "n": S}."""
  x = np.asarray(values_SK, np.float64)
  if x.ndim != 2 or x.shape[0] == 0:
    raise ValueError(f"summarise_columns: values_SK must be [seeds, columns] with >= 1 seed, got shape {x.shape}")
  cols = [summarise(x[:, k]) for k in range(x.shape[1])]
  return {"mean": [c.mean for c in cols], "std": [c.std for c in cols], "n": int(x.shape[0])}


def paired_difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float], *,
                      level: float = LEVEL) -> dict:
  """A − B at every seed both have, and the verdict of the module docstring's rule.

  Returns {"seeds", "diffs", "mean", "std", "n", "ci" (None for one seed), "level", "verdict",
  "no_worse", "mean_no_worse"}.
  """
  if not 0 < level < 1:
    raise ValueError(f"paired_difference: level must be in (0, 1), got {level}")
  seeds = sorted(set(a_by_seed) & set(b_by_seed))
  if not seeds:
    raise ValueError(f"paired_difference: no seed in common (A has {sorted(a_by_seed)}, B has {sorted(b_by_seed)})")
  diffs = [float(a_by_seed[s]) - float(b_by_seed[s]) for s in seeds]
  s = summarise(diffs)
  if s.n == 1:
    ci, verdict = None, "one seed: sign only"
    no_worse = s.mean <= 0
  else:
    half = float(stats.t.ppf(0.5 + level / 2, s.n - 1)) * s.std / math.sqrt(s.n)
    ci = [s.mean - half, s.mean + half]
    verdict = "better" if ci[1] < 0 else "worse" if ci[0] > 0 else "within noise"
    no_worse = verdict != "worse"
  return {"seeds": seeds, "diffs": diffs, "mean": s.mean, "std": s.std, "n": s.n, "ci": ci, "level": level,
          "verdict": verdict, "no_worse": bool(no_worse), "mean_no_worse": bool(s.mean <= 0)}
