"""Compute scaling laws: fits, bootstrap confidence intervals, and scaling efficiency.

Two laws of quality against compute C (FLOPs per example, or training FLOPs; papers.md §1.1, §2.5):

    log-linear   Q(C) = Q0 − η · log_base(C / C0)      (Kunlun's "scaling efficiency" is η)
    power law    L(C) = a · C^(−b) + c                  (ULTRA-HSTU's survey form, plus a floor c)

Which one the papers fit is not published, so both are here. Every fit comes with percentile
bootstrap intervals: the runs are resampled with replacement (seeded) and refitted; a resample
with too few distinct compute values to identify the law is drawn again.

Scaling efficiency of family A over family B (papers.md §2.5), each with a bootstrap interval
from resampling A's and B's runs independently:
  (1) slope ratio: η_A / η_B (log-linear) or b_A / b_B (power law);
  (2) iso-quality compute ratio at compute C: the compute B needs to reach the quality A reaches
      at C, divided by C (> 1 when A is more efficient).

`replicate_efficiency` gives the same two ratios with intervals over replicates of each run's quality
instead (e.g. a bootstrap over the evaluation's users, shared by every run): the noise of the
measurement, with the runs fixed.

The power law is fitted by variable projection: for a fixed exponent b, (a, c) is a linear least
squares problem, so only b is searched (a log-spaced grid, then a bounded 1-D refinement). No
starting values to tune, and the same answer every time.
"""
from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import optimize

LAWS = ("log_linear", "power_law")
B_RANGE = (1e-4, 10.0)   # power-law exponents searched (the grid is log-spaced over this range)
_B_GRID = np.geomspace(*B_RANGE, 241)
MAX_REDRAWS = 20         # per bootstrap sample, before giving up on an unidentifiable data set


@dataclasses.dataclass(frozen=True)
class LogLinearLaw:
  """Q(C) = q0 − eta · log_base(C / c0)."""
  q0: float
  eta: float
  c0: float
  base: float = 10.0

  @property
  def slope(self) -> float:
    return self.eta

  def predict(self, compute) -> np.ndarray:
    return self.q0 - self.eta * np.log(np.asarray(compute, np.float64) / self.c0) / math.log(self.base)

  def compute_for(self, quality) -> np.ndarray:
    """The compute at which the law reaches `quality` (inf/0 when eta = 0)."""
    with np.errstate(divide="ignore", over="ignore"):
      return self.c0 * np.power(self.base, (self.q0 - np.asarray(quality, np.float64)) / self.eta)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """L(C) = a · C^(−b) + c."""
  a: float
  b: float
  c: float

  @property
  def slope(self) -> float:
    return self.b

  def predict(self, compute) -> np.ndarray:
    return self.a * np.exp(-self.b * np.log(np.asarray(compute, np.float64))) + self.c

  def compute_for(self, loss) -> np.ndarray:
    """The compute at which the law reaches `loss`; NaN where it never does (loss beyond the floor c)."""
    ratio = (np.asarray(loss, np.float64) - self.c) / self.a
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(ratio > 0, np.exp(-np.log(np.where(ratio > 0, ratio, 1.0)) / self.b), np.nan)


Law = LogLinearLaw | PowerLaw


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A point estimate with its percentile bootstrap interval [lo, hi] at `level`."""
  value: float
  lo: float
  hi: float
  level: float

  def covers(self, x: float) -> bool:
    return self.lo <= x <= self.hi


@dataclasses.dataclass(frozen=True)
class LawFit:
  """A fitted law, its parameters with bootstrap intervals, and the bootstrap refits.

  rmse: root mean squared residual of the fit on all runs."""
  law: Law
  params: Mapping[str, Estimate]
  boot: tuple[Law, ...]
  rmse: float
  level: float

  def band(self, compute) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the bootstrap refits' predictions at `compute`."""
    preds = np.stack([law.predict(compute) for law in self.boot])
    q = 100 * (1 - self.level) / 2
    return np.nanpercentile(preds, q, axis=0), np.nanpercentile(preds, 100 - q, axis=0)


