"""A synthetic recommendation world with known structure, written in the KuaiRand file format.

The world (all randomness from np.random.default_rng(cfg.seed), so a seed fixes every byte):
  * Items: `num_items` videos split evenly over `num_topics` topics (clusters). Inside a topic the
    items form a cyclic chain (a "series": item -> successor) and have Zipf popularity. Content
    features: topic (written as the video `tag`), duration (topic-specific median), author (each
    topic has its own authors).
  * Users: an interest mixture over topics at the start of their history (Dirichlet) and another
    at the end; interests drift linearly between the two along the sequence.
  * Sequences: lengths are lognormal (heavy-tailed), clipped to [min_seq_len, max_seq_len <= 16k].
    Events come in sessions; each session happens in one tab (domain) drawn from the user's tab
    preference.
  * Next-item choice: in tab k, an event is "noise" with probability tab_noise[k] (the item is drawn
    uniformly from the catalogue); otherwise it is interest-driven: the topic persists with
    probability `topic_stickiness`, else a new topic is drawn from the user's current interest
    mixture; within the topic the next item is the chain successor of the previous one with
    probability `seq_follow` (a purely sequential signal), else a popularity-weighted draw.
    A small share of the second period's events are random exposures (KuaiRand's is_rand) that
    go to the random log.
  * Feedback: play time comes from duration and user-item affinity (affinity = K * the user's
    current interest in the item's topic); is_click and long_view follow KuaiRand's definitions
    (valid play: play >= duration if duration <= 7 s, else play > 7 s; 18 s for long_view); the
    six other signals are Bernoulli with their own base rate and affinity slope (FEEDBACK_MODEL).

Files (`write_world` / `generate_world`): log_standard_4_08_to_4_21_<v>.csv,
log_standard_4_22_to_5_08_<v>.csv, log_random_4_22_to_5_08_<v>.csv, user_features_<v>.csv and
video_features_basic_<v>.csv with the official headers, plus world.json (seed, every parameter,
per-tab noise, summary statistics and the small ground truth), world_truth.npz (per-user
interest mixtures and per-event latent labels) and world_oracle.npz (per event, the true
probability of each of the 8 binary feedbacks: the best any ranker can predict).
`recjax.data.kuairand.load_kuairand(out_dir, variant=<v>, logs=...)` reads them like the real
release; `load_oracle(out_dir, seqs, logs=...)` returns the oracle aligned to those sequences.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import json
import os

import numpy as np
from scipy import special

from recjax.data import kuairand
from recjax.data.errors import DataError
from recjax.data.text_sequences import NumericTable
from recjax.data.types import Interactions

MAX_SEQ_LEN = 16384
GENERATOR_VERSION = 2   # bump when the same config would generate different files (2: + world_oracle.npz)
# Worlds with planted long-range structure (`WorldConfig.long_range`) are version 3; every other
# world stays version 2 with its old fingerprint and bytes (the new settings are left out of the
# fingerprint while they hold their defaults, and their draws come from their own random stream).
LONG_RANGE_VERSION = 3
SIGNAL_FILE = "world_signal.json"
CHINA_TZ = dt.timezone(dt.timedelta(hours=8))   # KuaiRand dates/hours are Beijing time
PERIOD_STARTS = (dt.datetime(2022, 4, 8, tzinfo=CHINA_TZ), dt.datetime(2022, 4, 22, tzinfo=CHINA_TZ))
PERIOD_END = dt.datetime(2022, 5, 9, tzinfo=CHINA_TZ)
LOG_FILES = ("log_standard_4_08_to_4_21", "log_standard_4_22_to_5_08", "log_random_4_22_to_5_08")
# Bernoulli feedbacks: (rate at average affinity, slope on log affinity). Hate falls with affinity.
FEEDBACK_MODEL = {"is_like": (0.03, 1.0), "is_follow": (0.004, 0.8), "is_comment": (0.008, 0.6),
                  "is_forward": (0.005, 0.7), "is_hate": (0.003, -0.5), "is_profile_enter": (0.02, 0.5)}
# Watch model: log(play / duration) ~ Normal(log(WATCH_MEDIAN) + WATCH_SLOPE * log affinity, WATCH_SIGMA).
WATCH_MEDIAN, WATCH_SLOPE, WATCH_SIGMA = 0.35, 0.5, 0.7
CLICK_SECONDS, LONG_VIEW_SECONDS = 7, 18
ORACLE_FILE = "world_oracle.npz"
# world_truth.npz's planted_phase of long-range worlds (`_plant_dormant_topics`): 0 = not planted.
PLANTED_EARLY, PLANTED_RETURN = 1, 2


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Generator parameters. Defaults: the project's main synthetic job (~120k events)."""
  num_users: int = 2000
  num_items: int = 1000
  num_topics: int = 20
  user_topic_alpha: float = 0.2     # Dirichlet concentration of interests (small = few topics per user)
  interest_drift: float = 0.5       # 0 = static interests; 1 = end-of-history interests fully new
  topic_stickiness: float = 0.8     # P(an interest-driven event keeps the previous topic)
  seq_follow: float = 0.5           # P(next item = chain successor of the previous one in the topic)
  item_zipf: float = 1.0            # popularity exponent inside a topic
  mean_seq_len: float = 60.0        # mean of the lognormal before clipping
  seq_len_sigma: float = 1.0        # lognormal shape: larger = heavier tail
  min_seq_len: int = 5
  max_seq_len: int = 1024           # up to MAX_SEQ_LEN (16k)
  num_tabs: int = 4
  tab_noise: tuple[float, ...] | None = None   # per-tab P(uniformly random item); None = linspace(0.05, 0.8)
  session_mean_len: float = 8.0     # mean events per session (one tab per session)
  # Dirichlet concentration of each user's tab preference, one per tab; None = all 1 (the tabs'
  # overall shares then equal in expectation). Larger alpha_k = tab k more common in the data.
  tab_alpha: tuple[float, ...] | None = None
  random_exposure_rate: float = 0.01  # share of second-period events that are random exposures
  authors_per_topic: int = 10
  seed: int = 0
  variant: str = "synth"            # file-name suffix, as in log_standard_..._<variant>.csv
  # Planted long-range structure (off at the defaults; see `_plant_dormant_topics`): per user
  # `dormant_topics` dormant topics, watched in the first `dormant_early_until` share of the history,
  # absent in the middle, back from `dormant_return_from` on; each one's feedback follows the user's
  # own old affinity for it. The rates are per event, shared by the user's dormant topics.
  dormant_early_rate: float = 0.0   # P(an event before dormant_early_until is the dormant topic)
  dormant_return_rate: float = 0.0  # P(an event from dormant_return_from on is the dormant topic)
  dormant_early_until: float = 0.3
  dormant_return_from: float = 0.9
  dormant_affinity_sigma: float = 1.5  # old log affinity a_u ~ N(0, sigma^2), clipped to [-3, 2.5]
  dormant_topics: int = 1           # dormant topics per user (the least-interest ones), each its own a_u

  def __post_init__(self):
    if self.tab_noise is None:
      object.__setattr__(self, "tab_noise", tuple(float(x) for x in np.linspace(0.05, 0.8, self.num_tabs)))
    object.__setattr__(self, "tab_noise", tuple(float(x) for x in self.tab_noise))
    if self.tab_alpha is not None:
      object.__setattr__(self, "tab_alpha", tuple(float(x) for x in self.tab_alpha))
    _validate(self)

  @property
  def long_range(self) -> bool:
    """True when the world plants dormant topics (any dormant rate > 0)."""
    return self.dormant_early_rate > 0 or self.dormant_return_rate > 0

  @property
  def generator_version(self) -> int:
    return LONG_RANGE_VERSION if self.long_range else GENERATOR_VERSION

  def as_dict(self) -> dict:
    """Every parameter, less the long-range ones while all hold their defaults (so worlds made
    before they existed keep their fingerprint and world.json)."""
    out = dataclasses.asdict(self)
    if out["tab_alpha"] is None:   # added after generator version 2: unset keeps old fingerprints
      del out["tab_alpha"]
    if all(out[f] == _LONG_RANGE_DEFAULTS[f] for f in _LONG_RANGE_DEFAULTS):
      for f in _LONG_RANGE_DEFAULTS:
        del out[f]
    elif out["dormant_topics"] == 1:   # added after the first long-range worlds: 1 keeps their fingerprints
      del out["dormant_topics"]
    return out

  def fingerprint(self) -> str:
    """12 hex digits identifying (generator version, every parameter): a cache key for the files."""
    blob = json.dumps({"generator_version": self.generator_version, **self.as_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


_LONG_RANGE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(WorldConfig)
                        if f.name.startswith("dormant_")}


def _validate(cfg: WorldConfig) -> None:
  checks = [
      (cfg.num_users >= 1, "num_users must be >= 1"),
      (cfg.num_topics >= 1, "num_topics must be >= 1"),
      (cfg.num_items >= cfg.num_topics, "num_items must be >= num_topics (every topic needs an item)"),
      (1 <= cfg.min_seq_len <= cfg.max_seq_len <= MAX_SEQ_LEN,
       f"need 1 <= min_seq_len <= max_seq_len <= {MAX_SEQ_LEN}"),
      (cfg.mean_seq_len > 0 and cfg.seq_len_sigma >= 0, "mean_seq_len > 0 and seq_len_sigma >= 0"),
      (1 <= cfg.num_tabs <= kuairand.MAX_TAB + 1, f"num_tabs must lie in 1..{kuairand.MAX_TAB + 1}"),
      (len(cfg.tab_noise) == cfg.num_tabs, "tab_noise needs one value per tab"),
      (all(0 <= x <= 1 for x in cfg.tab_noise), "tab_noise values must lie in [0, 1]"),
      (cfg.tab_alpha is None or len(cfg.tab_alpha) == cfg.num_tabs, "tab_alpha needs one value per tab"),
      (cfg.tab_alpha is None or all(x > 0 for x in cfg.tab_alpha), "tab_alpha values must be > 0"),
      (all(0 <= getattr(cfg, f) <= 1 for f in ("interest_drift", "topic_stickiness", "seq_follow",
                                               "random_exposure_rate")),
       "interest_drift, topic_stickiness, seq_follow and random_exposure_rate must lie in [0, 1]"),
      (cfg.user_topic_alpha > 0 and cfg.session_mean_len >= 1 and cfg.authors_per_topic >= 1,
       "user_topic_alpha > 0, session_mean_len >= 1, authors_per_topic >= 1"),
      (cfg.variant.isascii() and cfg.variant.isalnum() and cfg.variant.islower(),
       "variant must be lowercase letters/digits"),
      (0 <= cfg.dormant_early_rate <= 1 and 0 <= cfg.dormant_return_rate <= 1,
       "dormant_early_rate and dormant_return_rate must lie in [0, 1]"),
      (0 < cfg.dormant_early_until < cfg.dormant_return_from < 1,
       "need 0 < dormant_early_until < dormant_return_from < 1 (a dormant gap between them)"),
      (cfg.dormant_affinity_sigma > 0, "dormant_affinity_sigma must be > 0"),
      (1 <= cfg.dormant_topics < cfg.num_topics,
       "dormant_topics must lie in 1..num_topics - 1 (a user needs a topic that is not dormant)"),
  ]
  for ok, msg in checks:
    if not ok:
      raise ValueError(f"WorldConfig: {msg}")


@dataclasses.dataclass(frozen=True)
class World:
  """Everything generated. Events are user-major and time-ordered; E events, U users, N items."""
  cfg: WorldConfig
  item_topic: np.ndarray        # int64 [N] topic of video_id i
  item_next: np.ndarray         # int64 [N] chain successor (video_id) inside the topic
  item_duration_ms: np.ndarray  # int64 [N]
  item_author: np.ndarray       # int64 [N]
  theta_start: np.ndarray       # float64 [U, K] interests at the start of each history
  theta_end: np.ndarray         # float64 [U, K] interests at the end
  log: dict[str, np.ndarray]    # kuairand.LOG_COLUMNS -> int64 [E]
  is_noise: np.ndarray          # bool [E] item drawn uniformly because of the tab's noise
  event_topic: np.ndarray       # int64 [E] latent topic of interest-driven events (-1 otherwise)
  followed: np.ndarray          # bool [E] item = chain successor of the previous interest-driven item
  oracle: dict[str, np.ndarray]  # kuairand.ACTION_BITS name -> float64 [E] true P(feedback = 1)
  # Long-range worlds only: dormant_topic int64 [U, T] and old_affinity float64 [U, T] (a_u per
  # dormant topic, T = cfg.dormant_topics), planted_phase int8 [E] (0 = not planted, 1 = early,
  # 2 = return); a planted event's dormant topic is its event_topic.
  long_range: dict[str, np.ndarray] | None = None


# ---------------------------------------------------------------------------------------------
# Sampling helpers
# ---------------------------------------------------------------------------------------------

def _sample_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
  """One categorical draw per entry of `rows` from probs[row] -> int64 [len(rows)].

  Every row's CDF is shifted by its row index and the rows are laid end to end, so a single
  searchsorted draws all samples without materialising [len(rows), K].
  """
  n_rows, k = probs.shape
  cdf = np.cumsum(probs / probs.sum(1, keepdims=True), axis=1)
  flat = (cdf + np.arange(n_rows)[:, None]).ravel()
  idx = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
  return np.clip(idx - rows * k, 0, k - 1)


def _segment_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
  """Exclusive cumulative sum restarting at every segment start -> same shape as `values`.

  Args:
    values: [E]; starts: bool [E], True where a segment begins (starts[0] must be True).
  """
  total = np.cumsum(values) - values
  seg = np.cumsum(starts) - 1
  return total - total[np.flatnonzero(starts)][seg]


def _last_true_index(flags: np.ndarray) -> np.ndarray:
  """For each position, the index of the latest True at or before it (flags[0] must be True)."""
  return np.maximum.accumulate(np.where(flags, np.arange(len(flags)), 0))


# ---------------------------------------------------------------------------------------------
# Items and users
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Catalogue:
  topic: np.ndarray         # int64 [N]
  chain: np.ndarray         # int64 [N] video ids grouped by topic, in chain order
  chain_start: np.ndarray   # int64 [K+1] topic k owns chain[chain_start[k]:chain_start[k+1]]
  chain_pos: np.ndarray     # int64 [N] position of video i inside its topic's chain
  popularity: np.ndarray    # float64 [N] in chain layout: Zipf weight of chain[j]
  duration_ms: np.ndarray   # int64 [N]
  author: np.ndarray        # int64 [N]


def _make_catalogue(cfg: WorldConfig, rng: np.random.Generator) -> _Catalogue:
  n, k = cfg.num_items, cfg.num_topics
  topic = rng.permutation(np.arange(n) % k)          # balanced topics, random ids
  chain = np.lexsort((rng.random(n), topic))         # grouped by topic, random order inside
  chain_start = np.searchsorted(topic[chain], np.arange(k + 1))
  chain_pos = np.empty(n, np.int64)
  chain_pos[chain] = np.arange(n) - chain_start[topic[chain]]
  # Popularity rank inside the topic, independent of the chain order.
  by_rank = np.lexsort((rng.random(n), topic))
  rank = np.empty(n, np.int64)
  rank[by_rank] = np.arange(n) - chain_start[topic[by_rank]]
  popularity = (rank[chain] + 1.0) ** -cfg.item_zipf
  topic_median_s = np.exp(rng.uniform(np.log(8), np.log(60), k))
  duration_ms = np.clip(topic_median_s[topic] * np.exp(rng.normal(0, 0.5, n)), 3, 600) * 1000
  authors = 1_000_000 + rng.choice(9_000_000, size=(k, cfg.authors_per_topic), replace=False)
  author = authors[topic, rng.integers(0, cfg.authors_per_topic, n)]
  return _Catalogue(topic, chain, chain_start, chain_pos, popularity,
                    duration_ms.astype(np.int64), author.astype(np.int64))


def _chain_next(cat: _Catalogue) -> np.ndarray:
  """Successor (video id) of every video in its topic's cyclic chain -> int64 [N]."""
  size = np.diff(cat.chain_start)[cat.topic]
  return cat.chain[cat.chain_start[cat.topic] + (cat.chain_pos + 1) % size]


def _sequence_lengths(cfg: WorldConfig, rng: np.random.Generator) -> np.ndarray:
  """Heavy-tailed (lognormal) lengths with the requested pre-clipping mean -> int64 [U]."""
  mu = np.log(cfg.mean_seq_len) - cfg.seq_len_sigma ** 2 / 2
  raw = rng.lognormal(mu, cfg.seq_len_sigma, cfg.num_users)
  return np.clip(np.round(raw), cfg.min_seq_len, cfg.max_seq_len).astype(np.int64)


def _interests(cfg: WorldConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(theta_start, theta_end), each [U, K]; the end mixes the start with fresh interests."""
  alpha = np.full(cfg.num_topics, cfg.user_topic_alpha)
  start = rng.dirichlet(alpha, cfg.num_users)
  fresh = rng.dirichlet(alpha, cfg.num_users)
  return start, (1 - cfg.interest_drift) * start + cfg.interest_drift * fresh


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Events:
  user: np.ndarray          # int64 [E]
  frac: np.ndarray          # float64 [E] position in the user's history, 0..1
  session_start: np.ndarray  # bool [E]
  period: np.ndarray        # int64 [E] 0 = 4/08-4/21, 1 = 4/22-5/08
  tab: np.ndarray           # int64 [E]
  is_rand: np.ndarray       # bool [E]
  is_noise: np.ndarray      # bool [E]


def _event_skeleton(cfg: WorldConfig, rng: np.random.Generator, lengths: np.ndarray) -> _Events:
  """Users, sessions, periods, tabs and which events are random exposures or tab noise."""
  user = np.repeat(np.arange(cfg.num_users), lengths)
  first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
  pos = np.arange(len(user)) - first[user]
  frac = pos / np.maximum(lengths[user] - 1, 1)
  session_start = (pos == 0) | (rng.random(len(user)) < 1 / cfg.session_mean_len)
  session_of = np.cumsum(session_start) - 1
  session_user = user[session_start]
  tab_pref = rng.dirichlet(np.ones(cfg.num_tabs) if cfg.tab_alpha is None else np.asarray(cfg.tab_alpha),
                          cfg.num_users)
  tab = _sample_rows(rng, tab_pref, session_user)[session_of]
  # A session belongs to the period its first event falls in (by share of the user's history).
  period_split = (PERIOD_STARTS[1] - PERIOD_STARTS[0]) / (PERIOD_END - PERIOD_STARTS[0])
  period = (frac[session_start] >= period_split).astype(np.int64)[session_of]
  is_rand = (period == 1) & (rng.random(len(user)) < cfg.random_exposure_rate)
  is_noise = ~is_rand & (rng.random(len(user)) < np.asarray(cfg.tab_noise)[tab])
  return _Events(user, frac, session_start, period, tab, is_rand, is_noise)


def _interest_items(cfg: WorldConfig, rng: np.random.Generator, cat: _Catalogue, user: np.ndarray,
                    frac: np.ndarray, theta: tuple[np.ndarray, np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Items of the interest-driven events (their own subsequence, time order).

  Returns:
    (video id, topic, followed) each [M] for the M interest-driven events.
  """
  m = len(user)
  first = np.concatenate([[True], user[1:] != user[:-1]])
  # Topic: sticky Markov chain; a switch draws from the start or end mixture (P(end) = frac).
  use_end = rng.random(m) < frac
  rows = np.where(use_end, user + cfg.num_users, user)
  candidate = _sample_rows(rng, np.concatenate(theta), rows)
  switch = first | (rng.random(m) >= cfg.topic_stickiness)
  topic = candidate[_last_true_index(switch)]
  # Item: a popularity draw inside the topic, then chain successors while "follow" holds.
  fresh = switch | (rng.random(m) >= cfg.seq_follow)
  anchor = _last_true_index(fresh)
  drawn = _draw_in_topic(rng, cat, topic[fresh])
  anchor_item = np.empty(m, np.int64)
  anchor_item[fresh] = drawn
  anchor_item = anchor_item[anchor]
  size = np.diff(cat.chain_start)[topic]
  steps = np.arange(m) - anchor
  item = cat.chain[cat.chain_start[topic] + (cat.chain_pos[anchor_item] + steps) % size]
  return item, topic, ~fresh


def _draw_in_topic(rng: np.random.Generator, cat: _Catalogue, topic: np.ndarray) -> np.ndarray:
  """Popularity-weighted video ids, one per entry of `topic` -> int64 [len(topic)]."""
  weights = cat.popularity
  csum = np.cumsum(weights)
  lo = np.concatenate([[0.0], csum])[cat.chain_start[:-1]]
  hi = csum[cat.chain_start[1:] - 1]
  target = lo[topic] + rng.random(len(topic)) * (hi - lo)[topic]
  j = np.searchsorted(csum, target, side="right")
  j = np.clip(j, cat.chain_start[topic], cat.chain_start[topic + 1] - 1)
  return cat.chain[j]


# ---------------------------------------------------------------------------------------------
# Feedback and time
# ---------------------------------------------------------------------------------------------

def _affinity(cfg: WorldConfig, theta: tuple[np.ndarray, np.ndarray], user: np.ndarray, frac: np.ndarray,
              topic: np.ndarray) -> np.ndarray:
  """log(K * current interest of the user in `topic`), clipped to [-3, 2.5] -> float64 [E]."""
  current = (1 - frac) * theta[0][user, topic] + frac * theta[1][user, topic]
  return np.clip(np.log(np.maximum(cfg.num_topics * current, 1e-12)), -3.0, 2.5)


def feedback_probabilities(log_aff: np.ndarray, duration_ms: np.ndarray) -> dict[str, np.ndarray]:
  """The oracle: true P(feedback = 1) of every event -> {kuairand.ACTION_BITS name: float64 [E]}.

  Bernoulli feedbacks: σ(logit(rate) + slope · log affinity). is_click / long_view with threshold
  s seconds: play = floor(clip(d · w, 200, 4d)) with ln w ~ N(μ, σ²), μ = ln(WATCH_MEDIAN) +
  WATCH_SLOPE · log affinity, and d ≥ 3 s, so the clip never decides: if d ≤ s, the event counts
  when play ≥ d, i.e. w ≥ 1; otherwise when play > s (ms), i.e. d · w ≥ s + 1 ms. Either way
  P = Φ((μ − ln threshold) / σ).
  """
  d = duration_ms.astype(np.float64)
  mu = np.log(WATCH_MEDIAN) + WATCH_SLOPE * log_aff
  out = {}
  for name, seconds in (("is_click", CLICK_SECONDS), ("long_view", LONG_VIEW_SECONDS)):
    ms = seconds * 1000
    threshold = np.where(d <= ms, 1.0, (ms + 1) / d)
    out[name] = special.ndtr((mu - np.log(threshold)) / WATCH_SIGMA)
  for name, (rate, slope) in FEEDBACK_MODEL.items():
    logit = np.log(rate / (1 - rate)) + slope * log_aff
    out[name] = 1 / (1 + np.exp(-logit))
  return {name: out[name] for name in kuairand.ACTION_BITS}


def _feedback(rng: np.random.Generator, log_aff: np.ndarray, duration_ms: np.ndarray,
              oracle: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Play time and the 8 binary feedbacks (+ stay times) -> {log column: int64 [E]}."""
  e = len(log_aff)
  watch = np.exp(np.log(WATCH_MEDIAN) + WATCH_SLOPE * log_aff + rng.normal(0, WATCH_SIGMA, e))
  play = np.clip(duration_ms * watch, 200, 4 * duration_ms).astype(np.int64)
  out = {"play_time_ms": play, "duration_ms": duration_ms.astype(np.int64)}
  for name, seconds in (("is_click", CLICK_SECONDS), ("long_view", LONG_VIEW_SECONDS)):
    short = duration_ms <= seconds * 1000
    out[name] = np.where(short, play >= duration_ms, play > seconds * 1000).astype(np.int64)
  for name in FEEDBACK_MODEL:
    out[name] = (rng.random(e) < oracle[name]).astype(np.int64)
  out["profile_stay_time"] = out["is_profile_enter"] * rng.integers(1000, 60_000, e)
  out["comment_stay_time"] = out["is_comment"] * rng.integers(2000, 120_000, e)
  return out


def _timeline_ms(rng: np.random.Generator, ev: _Events, play_ms: np.ndarray) -> np.ndarray:
  """Unix-ms time of every event: sessions of back-to-back plays, idle gaps spread over each
  (user, period) by sorted uniforms, so times strictly increase along every user's history."""
  gap = play_ms + rng.integers(500, 3000, len(play_ms))              # watch + swipe
  in_session = _segment_cumsum(gap, ev.session_start)
  s_idx = np.flatnonzero(ev.session_start)
  s_len = np.add.reduceat(gap, s_idx)
  group = ev.user[s_idx] * 2 + ev.period[s_idx]                     # (user, period), sorted
  g_start = np.concatenate([[True], group[1:] != group[:-1]])
  watched_before = _segment_cumsum(s_len, g_start)
  g_first = np.flatnonzero(g_start)
  g_of = np.cumsum(g_start) - 1
  watch_total = np.add.reduceat(s_len, g_first)
  bounds_ms = [int(t.timestamp() * 1000) for t in (*PERIOD_STARTS, PERIOD_END)]
  g_period = ev.period[s_idx][g_first]
  period_ms = np.array(bounds_ms[1:]) - np.array(bounds_ms[:-1])
  idle = np.maximum(period_ms[g_period] - watch_total - 60_000, 0)
  u = rng.random(len(s_idx))
  u = u[np.lexsort((u, g_of))]                                        # sorted within each group
  start = np.array(bounds_ms[:-1])[g_period][g_of] + (u * idle[g_of]).astype(np.int64) + watched_before
  start += _second_period_shift(ev.user[s_idx], ev.period[s_idx], start, s_len)
  session_of = np.cumsum(ev.session_start) - 1
  return start[session_of] + in_session


def _second_period_shift(user: np.ndarray, period: np.ndarray, start: np.ndarray, s_len: np.ndarray
                         ) -> np.ndarray:
  """Per-session delay that keeps a user's second period after the end of their first one (only
  a history with more than two weeks of watch time in the first period needs it) -> int64 [S]."""
  end = start + s_len
  first_end = np.zeros(user.max() + 1, np.int64)
  np.maximum.at(first_end, user[period == 0], end[period == 0])
  second_start = np.full(user.max() + 1, np.iinfo(np.int64).max)
  np.minimum.at(second_start, user[period == 1], start[period == 1])
  delay = np.maximum(first_end - second_start + 1000, 0)
  return np.where(period == 1, delay[user], 0)


def _date_hourmin(time_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """KuaiRand `date` (YYYYMMDD) and `hourmin` (Beijing time). hourmin is written as HH00: the
  official example row (time 18:20:30) has hourmin 1800."""
  local = (time_ms + 8 * 3600 * 1000).astype("datetime64[ms]")
  day = local.astype("datetime64[D]")
  year = day.astype("datetime64[Y]").astype(np.int64) + 1970
  month = day.astype("datetime64[M]").astype(np.int64) % 12 + 1
  dom = (day - day.astype("datetime64[M]")).astype(np.int64) + 1
  hour = (local - day).astype("timedelta64[h]").astype(np.int64)
  return year * 10000 + month * 100 + dom, hour * 100


# ---------------------------------------------------------------------------------------------
# The world
# ---------------------------------------------------------------------------------------------

def build_world(cfg: WorldConfig) -> World:
  """Generates the whole world in memory (deterministic in cfg.seed)."""
  rng = np.random.default_rng(cfg.seed)
  cat = _make_catalogue(cfg, rng)
  theta = _interests(cfg, rng)
  lengths = _sequence_lengths(cfg, rng)
  ev = _event_skeleton(cfg, rng, lengths)
  driven = ~ev.is_noise & ~ev.is_rand
  item = rng.integers(0, cfg.num_items, len(ev.user))                 # noise / random exposure
  item_d, topic_d, followed_d = _interest_items(cfg, rng, cat, ev.user[driven], ev.frac[driven], theta)
  item[driven] = item_d
  event_topic = np.full(len(item), -1, np.int64)
  event_topic[driven] = topic_d
  followed = np.zeros(len(item), bool)
  followed[driven] = followed_d
  log_aff = _affinity(cfg, theta, ev.user, ev.frac, cat.topic[item])
  long_range = None
  if cfg.long_range:
    long_range = _plant_dormant_topics(cfg, cat, theta, ev, item, event_topic, followed, log_aff)
  oracle = feedback_probabilities(log_aff, cat.duration_ms[item])
  fb = _feedback(rng, log_aff, cat.duration_ms[item], oracle)
  time_ms = _timeline_ms(rng, ev, fb["play_time_ms"])
  date, hourmin = _date_hourmin(time_ms)
  log = {"user_id": ev.user.astype(np.int64), "video_id": item.astype(np.int64), "date": date,
         "hourmin": hourmin, "time_ms": time_ms, **fb, "is_rand": ev.is_rand.astype(np.int64),
         "tab": ev.tab.astype(np.int64)}
  log = {c: log[c] for c in kuairand.LOG_COLUMNS}
  return World(cfg, cat.topic.astype(np.int64), _chain_next(cat), cat.duration_ms, cat.author,
               theta[0], theta[1], log, ev.is_noise, event_topic, followed, oracle, long_range)


def _plant_dormant_topics(cfg: WorldConfig, cat: _Catalogue, theta: tuple[np.ndarray, np.ndarray],
                          ev: _Events, item: np.ndarray, event_topic: np.ndarray, followed: np.ndarray,
                          log_aff: np.ndarray) -> dict[str, np.ndarray]:
  """Plants the return-after-gap structure in place (item, event_topic, followed, log_aff, is_noise).

  Per user u: the T = `dormant_topics` dormant topics d_u,1..T are the topics of least base interest
  (theta_start + theta_end), so the base process rarely shows them; each has an old affinity
  a_u,t ~ N(0, sigma^2) clipped to [-3, 2.5]. A non-random event at history share f becomes a
  dormant event with probability `dormant_early_rate` when f < dormant_early_until and
  `dormant_return_rate` when f >= dormant_return_from; none between (the gap). Its topic is one of
  the T, uniformly (its own stream, (seed, 3)), its item a popularity draw inside it, and its log
  affinity that topic's a_u,t, in both phases: what the user felt for the topic long ago decides the
  feedback when it returns, and only the early events' feedback reveals it. With T > 1 each topic
  returns T times more sparsely for the same rates, so the newest events reveal less of each a_u,t.
  The draws come from their own stream (seed, 2), after the base world's, so the rest of the world
  is the base one (and T = 1 draws exactly what the single-topic generator drew).
  """
  rng = np.random.default_rng([cfg.seed, 2])
  t = cfg.dormant_topics
  interest = theta[0] + theta[1] + 1e-9 * rng.random(theta[0].shape)   # random tie-break
  dormant = np.argsort(interest, axis=1, kind="stable")[:, :t].astype(np.int64)           # [U, T]
  old_aff = np.clip(rng.normal(0.0, cfg.dormant_affinity_sigma, (cfg.num_users, t)), -3.0, 2.5)
  draw = rng.random(len(item))
  early = (ev.frac < cfg.dormant_early_until) & (draw < cfg.dormant_early_rate)
  late = (ev.frac >= cfg.dormant_return_from) & (draw < cfg.dormant_return_rate)
  planted = (early | late) & ~ev.is_rand
  u = ev.user[planted]
  slot = (np.random.default_rng([cfg.seed, 3]).integers(0, t, len(u)) if t > 1
          else np.zeros(len(u), np.int64))
  item[planted] = _draw_in_topic(rng, cat, dormant[u, slot])
  event_topic[planted] = dormant[u, slot]
  followed[planted] = False
  ev.is_noise[planted] = False
  log_aff[planted] = old_aff[u, slot]
  phase = np.where(planted & early, PLANTED_EARLY, np.where(planted, PLANTED_RETURN, 0)).astype(np.int8)
  return {"dormant_topic": dormant, "old_affinity": old_aff, "planted_phase": phase}


def _log_file_masks(world: World) -> dict[str, np.ndarray]:
  """Which events go to which official log file: random exposures to the random log, the rest
  by date (an unusually long first-period history can spill past 4/21 into the second file)."""
  rand = world.log["is_rand"] == 1
  late = world.log["date"] >= 20220422
  return {LOG_FILES[0]: ~rand & ~late, LOG_FILES[1]: ~rand & late, LOG_FILES[2]: rand}


def make_world_tables(world: World) -> list[NumericTable]:
  """The three log files as in-memory tables (the order and rows `write_world` writes)."""
  v = world.cfg.variant
  return [NumericTable(f"<synthetic>/{name}_{v}.csv", {c: a[m] for c, a in world.log.items()}, 2)
          for name, m in _log_file_masks(world).items()]


def make_world_interactions(cfg: WorldConfig, logs: str = "all") -> Interactions:
  """The world's events as Interactions, exactly as load_kuairand would see the written files."""
  tables = make_world_tables(build_world(cfg))
  keep = {"standard": tables[:2], "random": tables[2:], "all": tables}[logs]
  return kuairand.log_interactions(keep, num_items=cfg.num_items + 1)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _write_csv_columns(path: str, header: tuple[str, ...], columns: list[np.ndarray]) -> None:
  """Fast CSV for columns without quoting needs (numbers): one str conversion per column."""
  strs = [c.astype(str).tolist() for c in columns]
  with open(path, "w", encoding="utf-8", newline="") as f:
    f.write(",".join(header) + "\n")
    if strs and strs[0]:
      f.write("\n".join(map(",".join, zip(*strs))) + "\n")


def _count_range(x: np.ndarray, edges: list[int], labels: list[str]) -> np.ndarray:
  """Bucket strings in the style of the real *_range columns."""
  return np.array(labels, dtype=object)[np.searchsorted(edges, x, side="right")]


def _user_feature_rows(world: World, rng: np.random.Generator) -> list[list]:
  """31 official columns per user. onehot_feat1 carries each user's dominant start topic (a known,
  useful signal); the rest are plausible noise."""
  u = world.cfg.num_users
  lengths = np.bincount(world.log["user_id"], minlength=u)
  q = np.quantile(lengths, [0.25, 0.5])
  degree = np.where(lengths >= q[1], "full_active", np.where(lengths >= q[0], "high_active", "middle_active"))
  follow = rng.geometric(0.01, u) - 1
  fans = rng.geometric(0.05, u) - 1
  friends = rng.geometric(0.2, u) - 1
  register = rng.integers(10, 3000, u)
  cols: list[np.ndarray] = [
      np.arange(u), degree, np.zeros(u, np.int64), rng.choice([-124, 1], u), rng.integers(0, 2, u),
      follow, _count_range(follow, [1, 11, 51, 101, 151, 251, 501],
                           ["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"]),
      fans, _count_range(fans, [1, 10, 100, 1000], ["0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)"]),
      friends, _count_range(friends, [1, 5, 30, 60, 120, 250],
                            ["0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"]),
      register, _count_range(register, [15, 31, 61, 181, 366, 731],
                             ["8-14", "15-30", "31-60", "61-90", "181-365", "366-730", "730+"]),
      rng.integers(0, 2, u), np.argmax(world.theta_start, axis=1)]
  cols += [rng.integers(0, 50, u) for _ in range(2, 12)]
  cols += [rng.integers(0, 2, u).astype(np.float64) for _ in range(12, 18)]
  return [list(r) for r in zip(*[c.tolist() for c in cols])]


def _video_feature_columns(world: World, rng: np.random.Generator) -> list[np.ndarray]:
  """12 official columns per video; `tag` is the video's topic (the ground-truth cluster)."""
  n = world.cfg.num_items
  upload = np.array(["2022-04-09", "2022-04-10", "2022-04-11"])[rng.integers(0, 3, n)]
  upload_type = np.array(["ShortImport", "LongImport", "Kmovie", "FollowShoot"])[rng.integers(0, 4, n)]
  return [np.arange(n), world.item_author, np.full(n, "NORMAL"), upload, upload_type,
          np.zeros(n), world.item_duration_ms.astype(np.float64), np.full(n, 720.0),
          np.full(n, 1280.0), rng.integers(10**6, 10**10, n), rng.choice([4.0, 7.0, 9.0, 11.0], n),
          world.item_topic]


def _world_json(world: World, files: dict[str, str]) -> dict:
  cfg = world.cfg
  lengths = np.bincount(world.log["user_id"], minlength=cfg.num_users)
  tab = world.log["tab"]
  return {
      "generator": "recjax.data.synthetic", "generator_version": cfg.generator_version,
      "fingerprint": cfg.fingerprint(), "format": "KuaiRand", "variant": cfg.variant,
      "seed": cfg.seed, "config": cfg.as_dict(),
      "tab_noise": {str(k): x for k, x in enumerate(cfg.tab_noise)},
      "files": files,
      "stats": {"num_events": int(len(tab)), "num_users": cfg.num_users, "num_items": cfg.num_items,
                "mean_seq_len": float(lengths.mean()), "max_seq_len": int(lengths.max()),
                "events_per_tab": {str(k): int((tab == k).sum()) for k in range(cfg.num_tabs)},
                "noise_share_per_tab": {str(k): float(world.is_noise[tab == k].mean()) if (tab == k).any()
                                        else None for k in range(cfg.num_tabs)},
                "random_exposures": int(world.log["is_rand"].sum()),
                "action_rates": {n: float(world.log[n].mean()) for n in kuairand.ACTION_BITS}},
      "ground_truth": {
          "item_topic": world.item_topic.tolist(),
          "item_next": world.item_next.tolist(),
          "topic_column": "video_features_basic.tag holds the item's topic id",
          "user_dominant_topic_column": "user_features.onehot_feat1 = argmax of theta_start",
          "model_item_id": "video_id + 1",
          "feedback_model": {n: {"base_rate": r, "affinity_slope": s} for n, (r, s) in FEEDBACK_MODEL.items()},
          "watch_model": {"median_fraction": WATCH_MEDIAN, "affinity_slope": WATCH_SLOPE, "sigma": WATCH_SIGMA,
                          "is_click": f"play >= duration if duration <= {CLICK_SECONDS}s else play > {CLICK_SECONDS}s",
                          "long_view": f"same rule with {LONG_VIEW_SECONDS}s"},
          "affinity": "log(K * ((1-f) theta_start[u, topic] + f theta_end[u, topic])), f = position / (len - 1)",
          "npz": "world_truth.npz: theta_start, theta_end [U,K]; per event (user-major, time order, "
                 "all log files merged): user_id, time_ms, video_id, is_noise, event_topic (-1 = not "
                 "interest-driven), followed",
          **({"long_range": "dormant topics (WorldConfig.dormant_*): world_truth.npz adds "
                            "dormant_topic, old_affinity [U, dormant_topics] and planted_phase [E] (1 early, 2 "
                            f"return); {SIGNAL_FILE}: oracle NE with the newest 256 events vs the "
                            "full history (synthetic_signal.long_range_signal)"}
             if world.long_range is not None else {}),
          "oracle": f"{ORACLE_FILE}: per event, in world_truth.npz's order: user_id, time_ms, "
                    "video_id, is_rand and p_<feedback> = true P(feedback = 1) for the 8 feedbacks "
                    "(read with synthetic.load_oracle)",
      },
  }


def write_world(world: World, out_dir: str | os.PathLike) -> str:
  """Writes the world's KuaiRand-format files, world.json and world_truth.npz into out_dir."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  cfg, v = world.cfg, world.cfg.variant
  rng = np.random.default_rng([cfg.seed, 1])       # side features: own stream, logs unaffected
  files = {}
  for name, mask in _log_file_masks(world).items():
    files[name] = f"{name}_{v}.csv"
    _write_csv_columns(os.path.join(out_dir, files[name]), kuairand.LOG_COLUMNS,
                       [world.log[c][mask] for c in kuairand.LOG_COLUMNS])
  files["user_features"] = f"user_features_{v}.csv"
  with open(os.path.join(out_dir, files["user_features"]), "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(kuairand.USER_FEATURE_COLUMNS)
    w.writerows(_user_feature_rows(world, rng))
  files["video_features"] = f"video_features_basic_{v}.csv"
  _write_csv_columns(os.path.join(out_dir, files["video_features"]), kuairand.VIDEO_FEATURE_COLUMNS,
                     _video_feature_columns(world, rng))
  np.savez_compressed(os.path.join(out_dir, "world_truth.npz"), theta_start=world.theta_start,
                      theta_end=world.theta_end, user_id=world.log["user_id"], time_ms=world.log["time_ms"],
                      video_id=world.log["video_id"], is_noise=world.is_noise,
                      event_topic=world.event_topic, followed=world.followed,
                      **(world.long_range or {}))
  np.savez_compressed(os.path.join(out_dir, ORACLE_FILE), user_id=world.log["user_id"],
                      time_ms=world.log["time_ms"], video_id=world.log["video_id"],
                      is_rand=world.log["is_rand"],
                      **{f"p_{name}": p for name, p in world.oracle.items()})
  if world.long_range is not None:
    from recjax.data import synthetic_signal  # pylint: disable=import-outside-toplevel
    with open(os.path.join(out_dir, SIGNAL_FILE), "w", encoding="utf-8") as f:
      json.dump(synthetic_signal.long_range_signal(world), f, indent=1)
  # world.json last: its presence marks a complete world (the registry's cache test).
  with open(os.path.join(out_dir, "world.json"), "w", encoding="utf-8") as f:
    json.dump(_world_json(world, files), f, indent=1)
  return out_dir


def load_oracle(out_dir: str | os.PathLike, seqs, logs: str = "standard") -> dict[str, np.ndarray]:
  """The true feedback probabilities aligned to `seqs` = kuairand.load_kuairand(out_dir, ..., logs).

  The world's events are user-major with strictly increasing times, which is also the reader's
  (user_id, time_ms) order, so the reader's events are the world's events of the chosen logs in
  world order. The alignment is checked event by event (user and item) and a mismatch raises.

  Returns:
    {kuairand.ACTION_BITS name: float64 [E]} in the order of seqs.items; on a world with planted
    long-range structure also "planted_phase": int8 [E] (0 not planted, 1 early, 2 return), from
    world_truth.npz (same event order as the oracle file). Other worlds have no such key.
  """
  path = os.path.join(os.fspath(out_dir), ORACLE_FILE)
  if not os.path.exists(path):
    raise DataError(path, f"no oracle file; worlds written by generator version < 2 lack it: delete "
                    f"{os.fspath(out_dir)} and generate the world again")
  if logs not in kuairand.LOG_KINDS:
    raise ValueError(f"logs must be one of {tuple(kuairand.LOG_KINDS)}, got {logs!r}")
  with np.load(path) as z:
    data = {k: z[k] for k in z.files}
  keep = {"standard": data["is_rand"] == 0, "random": data["is_rand"] == 1,
          "all": np.ones(len(data["is_rand"]), bool)}[logs]
  users = np.repeat(np.asarray(seqs.user_ids), seqs.lengths)
  if keep.sum() != len(seqs.items):
    raise DataError(path, f"has {int(keep.sum())} events for logs={logs!r}, the sequences {len(seqs.items)}")
  bad = (data["user_id"][keep] != users) | (data["video_id"][keep] + 1 != seqs.items)
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(path, f"event {i} of logs={logs!r} is (user {data['user_id'][keep][i]}, video "
                    f"{data['video_id'][keep][i]}) but the sequences hold (user {users[i]}, item "
                    f"{seqs.items[i]} = video + 1): not the world these sequences came from", field="video_id")
  out = {name: data[f"p_{name}"][keep] for name in kuairand.ACTION_BITS}
  truth = os.path.join(os.fspath(out_dir), "world_truth.npz")
  if os.path.exists(truth):
    with np.load(truth) as z:
      if "planted_phase" in z.files:
        phase = z["planted_phase"]
        if len(phase) != len(keep):
          raise DataError(truth, f"has {len(phase)} events, {ORACLE_FILE} {len(keep)}: not the same world",
                          field="planted_phase")
        out["planted_phase"] = phase[keep]
  return out


def generate_world(cfg: WorldConfig, out_dir: str | os.PathLike) -> str:
  """build_world + write_world; returns out_dir (read it with kuairand.load_kuairand(out_dir,
  variant=cfg.variant, logs=...))."""
  return write_world(build_world(cfg), out_dir)


def load_world_config(out_dir: str | os.PathLike) -> WorldConfig:
  """The WorldConfig recorded in out_dir/world.json."""
  with open(os.path.join(os.fspath(out_dir), "world.json"), encoding="utf-8") as f:
    cfg = json.load(f)["config"]
  cfg["tab_noise"] = tuple(cfg["tab_noise"])
  if cfg.get("tab_alpha") is not None:
    cfg["tab_alpha"] = tuple(cfg["tab_alpha"])
  return WorldConfig(**cfg)
