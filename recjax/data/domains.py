"""Training mixtures over domains: the share of the training targets drawn from each domain.

A domain is the value of a per-event field of the sequences (`UserSequences.extras[field]`, e.g.
KuaiRand's `tab`: on the synthetic world each session happens in one tab, and tab k's events are
uniformly random items with the known probability `WorldConfig.tab_noise[k]`). The mixture acts on
the supervised *targets* of the training examples, not on their inputs: every user's window is still
read whole as history, and only the labels drawn for the mixture are kept (the others are set to 0,
"not supervised", which the packed loss skips). This is the data-mixture law's setting (Dai & Zheng
2026, papers.md §5): weight h_k is the share of the training signal that comes from domain k, at a
fixed total budget, so mixtures differ in what is learnt, never in how much.

Settings (`config.data.domains`, `DomainSettings.from_config`):
  field    the extras field naming the domain ("" = off: every label is kept, as before);
  weights  one weight per domain (domains are 0 .. K-1, K = the largest id in the data + 1),
           each >= 0, summing to 1;
  natural  True: the weights are the pool's own shares (leave `weights` empty);
  targets  the number of training targets kept in all (0: the most the pool allows at these weights);
  seed     which targets of each domain are drawn (uniformly, without replacement).
The realised counts are exact: n_k = the largest-remainder rounding of h_k * targets, so they sum
to `targets` and each differs from h_k * targets by less than 1.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from recjax.data.types import UserSequences

WEIGHT_TOLERANCE = 1e-6


@dataclasses.dataclass(frozen=True)
class DomainSettings:
  field: str = ""
  weights: tuple[float, ...] = ()
  natural: bool = False
  targets: int = 0
  seed: int = 0

  def __post_init__(self):
    object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
    if self.targets < 0:
      raise ValueError(f"data.domains.targets must be >= 0 (0 = as many as the pool allows), got {self.targets}")
    if self.enabled and self.natural == bool(self.weights):
      raise ValueError("data.domains: give either weights (one per domain) or natural=True, not "
                       f"{'both' if self.natural else 'neither'} (field={self.field!r}, weights={self.weights})")
    if not self.enabled and (self.weights or self.natural):
      raise ValueError("data.domains.weights / natural are set but data.domains.field is empty: name the "
                       "per-event field that holds each event's domain (e.g. 'tab')")

  @property
  def enabled(self) -> bool:
    return bool(self.field)

  @classmethod
  def from_config(cls, cfg) -> "DomainSettings":
    """From `config.data.domains` (a dict or ConfigDict; None = off). Unknown keys are rejected."""
    if cfg is None:
      return cls()
    values = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"data.domains: unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def event_domains(seqs: UserSequences, field: str) -> np.ndarray:
  """[E] int64 domain of every event, from `seqs.extras[field]` (checked: integers >= 0)."""
  if field not in seqs.extras:
    raise ValueError(f"data.domains.field={field!r}: {seqs.source} has no per-event field {field!r}; "
                     f"its fields: {sorted(seqs.extras)}")
  d = np.asarray(seqs.extras[field])
  if len(d) and (not np.issubdtype(d.dtype, np.integer) or d.min() < 0):
    raise ValueError(f"data.domains.field={field!r} of {seqs.source}: domains must be integers >= 0 "
                     f"(dtype {d.dtype}, min {d.min()})")
  return d.astype(np.int64)


def resolve_weights(settings: DomainSettings, pool_K: np.ndarray) -> np.ndarray:
  """[K] the mixture to train on: `settings.weights` validated against K domains, or the pool's shares."""
  pool_K = np.asarray(pool_K, np.int64)
  k = len(pool_K)
  if settings.natural:
    return pool_K / pool_K.sum()
  w = np.asarray(settings.weights, np.float64)
  if len(w) != k:
    raise ValueError(f"data.domains.weights has {len(w)} values; the data has {k} domains "
                     f"(field {settings.field!r} takes values 0..{k - 1}): give one weight per domain")
  bad = [i for i, x in enumerate(w) if not math.isfinite(x) or x < 0]
  if bad:
    raise ValueError(f"data.domains.weights[{bad[0]}] = {w[bad[0]]}: every weight must be finite and >= 0")
  if abs(w.sum() - 1.0) > WEIGHT_TOLERANCE:
    raise ValueError(f"data.domains.weights sum to {w.sum():.9f}, not 1: {tuple(w)}")
  empty = [i for i in range(k) if w[i] > 0 and pool_K[i] == 0]
  if empty:
    raise ValueError(f"data.domains.weights[{empty[0]}] = {w[empty[0]]} but domain {empty[0]} has no training targets")
  return w / w.sum()


def target_counts(weights_K: np.ndarray, total: int) -> np.ndarray:
  """[K] int64 counts summing to `total`, each within 1 of weights_K * total (largest remainder)."""
  exact = np.asarray(weights_K, np.float64) * total
  counts = np.floor(exact).astype(np.int64)
  short = total - int(counts.sum())
  if short:
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
  return counts


def max_targets(weights_K: np.ndarray, pool_K: np.ndarray) -> int:
  """The largest budget whose counts at `weights_K` fit in the pool (no target drawn twice)."""
  w, pool = np.asarray(weights_K, np.float64), np.asarray(pool_K, np.int64)
  total = int(min(math.floor(pool[i] / w[i] + 1e-9) for i in range(len(w)) if w[i] > 0))
  while total > 0 and np.any(target_counts(w, total) > pool):   # rounding up may overdraw by one
    total -= 1
  return total


@dataclasses.dataclass(frozen=True)
class Mixture:
  """What `select_targets` drew: the weights, the pool and the kept counts per domain."""
  weights_K: np.ndarray
  pool_K: np.ndarray
  counts_K: np.ndarray
  keep_UL: np.ndarray           # bool [U, L] labels kept

  def summary(self) -> dict:
    total = int(self.counts_K.sum())
    return {"weights": self.weights_K.tolist(), "pool": self.pool_K.tolist(), "targets": self.counts_K.tolist(),
            "total_targets": total, "realised_shares": (self.counts_K / max(total, 1)).tolist()}


def select_targets(label_domain_UL: np.ndarray, settings: DomainSettings, num_domains: int) -> Mixture:
  """Draws the training targets of the mixture from labels whose domains are `label_domain_UL`
  ([U, L], -1 = padding): exactly `target_counts(weights, targets)` of each domain."""
  valid = label_domain_UL >= 0
  pool_K = np.bincount(label_domain_UL[valid], minlength=num_domains).astype(np.int64)
  w = resolve_weights(settings, pool_K)
  cap = max_targets(w, pool_K)
  total = settings.targets or cap
  counts = target_counts(w, total)
  over = np.flatnonzero(counts > pool_K)
  if len(over):
    i = int(over[0])
    raise ValueError(f"data.domains.targets={total} at weights {tuple(round(float(x), 6) for x in w)} needs {counts[i]} targets "
                     f"of domain {i}, which has {pool_K[i]}; the most these weights allow is {cap}")
  rng = np.random.default_rng(settings.seed)
  flat = label_domain_UL.reshape(-1)
  keep = np.zeros(flat.shape, bool)
  for k in range(num_domains):
    if counts[k]:
      keep[rng.choice(np.flatnonzero(flat == k), counts[k], replace=False)] = True
  return Mixture(w, pool_K, counts, keep.reshape(label_domain_UL.shape))