def _validate(compute, quality, min_distinct: int, what: str) -> tuple[np.ndarray, np.ndarray]:
  c = np.asarray(compute, np.float64)
  q = np.asarray(quality, np.float64)
  if c.ndim != 1 or q.shape != c.shape:
    raise ValueError(f"{what}: compute and quality must be 1-D of the same length, got {c.shape} and {q.shape}")
  bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
  if bad.size:
    raise ValueError(f"{what}: compute must be finite and > 0; run {bad[0]} has compute={float(c[bad[0]])!r}")
  bad = np.flatnonzero(~np.isfinite(q))
  if bad.size:
    raise ValueError(f"{what}: quality must be finite; run {bad[0]} has quality={float(q[bad[0]])!r}")
  if len(np.unique(c)) < min_distinct:
    raise ValueError(f"{what}: needs runs at ≥ {min_distinct} distinct compute values, got {len(np.unique(c))}")
  return c, q


def _fit_log_linear_points(c, q, base: float, c0: float) -> LogLinearLaw:
  x = np.log(c / c0) / math.log(base)
  slope, intercept = np.polyfit(x, q, 1)
  return LogLinearLaw(float(intercept), float(-slope), c0, base)


def _ac_for_b(x_N, y_N, b_G):
  """Least-squares (a, c) of y ≈ a·x^(−b) + c for each b of b_G -> (a_G, c_G, sse_G)."""
  f_GN = np.exp(-np.outer(b_G, np.log(x_N)))
  fm = f_GN.mean(axis=1, keepdims=True)
  ym = y_N.mean()
  var_f = np.sum((f_GN - fm) ** 2, axis=1)
  a = np.where(var_f > 0, np.sum((f_GN - fm) * (y_N - ym), axis=1) / np.where(var_f > 0, var_f, 1.0), 0.0)
  c = ym - a * fm[:, 0]
  sse = np.sum((a[:, None] * f_GN + c[:, None] - y_N) ** 2, axis=1)
  return a, c, sse


def _fit_power_law_points(c, q) -> PowerLaw:
  c0 = float(np.exp(np.mean(np.log(c))))   # centre the compute axis: x = C/C0 ~ 1 keeps x^(−b) tame
  x = c / c0
  _, _, sse = _ac_for_b(x, q, _B_GRID)
  i = int(np.argmin(sse))
  lo, hi = _B_GRID[max(i - 1, 0)], _B_GRID[min(i + 1, len(_B_GRID) - 1)]
  res = optimize.minimize_scalar(lambda b: _ac_for_b(x, q, np.array([b]))[2][0], bounds=(lo, hi),
                                 method="bounded", options={"xatol": 1e-10})
  b = float(res.x) if res.fun <= sse[i] else float(_B_GRID[i])
  a_x, c_fit, _ = _ac_for_b(x, q, np.array([b]))
  # a·(C/C0)^(−b) = (a·C0^b)·C^(−b)
  return PowerLaw(float(a_x[0] * c0 ** b), b, float(c_fit[0]))


def _bootstrap(c, q, fit_points: Callable, num: int, seed: int, min_distinct: int) -> tuple:
  rng = np.random.default_rng(seed)
  n = len(c)
  laws = []
  for _ in range(num):
    for _ in range(MAX_REDRAWS):
      idx = rng.integers(0, n, n)
      if len(np.unique(c[idx])) >= min_distinct:
        laws.append(fit_points(c[idx], q[idx]))
        break
    else:
      raise ValueError(f"bootstrap: {MAX_REDRAWS} resamples in a row had < {min_distinct} distinct compute "
                       f"values; add runs at more compute values")
  return tuple(laws)


def _estimate(value: float, samples: np.ndarray, level: float) -> Estimate:
  q = 100 * (1 - level) / 2
  lo, hi = np.nanpercentile(samples, [q, 100 - q])
  return Estimate(float(value), float(lo), float(hi), level)


