"""Tables of training runs for the data-mixture laws: one CSV row per run.

Columns: `weight_<domain>` (mixture weights, summing to 1), `model_size` (parameters), `n_tokens`
(training tokens) and `<domain>_loss` (held-out loss per domain). A domain is every name that has
both a weight and a loss column; other columns (e.g. a loss on a domain that was never trained on)
are kept out of the fit and listed in `RunsTable.ignored_columns`. An empty loss cell is a loss that
was not measured: it reads as NaN, and the laws leave it out of fits and metrics. This is the authors' format
(github meiqwq/Explaining-Data-Mixing-Scaling-Laws, `data/dmsl_llm_slimpajama.csv`), and our own
mixture study writes its runs the same way.
"""
from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np


class RunsTableError(ValueError):
  """A malformed runs table; the message names the file, the row and the column."""


@dataclasses.dataclass(frozen=True)
class RunsTable:
  domains: tuple[str, ...]
  weights_MK: np.ndarray          # [M, K] mixture of each run
  losses_MK: np.ndarray           # [M, K] held-out loss per domain
  model_size_M: np.ndarray        # [M] parameters
  n_tokens_M: np.ndarray          # [M] training tokens
  source: str
  ignored_columns: tuple[str, ...] = ()

  def __len__(self) -> int:
    return len(self.model_size_M)

  @property
  def N_M(self) -> np.ndarray:
    """Model size in millions of parameters (the law's unit)."""
    return self.model_size_M / 1e6

  @property
  def D_M(self) -> np.ndarray:
    """Training tokens in billions (the law's unit)."""
    return self.n_tokens_M / 1e9

  def select(self, rows) -> "RunsTable":
    rows = np.asarray(rows)
    return dataclasses.replace(self, weights_MK=self.weights_MK[rows], losses_MK=self.losses_MK[rows],
                               model_size_M=self.model_size_M[rows], n_tokens_M=self.n_tokens_M[rows])


def read_runs_csv(path: str, *, weight_tolerance: float = 1e-3) -> RunsTable:
  """Reads and validates a runs table (see the module docstring)."""
  with open(path, newline="") as f:
    reader = csv.reader(f)
    try:
      header = [h.strip() for h in next(reader)]
    except StopIteration:
      raise RunsTableError(f"{path}: empty file (expected a header row)") from None
    rows = list(reader)
  for required in ("model_size", "n_tokens"):
    if required not in header:
      raise RunsTableError(f"{path}: header has no '{required}' column")
  weight_names = [h[len("weight_"):] for h in header if h.startswith("weight_")]
  loss_names = {h[:-len("_loss")] for h in header if h.endswith("_loss")}
  domains = tuple(d for d in weight_names if d in loss_names)
  if len(domains) < 2:
    raise RunsTableError(f"{path}: need ≥ 2 domains with both weight_<d> and <d>_loss columns; found {domains}")
  missing = [d for d in weight_names if d not in loss_names]
  if missing:
    raise RunsTableError(f"{path}: weight column(s) without a loss column: "
                         + ", ".join(f"weight_{d} (no {d}_loss)" for d in missing))
  col = {h: i for i, h in enumerate(header)}
  used = {"model_size", "n_tokens"} | {f"weight_{d}" for d in domains} | {f"{d}_loss" for d in domains}
  ignored = tuple(h for h in header if h not in used)

  def number(row_no, row, name, missing_ok=False):
    if missing_ok and col[name] < len(row) and not row[col[name]].strip():
      return math.nan
    try:
      v = float(row[col[name]])
    except (IndexError, ValueError):
      raise RunsTableError(f"{path}: row {row_no}, column '{name}': not a number "
                           f"({row[col[name]]!r})" if col[name] < len(row) else
                           f"{path}: row {row_no}: too few fields (no '{name}')") from None
    if not math.isfinite(v):
      raise RunsTableError(f"{path}: row {row_no}, column '{name}': {v} is not finite")
    return v

  k = len(domains)
  w, l, n, t = [], [], [], []
  for i, row in enumerate(rows):
    row_no = i + 2   # 1-based, after the header
    if not row or all(not x.strip() for x in row):
      continue
    wr = [number(row_no, row, f"weight_{d}") for d in domains]
    lr = [number(row_no, row, f"{d}_loss", missing_ok=True) for d in domains]
    if min(wr) < 0:
      raise RunsTableError(f"{path}: row {row_no}, column 'weight_{domains[int(np.argmin(wr))]}': negative weight")
    if abs(sum(wr) - 1.0) > weight_tolerance:
      raise RunsTableError(f"{path}: row {row_no}: weights sum to {sum(wr):.6f}, not 1")
    for d, v in zip(domains, lr):
      if v <= 0:
        raise RunsTableError(f"{path}: row {row_no}, column '{d}_loss': loss must be > 0 ({v})")
    ms, nt = number(row_no, row, "model_size"), number(row_no, row, "n_tokens")
    if ms <= 0 or nt <= 0:
      raise RunsTableError(f"{path}: row {row_no}: model_size and n_tokens must be > 0 ({ms}, {nt})")
    w.append(wr), l.append(lr), n.append(ms), t.append(nt)
  if not w:
    raise RunsTableError(f"{path}: no data rows")
  return RunsTable(domains, np.asarray(w).reshape(-1, k), np.asarray(l).reshape(-1, k), np.asarray(n),
                   np.asarray(t), path, ignored)


def write_runs_csv(path: str, table: RunsTable) -> str:
  """Writes `table` in the same format (our studies' runs, for `experiments.mixture_law`)."""
  header = ([f"weight_{d}" for d in table.domains] + ["model_size", "n_tokens"]
            + [f"{d}_loss" for d in table.domains])
  with open(path, "w", newline="") as f:
    wr = csv.writer(f)
    wr.writerow(header)
    for i in range(len(table)):
      wr.writerow([repr(float(x)) for x in table.weights_MK[i]] + [repr(float(table.model_size_M[i])),
                                                                  repr(float(table.n_tokens_M[i]))]
                  + [repr(float(x)) for x in table.losses_MK[i]])
  return path


def random_split(num_rows: int, train_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The authors' split: a seeded permutation, the first int(M·train_frac) rows for fitting."""
  idx = np.random.default_rng(seed).permutation(num_rows)
  n_train = int(num_rows * train_frac)
  return idx[:n_train], idx[n_train:]
