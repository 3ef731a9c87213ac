"""Ranking metrics for binary feedbacks: NE, AUC, GAUC, log loss, calibration.

Plain numpy functions of predicted probabilities `p`, binary labels `y`, optional non-negative
weights `w` (0 drops an example; default 1) and, for GAUC, user ids. With p̄ = Σ w y / Σ w:

    log loss    = −Σ w (y log p + (1 − y) log(1 − p)) / Σ w          (p clipped to [ε, 1 − ε])
    NE          = log loss / H(p̄),  H(q) = −q log q − (1 − q) log(1 − q)   (papers.md §2.8)
    AUC         = Σ_{i pos, j neg} w_i w_j (1[p_i > p_j] + ½ 1[p_i = p_j]) / (Σ_pos w · Σ_neg w)
    GAUC        = Σ_u W_u AUC_u / Σ_u W_u over users with both classes; W_u = Σ w of u's
                  impressions (their count when unweighted); one-class users are skipped and counted
    calibration = (Σ w p / Σ w) / p̄                                   (1 = calibrated)

A constant prediction of the base rate has NE exactly 1, so the share of the learnable gap a model
closes against a known optimum (the synthetic world's oracle) is (1 − NE_model) / (1 − NE_oracle).
Undefined values (NE or AUC of a one-class set, GAUC with no two-class user) are NaN.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-7   # predictions are clipped to [EPS, 1 - EPS] inside the logarithms


def _prepare(p, y, w=None, name="predictions"):
  """Validated float64 copies of (p, y, w), all [N]."""
  p = np.asarray(p, np.float64)
  y = np.asarray(y)
  if p.ndim != 1 or y.shape != p.shape:
    raise ValueError(f"{name} and labels must be 1-D of the same length, got {p.shape} and {y.shape}")
  if not np.all((y == 0) | (y == 1)):
    raise ValueError("labels must be 0 or 1")
  if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
    raise ValueError(f"{name} must be probabilities in [0, 1]")
  if w is None:
    w = np.ones_like(p)
  else:
    w = np.asarray(w, np.float64)
    if w.shape != p.shape:
      raise ValueError(f"weights must have the shape of the {name} {p.shape}, got {w.shape}")
    if np.any(~np.isfinite(w)) or np.any(w < 0):
      raise ValueError("weights must be finite and >= 0")
  return p, y.astype(np.float64), w


def binary_entropy(q) -> np.ndarray:
  """H(q) in nats; 0 at q in {0, 1}."""
  q = np.asarray(q, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    h = -(q * np.log(q) + (1 - q) * np.log1p(-q))
  return np.where((q <= 0) | (q >= 1), 0.0, h)


def base_rate(y, w=None) -> float:
  """Weighted share of positives (NaN when the total weight is 0)."""
  _, y, w = _prepare(np.zeros(np.shape(y)), y, w)
  total = w.sum()
  return float((w * y).sum() / total) if total > 0 else float("nan")


def log_loss(p, y, w=None) -> float:
  """Weighted mean binary cross-entropy in nats."""
  p, y, w = _prepare(p, y, w)
  total = w.sum()
  if total <= 0:
    return float("nan")
  pc = np.clip(p, EPS, 1 - EPS)
  return float(-(w * (y * np.log(pc) + (1 - y) * np.log1p(-pc))).sum() / total)


def normalized_entropy(p, y, w=None) -> float:
  """Log loss / entropy of the base rate (NaN when the set has one class only)."""
  h = float(binary_entropy(base_rate(y, w)))
  return log_loss(p, y, w) / h if h > 0 else float("nan")


def calibration(p, y, w=None) -> float:
  """Mean prediction / base rate (NaN when there is no positive)."""
  p, y, w = _prepare(p, y, w)
  pos = (w * y).sum()
  return float((w * p).sum() / pos) if pos > 0 else float("nan")


def _grouped_auc(p, y, w, group):
  """Per-group weighted AUC with ties counted one half.

  Sorts by (group, score); equal scores inside a group form one tie block whose positives beat
  every negative of lower blocks and half of the block's own negatives.

  Returns:
    (groups [G] sorted unique ids, auc [G] (NaN for one-class groups), weight [G] = Σ w).
  """
  order = np.lexsort((p, group))
  p, y, w, group = p[order], y[order], w[order], group[order]
  n = len(p)
  new_group = np.ones(n, bool)
  new_group[1:] = group[1:] != group[:-1]
  new_block = new_group.copy()
  new_block[1:] |= p[1:] != p[:-1]
  block_start = np.flatnonzero(new_block)
  wp = np.add.reduceat(w * y, block_start) if n else np.zeros(0)
  wn = np.add.reduceat(w * (1 - y), block_start) if n else np.zeros(0)
  block_group = np.cumsum(new_group)[block_start] - 1              # group index of each block
  # Negative weight of the same group's lower-scoring blocks: exclusive cumsum restarted per group.
  cum_neg = np.cumsum(wn) - wn
  first_block = np.flatnonzero(new_group[block_start])
  cum_neg -= cum_neg[first_block][block_group]
  num_groups = len(first_block)
  wins = np.bincount(block_group, wp * (cum_neg + 0.5 * wn), minlength=num_groups)
  pos = np.bincount(block_group, wp, minlength=num_groups)
  neg = np.bincount(block_group, wn, minlength=num_groups)
  with np.errstate(divide="ignore", invalid="ignore"):
    auc_g = np.where((pos > 0) & (neg > 0), wins / (pos * neg), np.nan)
  return group[np.flatnonzero(new_group)], auc_g, pos + neg


def auc(p, y, w=None) -> float:
  """Weighted ROC AUC, ties count one half (NaN without both classes)."""
  p, y, w = _prepare(p, y, w)
  _, auc_g, _ = _grouped_auc(p, y, w, np.zeros(len(p), np.int64))
  return float(auc_g[0]) if len(auc_g) else float("nan")


def gauc(p, y, user, w=None) -> dict[str, float]:
  """Per-user AUC averaged with weights W_u = the user's impression weight.

  Returns:
    {"gauc": value (NaN if no user has both classes), "users": users scored,
     "skipped_users": users with one class only}; users whose weights are all 0 are ignored.
  """
  p, y, w = _prepare(p, y, w)
  user = np.asarray(user)
  if user.shape != p.shape:
    raise ValueError(f"user ids must have the shape of the predictions {p.shape}, got {user.shape}")
  keep = w > 0
  _, auc_u, weight_u = _grouped_auc(p[keep], y[keep], w[keep], user[keep])
  scored = ~np.isnan(auc_u)
  total = weight_u[scored].sum()
  value = float((weight_u[scored] * auc_u[scored]).sum() / total) if total > 0 else float("nan")
  return {"gauc": value, "users": int(scored.sum()), "skipped_users": int((~scored).sum())}


def gap_closed(ne_model: float, ne_oracle: float) -> float:
  """Share of the learnable gap closed: (NE_base_rate − NE_model) / (NE_base_rate − NE_oracle),
  with NE_base_rate = 1 (a constant base-rate prediction)."""
  gap = 1.0 - ne_oracle
  return float((1.0 - ne_model) / gap) if gap > 0 else float("nan")


def binary_metrics(p, y, w=None, user=None) -> dict[str, float]:
  """All metrics of one task: ne, auc, log_loss, calibration, base_rate, count, and with user ids
  gauc, gauc_users, gauc_skipped_users."""
  p, y, w = _prepare(p, y, w)
  out = {"ne": normalized_entropy(p, y, w), "auc": auc(p, y, w), "log_loss": log_loss(p, y, w),
         "calibration": calibration(p, y, w), "base_rate": base_rate(y, w),
         "count": int((w > 0).sum())}
  if user is not None:
    g = gauc(p, y, user, w)
    out.update(gauc=g["gauc"], gauc_users=g["users"], gauc_skipped_users=g["skipped_users"])
  return out


AVERAGED = ("ne", "auc", "gauc", "log_loss", "calibration")


def multitask_metrics(p_NT, y_NT, task_names, *, mask_N=None, user_N=None, oracle_NT=None
                      ) -> dict[str, dict[str, float]]:
  """Per-task metrics and their unweighted mean over tasks.

  Args:
    p_NT: predicted probabilities [N, T]; y_NT: labels [N, T] in {0, 1}.
    task_names: T names (the result keys).
    mask_N: optional weights / validity [N] (0 = padding candidate), shared by the tasks.
    user_N: optional user ids [N] for GAUC.
    oracle_NT: optional true probabilities [N, T]: adds oracle_ne, oracle_auc and gap_closed.
  Returns:
    {task: {metric: value}, ..., "mean": {metric: mean over tasks (NaNs ignored)}}.
  """
  p_NT, y_NT = np.asarray(p_NT), np.asarray(y_NT)
  if p_NT.ndim != 2 or y_NT.shape != p_NT.shape or len(task_names) != p_NT.shape[1]:
    raise ValueError(f"need predictions and labels [N, T] with T = {len(task_names)} task names, "
                     f"got {p_NT.shape} and {y_NT.shape}")
  if oracle_NT is not None and np.shape(oracle_NT) != p_NT.shape:
    raise ValueError(f"oracle probabilities must have shape {p_NT.shape}, got {np.shape(oracle_NT)}")
  out = {}
  for t, name in enumerate(task_names):
    m = binary_metrics(p_NT[:, t], y_NT[:, t], mask_N, user_N)
    if oracle_NT is not None:
      m["oracle_ne"] = normalized_entropy(oracle_NT[:, t], y_NT[:, t], mask_N)
      m["oracle_auc"] = auc(oracle_NT[:, t], y_NT[:, t], mask_N)
      m["gap_closed"] = gap_closed(m["ne"], m["oracle_ne"])
    out[name] = m
  keys = [k for k in (*AVERAGED, "oracle_ne", "oracle_auc", "gap_closed") if k in out[task_names[0]]]
  mean = {}
  for k in keys:
    vals = np.array([out[n][k] for n in task_names], np.float64)
    mean[k] = float(np.nanmean(vals)) if np.any(~np.isnan(vals)) else float("nan")
  out["mean"] = mean
  return out