def _check_level(level: float, num_bootstrap: int):
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}")
  if num_bootstrap < 10:
    raise ValueError(f"num_bootstrap must be ≥ 10 for a percentile interval, got {num_bootstrap}")


def fit_log_linear(compute, quality, *, base: float = 10.0, c0: float | None = None, num_bootstrap: int = 1000,
                   level: float = 0.95, seed: int = 0) -> LawFit:
  """Least-squares Q = q0 − eta·log_base(C/c0) over runs (compute[i], quality[i]).

  c0 defaults to the geometric mean of the compute values, where q0 and eta are uncorrelated."""
  _check_level(level, num_bootstrap)
  c, q = _validate(compute, quality, 2, "fit_log_linear")
  c0 = float(np.exp(np.mean(np.log(c)))) if c0 is None else float(c0)
  fit_points = lambda cc, qq: _fit_log_linear_points(cc, qq, base, c0)
  law = fit_points(c, q)
  boot = _bootstrap(c, q, fit_points, num_bootstrap, seed, 2)
  params = {k: _estimate(getattr(law, k), np.array([getattr(b, k) for b in boot]), level) for k in ("q0", "eta")}
  rmse = float(np.sqrt(np.mean((law.predict(c) - q) ** 2)))
  return LawFit(law, params, boot, rmse, level)


def fit_power_law(compute, loss, *, num_bootstrap: int = 1000, level: float = 0.95, seed: int = 0) -> LawFit:
  """Least-squares L = a·C^(−b) + c over runs, b searched in `B_RANGE`. Needs ≥ 4 distinct compute
  values (three parameters, and a resample must still identify them)."""
  _check_level(level, num_bootstrap)
  c, q = _validate(compute, loss, 4, "fit_power_law")
  law = _fit_power_law_points(c, q)
  boot = _bootstrap(c, q, _fit_power_law_points, num_bootstrap, seed, 3)
  params = {k: _estimate(getattr(law, k), np.array([getattr(b, k) for b in boot]), level) for k in ("a", "b", "c")}
  rmse = float(np.sqrt(np.mean((law.predict(c) - q) ** 2)))
  return LawFit(law, params, boot, rmse, level)


def fit_point(law: str, compute, quality, *, base: float = 10.0, c0: float | None = None) -> Law:
  """The least-squares law alone, no bootstrap (refits on resampled qualities; `replicate_efficiency`)."""
  if law not in LAWS:
    raise ValueError(f"law must be one of {LAWS}, got {law!r}")
  if law == "power_law":
    return _fit_power_law_points(*_validate(compute, quality, 4, "fit_point"))
  c, q = _validate(compute, quality, 2, "fit_point")
  return _fit_log_linear_points(c, q, base, float(np.exp(np.mean(np.log(c)))) if c0 is None else float(c0))


@dataclasses.dataclass(frozen=True)
class ReplicateEfficiency:
  """Efficiency of A over B and each family's slope, with intervals over quality replicates."""
  slope_ratio: Estimate
  iso_compute_ratio: Estimate
  slope_a: Estimate
  slope_b: Estimate
  at_compute: float
  replicates: int


