"""Stochastic Length (SL): HSTU's subsampling of long training histories (arXiv 2402.17152 §3.3;
papers.md §3.4).

With N the longest history the model takes and α ∈ (1, 2], a training history of n events is

    kept whole                                   when n <= N^(α/2)
    subsampled to k = ⌊N^(α/2)⌋ events           with probability 1 − N^α / n², when n > N^(α/2)
    kept whole                                   otherwise,

so the expected attention cost of a history, E[len²] <= N^α + k² <= 2 N^α, is O(N^α) instead of
O(N²), while
every history is still seen whole now and then. Evaluation always reads whole histories.

Choices where the paper is silent (`select`): "random" keeps a uniform random subset of k events in
their time order (the subsampling the paper describes: it exploits the sparsity of user histories,
so any k events carry most of the signal); "newest" keeps the newest k events (a random-length
truncation). The draws are deterministic in (seed, epoch, row), so a resumed run sees the same
subsampled histories as an uninterrupted one.

The load-balanced variant (ULTRA-HSTU's LBSL, papers.md §2.1) is not implemented: it removes
stragglers between data-parallel ranks that each hold a jagged batch of their own. Here every
rank's part of a step is cut to the same (padded) width, so rank loads are equal by construction;
what SL changes is the step's width, which the ranking task keeps small by batching requests of
similar *kept* length together (`tasks/ranking.py`).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

SELECTS = ("random", "newest")


@dataclasses.dataclass(frozen=True)
class StochasticLength:
  """SL over histories of at most `max_len` events (module docstring)."""
  alpha: float
  max_len: int
  select: str = "random"

  def __post_init__(self):
    if not 1.0 < self.alpha <= 2.0:
      raise ValueError(f"stochastic length: alpha must be in (1, 2], got {self.alpha}")
    if self.max_len < 1:
      raise ValueError(f"stochastic length: max_len must be >= 1, got {self.max_len}")
    if self.select not in SELECTS:
      raise ValueError(f"stochastic length: select must be one of {SELECTS}, got {self.select!r}")

  @property
  def threshold(self) -> int:
    """k = ⌊N^(α/2)⌋: histories up to this long are never subsampled, longer ones are cut to it."""
    # The small epsilon keeps an exact power (e.g. 4096^0.75 = 512) from rounding down to 511.
    return max(1, int(math.floor(self.max_len ** (self.alpha / 2) + 1e-9)))

  def subsample_probability(self, lengths_N: np.ndarray) -> np.ndarray:
    """Per history, the probability that it is subsampled -> float64 [N]."""
    n = np.asarray(lengths_N, np.float64)
    p = 1.0 - float(self.max_len) ** self.alpha / np.maximum(n, 1.0) ** 2
    return np.where(n > self.threshold, np.clip(p, 0.0, 1.0), 0.0)

  def expected_lengths(self, lengths_N: np.ndarray) -> np.ndarray:
    """E[kept length] per history -> float64 [N] (the expected token load)."""
    n = np.asarray(lengths_N, np.float64)
    p = self.subsample_probability(n)
    return p * np.minimum(n, self.threshold) + (1 - p) * n

  def kept_lengths(self, lengths_N: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw: each history's kept length (its own length or the threshold) -> int32 [N]."""
    n = np.asarray(lengths_N)
    cut = rng.random(len(n)) < self.subsample_probability(n)
    return np.where(cut, np.minimum(n, self.threshold), n).astype(np.int32)

  def kept_positions(self, length: int, kept: int, rng: np.random.Generator) -> np.ndarray:
    """Which of a history's `length` events (0 = oldest) a draw keeps, ascending -> int64 [kept]."""
    if not 0 <= kept <= length:
      raise ValueError(f"stochastic length: cannot keep {kept} of {length} events")
    if kept == length:
      return np.arange(length, dtype=np.int64)
    if self.select == "newest":
      return np.arange(length - kept, length, dtype=np.int64)
    return np.sort(rng.choice(length, size=kept, replace=False)).astype(np.int64)


def from_config(ranking_cfg) -> StochasticLength | None:
  """config.ranking -> StochasticLength over its history_len, or None when `sl_alpha` is 0 (off)."""
  alpha = float(ranking_cfg.get("sl_alpha", 0.0))
  if alpha == 0.0:
    return None
  if ranking_cfg.get("history_layout", "padded") != "ragged":
    raise ValueError("ranking.sl_alpha > 0 needs ranking.history_layout='ragged': with padded [N, H] "
                     "histories every batch is H wide and subsampling saves nothing")
  try:
    return StochasticLength(alpha=alpha, max_len=int(ranking_cfg.history_len),
                            select=str(ranking_cfg.get("sl_select", "random")))
  except ValueError as e:   # name the config keys the user set
    raise ValueError(f"config.ranking (sl_alpha={alpha}, sl_select={ranking_cfg.get('sl_select')!r}, "
                     f"history_len={ranking_cfg.history_len}): {e}") from None
