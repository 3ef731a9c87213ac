"""How much of a synthetic world's feedback signal lies beyond the newest W events (default 256).

Computed from the generator's own latent state, not by training a model. Two Bayes predictors
see the same world and differ only in how much history they may read:
  * everything except the planted dormant-topic events is given to both as its true probability
    (the base world's drifting interests are the same for both: this isolates the planted
    long-range signal);
  * a planted event's feedback depends on the user's old affinity a_u for its dormant topic
    (synthetic.py, `_plant_dormant_topics`). A predictor infers a_u from the 8 binary feedbacks of
    the user's earlier planted events of that topic it may read: the full history, or only those among the newest W events
    before the target. Its prediction is the posterior mean of P(feedback | a) on a grid of a
    (prior: a ~ N(0, sigma^2) clipped to [-3, 2.5], the generator's own prior).
Play times are not used, so the full-history predictor is a lower bound on what the history
reveals; the oracle (a_u known) is the floor.

Targets: the standard-log events (random exposures left out, as the ranker's logs) at position
>= W in their user's standard history, where a W-event window actually cuts. Scores: expected
normalized entropy per feedback, NE = E[CE(p_true, p_hat)] / H(mean p_true), using the true
probability instead of the sampled label (same expectation, less noise), averaged over the 8
feedbacks. On a world without planted structure both predictors equal the oracle exactly.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from recjax.data import kuairand
from recjax.data import ranking as rk
from recjax.data import synthetic as sy
from recjax.data.types import UserSequences

GRID = np.linspace(-3.0, 2.5, 111)   # old-affinity grid: the generator's clip range, step 0.05


def _log_prior(sigma: float) -> np.ndarray:
  """log mass of N(0, sigma^2) clipped to [-3, 2.5] on GRID's cells (the tails on the end points)."""
  edges = np.concatenate([[-np.inf], (GRID[1:] + GRID[:-1]) / 2, [np.inf]])
  mass = np.diff(special.ndtr(edges / sigma))
  return np.log(np.maximum(mass, 1e-300))


def _expected_ne(p_true_EF: np.ndarray, p_hat_EF: np.ndarray) -> dict:
  eps = 1e-12
  q = np.clip(p_hat_EF, eps, 1 - eps)
  ce = -(p_true_EF * np.log(q) + (1 - p_true_EF) * np.log(1 - q)).mean(0)
  base = np.clip(p_true_EF.mean(0), eps, 1 - eps)
  h = -(base * np.log(base) + (1 - base) * np.log(1 - base))
  per = {name: float(x) for name, x in zip(kuairand.ACTION_BITS, ce / h)}
  return {"mean": float(np.mean(list(per.values()))), **per}


def predictions(world: sy.World, window: int = 256) -> dict[str, np.ndarray]:
  """The predictors of every standard-log event (module docstring).

  Returns:
    {"p_true", "p_full", "p_newest", "p_prior": float64 [E, F] (F = the 8 feedbacks in
    kuairand.ACTION_BITS order), "position": int64 [E] in the user's standard history,
    "phase": int8 [E] (0 not planted, 1 early, 2 return)}, E = the standard-log events.
  """
  if window < 1:
    raise ValueError(f"window must be >= 1, got {window}")
  std = world.log["is_rand"] == 0
  user = world.log["user_id"][std]
  e = len(user)
  first = np.concatenate([[True], user[1:] != user[:-1]]) if e else np.zeros(0, bool)
  user_start = np.flatnonzero(first)[np.cumsum(first) - 1]            # [E] flat start of the user
  names = kuairand.ACTION_BITS
  p_true = np.stack([world.oracle[n][std] for n in names], 1)
  labels = np.stack([world.log[n][std] for n in names], 1).astype(np.float64)
  p_full, p_newest, p_prior = p_true.copy(), p_true.copy(), p_true.copy()
  phase = (np.zeros(e, np.int8) if world.long_range is None
           else world.long_range["planted_phase"][std])
  planted = np.flatnonzero(phase > 0)                                  # flat indices, user-major
  if len(planted):
    # One old affinity per (user, dormant topic): group the planted events by it, in time order.
    group = user[planted] * world.cfg.num_topics + world.event_topic[std][planted]
    order = np.lexsort((planted, group))
    planted, group = planted[order], group[order]
    key = group * e + planted                                          # ascending: group, then time
    probs = feedback_probs_grid(world.item_duration_ms[world.log["video_id"][std][planted]])  # [P, G, F]
    y = labels[planted][:, None, :]
    loglik = (y * np.log(probs) + (1 - y) * np.log1p(-probs)).sum(-1)   # [P, G]
    before = np.cumsum(loglik, 0) - loglik                               # exclusive, over all groups
    group_first = np.searchsorted(key, group * e)
    win_first = np.searchsorted(key, group * e + np.maximum(planted - window, user_start[planted]))
    log_prior = _log_prior(world.cfg.dormant_affinity_sigma)
    for out, ll in ((p_full, before - before[group_first]), (p_newest, before - before[win_first]),
                    (p_prior, np.zeros_like(before))):
      post = special.softmax(log_prior[None] + ll, axis=1)              # [P, G]
      out[planted] = np.einsum("pg,pgf->pf", post, probs)
  return {"p_true": p_true, "p_full": p_full, "p_newest": p_newest, "p_prior": p_prior,
          "position": np.arange(e) - user_start, "phase": phase}