def replicate_efficiency(compute_a, quality_a, replicates_a_SR, compute_b, quality_b, replicates_b_SR, *,
                         at_compute: float, law: str = "log_linear", level: float = 0.95) -> ReplicateEfficiency:
  """Slope ratio and iso-quality compute ratio of A over B, with percentile intervals over S
  replicates of every run's quality (row s of `replicates_a_SR` [S, R_A] and `replicates_b_SR`
  [S, R_B] is one draw, e.g. one bootstrap resample of the evaluation users shared by all runs).

  The runs stay fixed: the interval is the evaluation's sampling noise, which the bootstrap over
  runs (`scaling_efficiency`) cannot see, and not the noise of training (seeds)."""
  ra, rb = np.asarray(replicates_a_SR, np.float64), np.asarray(replicates_b_SR, np.float64)
  if ra.ndim != 2 or rb.ndim != 2 or ra.shape[0] != rb.shape[0]:
    raise ValueError(f"replicates must be [S, R_A] and [S, R_B] with the same S, got {ra.shape} and {rb.shape}")
  if ra.shape[1] != len(compute_a) or rb.shape[1] != len(compute_b):
    raise ValueError(f"replicates have {ra.shape[1]} and {rb.shape[1]} runs; compute has {len(compute_a)} "
                     f"and {len(compute_b)}")
  _check_level(level, ra.shape[0])
  la, lb = fit_point(law, compute_a, quality_a), fit_point(law, compute_b, quality_b)
  boot = [(fit_point(law, compute_a, qa), fit_point(law, compute_b, qb)) for qa, qb in zip(ra, rb)]
  with np.errstate(divide="ignore", invalid="ignore"):
    slopes = np.array([a.slope / b.slope for a, b in boot])
    isos = np.array([iso_compute_ratio(a, b, at_compute) for a, b in boot])
    return ReplicateEfficiency(
        _estimate(la.slope / lb.slope, slopes, level), _estimate(iso_compute_ratio(la, lb, at_compute), isos, level),
        _estimate(la.slope, np.array([a.slope for a, _ in boot]), level),
        _estimate(lb.slope, np.array([b.slope for _, b in boot]), level), float(at_compute), ra.shape[0])


def fit_law(law: str, compute, quality, **kwargs) -> LawFit:
  if law not in LAWS:
    raise ValueError(f"law must be one of {LAWS}, got {law!r}")
  return (fit_log_linear if law == "log_linear" else fit_power_law)(compute, quality, **kwargs)


@dataclasses.dataclass(frozen=True)
class Efficiency:
  """Scaling efficiency of family A over family B (see the module docstring)."""
  slope_ratio: Estimate
  iso_compute_ratio: Estimate
  at_compute: float
  fit_a: LawFit
  fit_b: LawFit


def iso_compute_ratio(law_a: Law, law_b: Law, at_compute: float) -> float:
  """Compute B needs to reach the quality A reaches at `at_compute`, over `at_compute`."""
  return float(law_b.compute_for(law_a.predict(at_compute)) / at_compute)


def scaling_efficiency(compute_a, quality_a, compute_b, quality_b, *, at_compute: float,
                       law: str = "log_linear", num_bootstrap: int = 1000, level: float = 0.95, seed: int = 0,
                       **fit_kwargs) -> Efficiency:
  """Slope ratio and iso-quality compute ratio of A over B, with bootstrap intervals.

  The two families are resampled independently (seeds `seed` and `seed + 1`); the k-th refit of A is
  paired with the k-th refit of B."""
  if not (np.isfinite(at_compute) and at_compute > 0):
    raise ValueError(f"at_compute must be finite and > 0, got {at_compute!r}")
  fa = fit_law(law, compute_a, quality_a, num_bootstrap=num_bootstrap, level=level, seed=seed, **fit_kwargs)
  fb = fit_law(law, compute_b, quality_b, num_bootstrap=num_bootstrap, level=level, seed=seed + 1, **fit_kwargs)
  with np.errstate(divide="ignore", invalid="ignore"):
    slopes = np.array([a.slope / b.slope for a, b in zip(fa.boot, fb.boot)])
    isos = np.array([iso_compute_ratio(a, b, at_compute) for a, b in zip(fa.boot, fb.boot)])
  return Efficiency(_estimate(fa.law.slope / fb.law.slope, slopes, level),
                    _estimate(iso_compute_ratio(fa.law, fb.law, at_compute), isos, level),
                    float(at_compute), fa, fb)


def read_compute_runs(path: str, *, compute_column: str = "compute", quality_column: str = "quality",
                      family_column: str = "family") -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """A CSV of runs, one row each (columns `family`, `compute`, `quality`; others ignored) ->
  family -> (compute [R], quality [R]), families in order of first appearance. A bad cell raises a
  ValueError naming the file, the line and the column."""
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in (family_column, compute_column, quality_column) if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
    runs: dict[str, tuple[list, list]] = {}
    for row in reader:
      line = reader.line_num
      values = []
      for col in (compute_column, quality_column):
        try:
          v = float(row[col])
        except (TypeError, ValueError):
          raise ValueError(f"{path}:{line}: column {col!r}: not a number: {row[col]!r}") from None
        if not math.isfinite(v) or (col == compute_column and v <= 0):
          raise ValueError(f"{path}:{line}: column {col!r}: {v!r} is not {'> 0' if col == compute_column else 'finite'}")
        values.append(v)
      family = (row[family_column] or "").strip()
      if not family:
        raise ValueError(f"{path}:{line}: column {family_column!r} is empty")
      cs, qs = runs.setdefault(family, ([], []))
      cs.append(values[0])
      qs.append(values[1])
  if not runs:
    raise ValueError(f"{path}: no runs")
  return {k: (np.array(c), np.array(q)) for k, (c, q) in runs.items()}


@dataclasses.dataclass(frozen=True)
class Panel:
  """One axis of `plot_panels`: families name -> (compute [R], quality [R]), the law, the y label, and
  optionally its own x label and title (default: `plot_panels`' xlabel, and the law's name)."""
  families: Mapping[str, tuple]
  law: str = "log_linear"
  ylabel: str = "quality"
  xlabel: str | None = None
  title: str | None = None


def _draw(ax, families: Mapping[str, tuple], law: str, num_bootstrap: int, level: float, seed: int,
          xlabel: str, ylabel: str, title: str) -> dict[str, LawFit]:
  """Each family's runs, fitted law and bootstrap band on `ax` -> the fits by name."""
  if not families:
    raise ValueError("plot_scaling: no families to plot")
  fits = {}
  for k, (name, (compute, quality)) in enumerate(families.items()):
    fit = fit_law(law, compute, quality, num_bootstrap=num_bootstrap, level=level, seed=seed + k)
    fits[name] = fit
    c = np.asarray(compute, np.float64)
    grid = np.geomspace(c.min(), c.max(), 100)
    lo, hi = fit.band(grid)
    color = f"C{k}"
    slope = "η" if law == "log_linear" else "b"
    est = fit.params["eta" if law == "log_linear" else "b"]
    ax.scatter(c, quality, color=color, s=18, zorder=3)
    ax.plot(grid, fit.law.predict(grid), color=color,
            label=f"{name}: {slope} = {est.value:.3g} [{est.lo:.3g}, {est.hi:.3g}]")
    ax.fill_between(grid, lo, hi, color=color, alpha=0.2, linewidth=0)
  ax.set_xscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.legend(fontsize=8)
  ax.grid(True, which="both", alpha=0.3)
  return fits


def plot_scaling(path, families: Mapping[str, tuple], *, law: str = "log_linear", num_bootstrap: int = 200,
                 level: float = 0.95, seed: int = 0, xlabel: str = "compute (FLOPs)", ylabel: str = "quality",
                 title: str = "") -> dict[str, LawFit]:
  """PNG of quality against log compute: each family's runs, its fitted law and the bootstrap band.

  families: name -> (compute [R], quality [R]). Returns the fits by name."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  if not families:
    raise ValueError("plot_scaling: no families to plot")
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  fits = _draw(ax, families, law, num_bootstrap, level, seed, xlabel, ylabel,
               title or f"{law.replace('_', '-')} fits, {round(100 * level)}% bootstrap bands")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return fits


def plot_panels(path, panels: list[Panel], *, num_bootstrap: int = 200, level: float = 0.95, seed: int = 0,
                xlabel: str = "compute (FLOPs)", title: str = "") -> list[dict[str, LawFit]]:
  """One PNG with a `plot_scaling` axis per panel, side by side -> the fits of each panel."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  if not panels:
    raise ValueError("plot_panels: no panels")
  fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
  out = [_draw(ax, p.families, p.law, num_bootstrap, level, seed, p.xlabel or xlabel, p.ylabel,
               p.title or p.law.replace("_", "-"))
         for ax, p in zip(axes[0], panels)]
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return out