def long_range_signal(world: sy.World, window: int = 256) -> dict:
  """Oracle NE with the newest `window` events vs the full history (module docstring) -> dict."""
  p = predictions(world, window)
  target = p["position"] >= window
  tp = target & (p["phase"] > 0)
  res = {"window": window, "target_events": int(target.sum()), "planted_targets": int(tp.sum()),
         "planted_events": int((p["phase"] > 0).sum()),
         "definition": "expected NE (true probability as label) of Bayes predictors of the planted "
                       "old affinity from the newest `window` events vs the full history; other "
                       "events given their true probability (recjax/data/synthetic_signal.py)"}
  for key, mask in (("all_targets", target), ("planted_targets_only", tp)):
    if not mask.any():
      res[key] = None
      continue
    truth = p["p_true"][mask]
    res[key] = {"ne_oracle": _expected_ne(truth, truth),
                "ne_full_history": _expected_ne(truth, p["p_full"][mask]),
                f"ne_newest_{window}": _expected_ne(truth, p["p_newest"][mask]),
                "ne_no_history": _expected_ne(truth, p["p_prior"][mask])}
  return res


def feedback_probs_grid(duration_ms: np.ndarray) -> np.ndarray:
  """P(feedback = 1 | log affinity = GRID[g]) per event -> float64 [E, G, F], clipped off 0 and 1."""
  d = np.repeat(np.asarray(duration_ms), len(GRID))
  a = np.tile(GRID, len(duration_ms))
  p = sy.feedback_probabilities(a, d)
  out = np.stack([p[n] for n in kuairand.ACTION_BITS], -1).reshape(len(duration_ms), len(GRID), -1)
  return np.clip(out, 1e-12, 1 - 1e-12)


def split_signal(world: sy.World, test_k: int, valid_k: int, train_k: int = 0, min_history: int = 0,
                 window: int = 256) -> dict:
  """Where the planted return-phase events fall under a `last_k` ranking split, and the Bayes NEs there.

  The candidates of each split are the ranking task's own (`ranking.candidate_mask` on the standard
  logs): each user's last `test_k` events are test, the `valid_k` before them validation, the rest
  training (only the newest `train_k` of them when > 0), each at position >= `min_history`. A model
  can learn the long-range signal only from the planted return-phase events among the training
  candidates; this counts them per split and scores `predictions`' four predictors (oracle, full
  history, newest `window`, no history) on them.

  A model is not told which events are planted: a candidate on one of the user's dormant topics
  may also be a uniformly random (tab-noise) item or a base-world draw, whose feedback follows the
  base world's low affinity. `dormant_topic` counts the split's candidates on a dormant topic, of
  which `planted_return` are the ones that follow the old affinity.

  Returns:
    {split: {"candidates": int, "dormant_topic": int, "planted_return": int, "ne": {"oracle",
    "full_history", "newest_<window>", "no_history"} or None when the split holds no planted return
    event}}.
  """
  p = predictions(world, window)
  std = world.log["is_rand"] == 0
  lengths = np.bincount(world.log["user_id"][std], minlength=world.cfg.num_users)
  items = world.log["video_id"][std].astype(np.int32) + 1          # only the layout matters here
  seqs = UserSequences(user_ids=np.arange(len(lengths)), offsets=np.concatenate([[0], np.cumsum(lengths)]),
                       items=items, timestamps=None, num_items=int(items.max(initial=0)) + 1,
                       source="synthetic world (standard logs)")
  cfg = rk.RankingSplit(mode="last_k", test_k=test_k, valid_k=valid_k, train_k=train_k, min_history=min_history)
  user = world.log["user_id"][std]
  topic = world.item_topic[world.log["video_id"][std]]
  on_dormant = ((world.long_range["dormant_topic"][user] == topic[:, None]).any(1) if world.long_range is not None
                else np.zeros(len(user), bool))
  out = {}
  for split in ("train", "valid", "test"):
    mask, _ = rk.candidate_mask(seqs, cfg, split)
    ret = mask & (p["phase"] == sy.PLANTED_RETURN)
    entry = {"candidates": int(mask.sum()), "dormant_topic": int((mask & on_dormant).sum()),
             "planted_return": int(ret.sum()), "ne": None}
    if ret.any():
      truth = p["p_true"][ret]
      entry["ne"] = {name: _expected_ne(truth, p[key][ret])["mean"] for name, key in
                     (("oracle", "p_true"), ("full_history", "p_full"), (f"newest_{window}", "p_newest"),
                      ("no_history", "p_prior"))}
    out[split] = entry
  return out
