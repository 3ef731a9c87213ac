"""The ranking protocol: time-based candidates with multi-task labels, as fixed-shape arrays.

Per user, events are in time order (`UserSequences`). Every event is assigned to train, valid or
test by time (`RankingSplit.mode`):
  "last_k":   per user, the last `test_k` events are test, the `valid_k` before them valid, the
              rest train (a per-user time cut);
  "time_cut": one global cut: events at or after the `test_quantile` quantile of all event times
              are test, those at or after the `valid_quantile` quantile valid, the rest train
              (nothing of the future of any user reaches training).
The events of one split, user by user, are grouped in time order into *requests* of at most
`request_size` consecutive candidates. A request's history is the ≤ `history_len` events that
come before its first candidate (older splits included: at test time the training events are the
past). With request_size = 1 every candidate has its own history, the events right before it.
Events with fewer than `min_history` earlier events of their user are not candidates.
`train_k` > 0 keeps only each user's newest `train_k` training events as training candidates (in
either mode a user's training events are a prefix of the history); the older ones stay in the
histories. Long histories need it: with every event a candidate, an epoch is a request every
`request_size` events of thousands per user, while the requests that matter most read the long past.

What a candidate carries as input is what is known when the request is served: its item id, its
tab and the request time (the first candidate's timestamp). Its own labels, actions and watch
time are targets only, and so are its own timestamp (inside a request, the gap to the next
candidate is that candidate's play time) and the later candidates' anything.

Arrays for N requests, history width H, C = request_size, T tasks (0 pads ids, tabs and buckets):
  user_ids [N] int64          raw user id;  user_index [N] int64: row of the user in `seqs`
  hist_ids [N, H] int32       history items, oldest first, right-padded;  hist_lengths [N] int32
  hist_actions [N, H] int32   bitmask of the history events' labels (bit t = task t; with the
                              KuaiRand tasks this is exactly `kuairand.action_bitmask`)
  hist_watch [N, H] int32     bucketed watch ratio play / duration, 1..len(WATCH_EDGES)+1 (0 =
                              padding or no play time in the data)
  hist_tab [N, H] int32       tab + 1 (0 = padding or no tab)
  hist_times [N, H] int32     seconds since the dataset's first event (0 on padding)
  request_times [N] int32     the first candidate's time (same clock)
  cand_ids [N, C] int32       candidate items (0 = padding candidate); cand_mask [N, C] float32
  cand_tab [N, C] int32       tab + 1
  cand_labels [N, C, T] int8  targets;  cand_watch_ratio [N, C] float32 clipped play / duration
  cand_event [N, C] int64     flat event index into `seqs` (-1 on padding): joins per-event data
                              such as the synthetic world's oracle probabilities
  user_feats [N, Fu] int32    the user's categorical context features (`ContextTables`; Fu = 0
                              without them), 0 = unknown
  cand_feats [N, C, Fi] int32 each candidate item's categorical features (0 = unknown / padding)
  hist_feats [N, H, Fi] int32 the same item features of the history events

History layout (`RankingSplit.history_layout`): "padded" builds the hist_* arrays [N, H] up front
(the default). "ragged" keeps one start index per request (`hist_start [N] int64`, flat into
`seqs`) and the per-event columns once (`RaggedHistory`); `RankingExamples.batch` cuts each
batch's windows from them at batch time, `width` wide: memory is O(E + batch x width), not
O(N x H), which long histories (H in the thousands, a request every few events) need. The
windows are those of the padded layout, cut to the width (`length_bucket`: the smallest bucket
>= the batch's longest history), so batches of similar length (`length_buckets`) carry few pad
tokens.
"""
from __future__ import annotations

import dataclasses

import os

import numpy as np

from recjax.data import kuairand
from recjax.data.types import UserSequences

MODES = ("last_k", "time_cut")
LAYOUTS = ("padded", "ragged")
HISTORY_FIELDS = ("hist_ids", "hist_actions", "hist_watch", "hist_tab", "hist_times", "hist_feats")
SPLITS = ("train", "valid", "test")
# Watch-ratio bucket edges: [0, .1) -> 1, [.1, .25) -> 2, ..., [2, inf) -> 8.
WATCH_EDGES = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
MAX_WATCH_RATIO = 4.0   # regression target clip (the synthetic world clips play at 4x duration)
TASK_SETS = {
    "kuairand": tuple(kuairand.ACTION_BITS),            # 8 feedbacks, bit order of the bitmask
    "rating": ("rating_ge_4", "rating_eq_5"),          # MovieLens explicit ratings
}
INPUT_FIELDS = ("user_ids", "user_index", "hist_ids", "hist_actions", "hist_watch", "hist_tab",
                "hist_times", "hist_lengths", "request_times", "cand_ids", "cand_mask", "cand_tab",
                "user_feats", "cand_feats", "hist_feats")
TARGET_FIELDS = ("cand_labels", "cand_watch_ratio", "cand_event")


@dataclasses.dataclass(frozen=True)
class RankingSplit:
  """Settings of the ranking protocol (see the module docstring)."""
  mode: str = "last_k"
  history_len: int = 64
  request_size: int = 1
  test_k: int = 4               # last_k: test candidates per user
  valid_k: int = 4              # last_k: valid candidates per user (0 = no valid split)
  valid_quantile: float = 0.8   # time_cut
  test_quantile: float = 0.9    # time_cut
  min_history: int = 1
  train_k: int = 0              # > 0: only each user's newest train_k training events are candidates
  tasks: str = "kuairand"
  history_layout: str = "padded"   # "ragged": windows cut per batch (module docstring)
  bucket_min: int = 16             # ragged: history widths are bucket_min * 2^k, capped at history_len

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"RankingSplit.mode must be one of {MODES}, got {self.mode!r}")
    if self.tasks not in TASK_SETS:
      raise ValueError(f"RankingSplit.tasks must be one of {tuple(TASK_SETS)}, got {self.tasks!r}")
    if self.history_len < 1 or self.request_size < 1 or self.min_history < 0:
      raise ValueError("RankingSplit: need history_len >= 1, request_size >= 1, min_history >= 0")
    if self.test_k < 1 or self.valid_k < 0 or self.train_k < 0:
      raise ValueError("RankingSplit: need test_k >= 1, valid_k >= 0 and train_k >= 0")
    if not 0 < self.valid_quantile <= self.test_quantile < 1:
      raise ValueError("RankingSplit: need 0 < valid_quantile <= test_quantile < 1")
    if self.history_layout not in LAYOUTS:
      raise ValueError(f"RankingSplit.history_layout must be one of {LAYOUTS}, got {self.history_layout!r}")
    if self.bucket_min < 1:
      raise ValueError(f"RankingSplit.bucket_min must be >= 1, got {self.bucket_min}")

  def buckets(self) -> tuple[int, ...]:
    """The history widths of the ragged layout: bucket_min * 2^k below history_len, then history_len."""
    widths, w = [], self.bucket_min
    while w < self.history_len:
      widths.append(w)
      w *= 2
    return tuple(widths) + (self.history_len,)

  @property
  def task_names(self) -> tuple[str, ...]:
    return TASK_SETS[self.tasks]

  def describe(self) -> str:
    """One sentence for config docstrings and results files."""
    if self.mode == "last_k":
      cut = f"per user, the last {self.test_k} events are test and the {self.valid_k} before valid"
    else:
      cut = (f"global time cut: events from the {self.valid_quantile:g} quantile of time are valid, "
             f"from the {self.test_quantile:g} quantile test")
    ragged = ("; histories cut per batch from the ragged sequences, widths bucketed "
              f"{self.buckets()}" if self.history_layout == "ragged" else "")
    if self.train_k:
      cut += f"; training candidates: each user's newest {self.train_k} training events"
    return (f"ranking protocol {self.mode}: {cut}; candidates in requests of {self.request_size} "
            f"consecutive events with the <= {self.history_len} events before the request as "
            f"history (min {self.min_history}); tasks {', '.join(self.task_names)}{ragged}")


@dataclasses.dataclass(frozen=True)
class RaggedHistory:
  """The ragged layout's per-event history columns, E = events of `seqs` (flat, user-major).

  columns: {hist_ids, hist_actions, hist_watch, hist_tab, hist_times: int32 [E]};
  item_feats: int32 [V, Fi] (hist_feats = item_feats[hist_ids], row 0 all 0);
  buckets: the allowed widths, ascending (the last is history_len).
  """
  columns: dict[str, np.ndarray]
  item_feats: np.ndarray
  buckets: tuple[int, ...]

  def width(self, lengths: np.ndarray) -> int:
    """The smallest bucket >= the longest of `lengths` (at least the smallest bucket)."""
    longest = int(np.max(lengths, initial=0))
    i = int(np.searchsorted(self.buckets, longest))
    if i == len(self.buckets):
      raise ValueError(f"history length {longest} exceeds the longest bucket {self.buckets[-1]}")
    return self.buckets[i]

  def cut(self, start_N: np.ndarray, length_N: np.ndarray, width: int) -> dict[str, np.ndarray]:
    """The windows [start, start + length) right-padded to `width` -> hist_* fields [N, width(, Fi)]."""
    if np.any(length_N > width):
      raise ValueError(f"a history of {int(length_N.max())} events does not fit width {width}")
    cols = np.arange(width)[None, :]
    valid = cols < length_N[:, None]
    return self.gather(np.where(valid, start_N[:, None] + cols, 0), valid)

  def gather(self, event_NW: np.ndarray, valid_NW: np.ndarray) -> dict[str, np.ndarray]:
    """The events at flat indices `event_NW` where `valid_NW` (0 elsewhere) -> hist_* fields [N, W(, Fi)]."""
    idx = np.where(valid_NW, event_NW, 0)
    out = {k: np.where(valid_NW, v[idx], 0).astype(v.dtype) for k, v in self.columns.items()}
    out["hist_feats"] = self.item_feats[out["hist_ids"]]
    return out

  def cut_positions(self, start_N: np.ndarray, length_N: np.ndarray, keep: list[np.ndarray],
                    width: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Only the positions `keep[i]` (ascending, 0 = oldest) of each window [start, start + length),
    e.g. a stochastic-length draw -> (kept lengths int32 [N], hist_* fields [N, width(, Fi)]; width
    default: the bucket of the longest kept history)."""
    if len(keep) != len(start_N):
      raise ValueError(f"{len(keep)} kept-position lists for {len(start_N)} windows")
    kept_N = np.array([len(k) for k in keep], np.int32)
    width = self.width(kept_N) if width is None else width
    if np.any(kept_N > width):
      raise ValueError(f"a history of {int(kept_N.max())} kept events does not fit width {width}")
    event_NW = np.zeros((len(keep), width), np.int64)
    for i, k in enumerate(keep):
      k = np.asarray(k, np.int64)
      if len(k) and (k[0] < 0 or k[-1] >= length_N[i] or np.any(np.diff(k) <= 0)):
        raise ValueError(f"window {i}: kept positions must be ascending in [0, {int(length_N[i])})")
      event_NW[i, :len(k)] = start_N[i] + k
    return kept_N, self.gather(event_NW, np.arange(width)[None, :] < kept_N[:, None])


@dataclasses.dataclass(frozen=True)
class RankingExamples:
  """One split's requests; fields as in the module docstring (ragged: `history` holds the events
  and `arrays` hist_start [N] instead of the hist_* fields)."""
  split: str
  task_names: tuple[str, ...]
  arrays: dict[str, np.ndarray]
  cut_times: tuple[int, int] | None = None   # time_cut: (valid, test) cut in unix seconds
  history: RaggedHistory | None = None

  def __len__(self):
    return len(self.arrays["user_ids"])

  def length_bucket(self) -> np.ndarray:
    """Per request, the index of its history-width bucket -> int64 [N] (all 0 when padded)."""
    if self.history is None:
      return np.zeros(len(self), np.int64)
    return np.searchsorted(self.history.buckets, self.arrays["hist_lengths"]).astype(np.int64)

  def batch(self, rows: np.ndarray, width: int | None = None,
            keep: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The requests at `rows` as a dict of arrays (every field). Ragged: the hist_* windows are cut
    `width` wide (default: the bucket of the longest history among `rows`); with `keep`, only the
    history positions keep[i] of row i (ascending, 0 = oldest; a stochastic-length draw), and
    hist_lengths are the kept counts."""
    out = {k: v[rows] for k, v in self.arrays.items()}
    if self.history is not None:
      start = out.pop("hist_start")
      if keep is not None:
        out["hist_lengths"], hist = self.history.cut_positions(start, out["hist_lengths"], keep, width)
        out.update(hist)
        return out
      width = self.history.width(out["hist_lengths"]) if width is None else width
      out.update(self.history.cut(start, out["hist_lengths"], width))
    elif keep is not None:
      raise ValueError("kept history positions need the ragged history layout")
    return out


@dataclasses.dataclass(frozen=True)
class ContextTables:
  """Categorical context features, coded 1..vocab-1 per feature (0 = unknown).

  user_feats [U, Fu] has one row per user of the sequences (`seqs.user_ids` order); item_feats
  [V, Fi] one row per model item id (row 0 = padding, all 0).
  """
  user_names: tuple[str, ...]
  user_feats: np.ndarray
  user_vocab: tuple[int, ...]
  item_names: tuple[str, ...]
  item_feats: np.ndarray
  item_vocab: tuple[int, ...]

  def __post_init__(self):
    if self.user_feats.shape[1:] != (len(self.user_names),) or len(self.user_vocab) != len(self.user_names):
      raise ValueError(f"ContextTables: user features {self.user_feats.shape} disagree with "
                       f"{len(self.user_names)} names / {len(self.user_vocab)} vocabularies")
    if self.item_feats.shape[1:] != (len(self.item_names),) or len(self.item_vocab) != len(self.item_names):
      raise ValueError(f"ContextTables: item features {self.item_feats.shape} disagree with "
                       f"{len(self.item_names)} names / {len(self.item_vocab)} vocabularies")


def encode_categorical(columns: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[int, ...]]:
  """Each column's distinct values -> codes 1..n (sorted value order; NaN and "" -> 0).

  Returns:
    (int32 [R, F] codes in the order of `columns`, vocabulary size n + 1 per column).
  """
  codes, vocab = [], []
  for name, col in columns.items():
    col = np.asarray(col)
    known = np.ones(len(col), bool)
    if col.dtype.kind == "f":
      known = ~np.isnan(col)
    elif col.dtype.kind in "OUS":
      col = col.astype(str)
      known = col != ""
    values, inverse = np.unique(col[known], return_inverse=True)
    code = np.zeros(len(col), np.int32)
    code[known] = inverse.astype(np.int32) + 1
    if len(values) + 1 > 2**31 - 1:
      raise ValueError(f"feature {name!r} has too many distinct values")
    codes.append(code)
    vocab.append(len(values) + 1)
  rows = len(next(iter(columns.values()))) if columns else 0
  return (np.stack(codes, 1) if codes else np.zeros((rows, 0), np.int32)), tuple(vocab)


KUAIRAND_USER_FEATURES = ("user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
                          "follow_user_num_range", "fans_user_num_range", "friend_user_num_range",
                          "register_days_range", *(f"onehot_feat{i}" for i in range(18)))
KUAIRAND_ITEM_FEATURES = ("author_id", "video_type", "upload_type", "music_type", "tag", "duration_bucket")


def kuairand_context(data_dir: str | os.PathLike, variant: str, seqs: UserSequences) -> ContextTables:
  """KuaiRand user_features_<v>.csv and video_features_basic_<v>.csv as ContextTables for `seqs`.

  Items: author, video type, upload type, music type, the first tag, and log2 of the duration in
  seconds (bucketed). Users and videos missing from the tables get code 0.
  """
  users = kuairand.read_user_features(data_dir, variant)
  ucodes, uvocab = encode_categorical({n: users[n] for n in KUAIRAND_USER_FEATURES})
  user_feats = np.zeros((seqs.num_users, len(KUAIRAND_USER_FEATURES)), np.int32)
  row = {int(u): i for i, u in enumerate(users["user_id"])}
  rows = np.array([row.get(int(u), -1) for u in seqs.user_ids], np.int64)
  user_feats[rows >= 0] = ucodes[rows[rows >= 0]]
  videos = kuairand.read_video_features(data_dir, variant)
  duration_s = np.asarray(videos["video_duration"], np.float64) / 1000.0
  dur_bucket = np.where(np.isnan(duration_s), np.nan, np.floor(np.log2(np.maximum(duration_s, 1.0))))
  first_tag = np.array([str(t).split(",")[0] for t in videos["tag"]], dtype=object)
  cols = {"author_id": videos["author_id"], "video_type": videos["video_type"],
          "upload_type": videos["upload_type"], "music_type": videos["music_type"], "tag": first_tag,
          "duration_bucket": dur_bucket}
  icodes, ivocab = encode_categorical(cols)
  item_feats = np.zeros((seqs.num_items, len(cols)), np.int32)
  ids = np.asarray(videos["video_id"], np.int64) + 1
  inside = ids < seqs.num_items
  item_feats[ids[inside]] = icodes[inside]
  return ContextTables(KUAIRAND_USER_FEATURES, user_feats, uvocab, tuple(cols), item_feats, ivocab)


ML_USER_FEATURES = ("gender", "age", "occupation", "zip_region")


def _title_year(titles: np.ndarray) -> np.ndarray:
  """'Toy Story (1995)' -> 1995.0 (NaN when the title ends without a year)."""
  out = np.full(len(titles), np.nan)
  for i, t in enumerate(titles):
    t = str(t).strip()
    if len(t) >= 6 and t[-6] == "(" and t[-1] == ")" and t[-5:-1].isdigit():
      out[i] = float(t[-5:-1])
  return out


def movielens_context(data_dir: str | os.PathLike, name: str, seqs: UserSequences) -> ContextTables:
  """MovieLens demographics and genres / year as ContextTables for `seqs`.

  Users (ML-100K u.user, ML-1M users.dat): gender, age, occupation, first zip digit. Items (u.item,
  movies.dat): one yes/no feature per genre and the release year (from the title). Users and
  movies missing from the tables get code 0.
  """
  from recjax.data import movielens  # pylint: disable=import-outside-toplevel
  data_dir = os.fspath(data_dir)
  if name == "ml-100k":
    users = movielens.read_ml100k_users(os.path.join(data_dir, "u.user"))
    items = movielens.read_ml100k_items(os.path.join(data_dir, "u.item"))
    genre_names, flags = movielens.ML100K_GENRES, items["genres"]
  elif name == "ml-1m":
    users = movielens.read_ml1m_users(os.path.join(data_dir, "users.dat"))
    items = movielens.read_ml1m_movies(os.path.join(data_dir, "movies.dat"))
    genre_names = tuple(sorted({g for gs in items["genres"] for g in gs}))
    flags = np.array([[g in gs for g in genre_names] for gs in items["genres"]], np.int8)
  else:
    raise ValueError(f"MovieLens context tables exist for 'ml-100k' and 'ml-1m', got {name!r}")
  zip_region = np.array([str(z)[:1] for z in users["zip"]], dtype=object)
  ucodes, uvocab = encode_categorical({"gender": users["gender"], "age": users["age"],
                                       "occupation": users["occupation"], "zip_region": zip_region})
  user_feats = np.zeros((seqs.num_users, len(ML_USER_FEATURES)), np.int32)
  row = {int(u): i for i, u in enumerate(users["user_id"])}
  rows = np.array([row.get(int(u), -1) for u in seqs.user_ids], np.int64)
  user_feats[rows >= 0] = ucodes[rows[rows >= 0]]
  cols = {f"genre_{g}": flags[:, j] for j, g in enumerate(genre_names)}
  cols["year"] = _title_year(items["title"])
  icodes, ivocab = encode_categorical(cols)
  item_feats = np.zeros((seqs.num_items, len(cols)), np.int32)
  ids = np.asarray(items["movie_id"], np.int64)      # MovieLens ids are the model ids
  inside = ids < seqs.num_items
  item_feats[ids[inside]] = icodes[inside]
  return ContextTables(ML_USER_FEATURES, user_feats, uvocab, tuple(cols), item_feats, ivocab)


def event_labels(seqs: UserSequences, tasks: str) -> np.ndarray:
  """Per-event task labels -> int8 [E, T] in the order of TASK_SETS[tasks]."""
  if tasks == "kuairand":
    if "actions" not in seqs.extras:
      raise ValueError(f"{seqs.source}: the 'kuairand' tasks need the per-event action bitmask "
                       "(extras['actions'], written by the KuaiRand reader)")
    decoded = kuairand.decode_actions(seqs.extras["actions"])
    return np.stack([decoded[n] for n in TASK_SETS[tasks]], axis=1).astype(np.int8)
  if tasks == "rating":
    if "rating" not in seqs.extras:
      raise ValueError(f"{seqs.source}: the 'rating' tasks need ratings (extras['rating']; MovieLens "
                       "ratings files)")
    r = np.asarray(seqs.extras["rating"])
    return np.stack([r >= 4, r == 5], axis=1).astype(np.int8)
  raise ValueError(f"tasks must be one of {tuple(TASK_SETS)}, got {tasks!r}")


def pack_bits(labels_ET: np.ndarray) -> np.ndarray:
  """Bit t = label t -> int32 [E] (the history action bitmask)."""
  return (labels_ET.astype(np.int32) << np.arange(labels_ET.shape[1], dtype=np.int32)).sum(1).astype(np.int32)


def watch_ratio(seqs: UserSequences) -> np.ndarray | None:
  """play / duration per event, clipped to [0, MAX_WATCH_RATIO] -> float32 [E], or None."""
  if "play_time_ms" not in seqs.extras or "duration_ms" not in seqs.extras:
    return None
  play = np.asarray(seqs.extras["play_time_ms"], np.float64)
  dur = np.asarray(seqs.extras["duration_ms"], np.float64)
  return np.clip(play / np.maximum(dur, 1.0), 0.0, MAX_WATCH_RATIO).astype(np.float32)


def candidate_values(per_event: dict[str, np.ndarray], examples: RankingExamples) -> np.ndarray:
  """Per-event values of each task (e.g. `synthetic.load_oracle`'s true probabilities) at the
  candidates -> float64 [N, C, T] in task order (0 on padding candidates)."""
  missing = [t for t in examples.task_names if t not in per_event]
  if missing:
    raise ValueError(f"per-event values lack the task(s) {missing}")
  values = np.stack([np.asarray(per_event[t], np.float64) for t in examples.task_names], axis=1)
  return candidate_field(values, examples)


def candidate_field(values_E: np.ndarray, examples: RankingExamples) -> np.ndarray:
  """One per-event array [E, ...] (any dtype, e.g. `load_oracle`'s planted_phase) at the candidates
  -> [N, C, ...] (0 on padding candidates)."""
  ev = examples.arrays["cand_event"]
  values_E = np.asarray(values_E)
  got = values_E[np.maximum(ev, 0)]
  return np.where((ev >= 0).reshape(ev.shape + (1,) * (values_E.ndim - 1)), got, np.zeros((), values_E.dtype))


def event_splits(seqs: UserSequences, cfg: RankingSplit) -> tuple[np.ndarray, tuple[int, int] | None]:
  """Split of every event (0 train, 1 valid, 2 test) -> (int8 [E], time_cut's (valid, test) cut)."""
  lengths = seqs.lengths
  user_of = np.repeat(np.arange(seqs.num_users), lengths)
  if cfg.mode == "last_k":
    from_end = lengths[user_of] - (np.arange(len(seqs.items)) - seqs.offsets[user_of])   # 1 = last
    split = np.where(from_end <= cfg.test_k, 2, np.where(from_end <= cfg.test_k + cfg.valid_k, 1, 0))
    return split.astype(np.int8), None
  if seqs.timestamps is None:
    raise ValueError(f"{seqs.source}: the time_cut ranking protocol needs timestamps")
  t = seqs.timestamps
  cuts = (int(np.quantile(t, cfg.valid_quantile, method="lower")),
          int(np.quantile(t, cfg.test_quantile, method="lower")))
  split = np.where(t >= cuts[1], 2, np.where(t >= cuts[0], 1, 0))
  if cuts[0] == cuts[1]:
    split = np.where(t >= cuts[1], 2, 0)     # no room for a valid split
  return split.astype(np.int8), cuts


def candidate_mask(seqs: UserSequences, cfg: RankingSplit, split: str) -> tuple[np.ndarray, tuple[int, int] | None]:
  """Which events are candidates of `split` -> (bool [E], time_cut's (valid, test) cut): the event's
  split, position >= min_history, and for training the newest train_k training events per user."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  splits, cuts = event_splits(seqs, cfg)
  user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)
  pos = np.arange(len(seqs.items)) - seqs.offsets[user_of]
  is_cand = (splits == SPLITS.index(split)) & (pos >= cfg.min_history)
  if split == "train" and cfg.train_k:
    # A user's training events are positions 0 .. n_train - 1; keep the newest train_k of them.
    n_train = np.bincount(user_of[splits == 0], minlength=seqs.num_users)
    is_cand &= pos >= n_train[user_of] - cfg.train_k
  return is_cand, cuts


def ranking_examples(seqs: UserSequences, cfg: RankingSplit, split: str,
                     context: ContextTables | None = None) -> RankingExamples:
  """The requests of one split (module docstring); `context` adds user_feats and cand_feats."""
  labels = event_labels(seqs, cfg.tasks)
  is_cand, cuts = candidate_mask(seqs, cfg, split)
  e = len(seqs.items)
  user_of = np.repeat(np.arange(seqs.num_users), seqs.lengths)
  cand = np.flatnonzero(is_cand)
  # Requests: consecutive candidates of one user, request_size at a time. A user's candidates of one
  # split are consecutive events (the split is monotone in time along a user's history).
  cu = user_of[cand]
  first_of_user = np.ones(len(cand), bool)
  first_of_user[1:] = cu[1:] != cu[:-1]
  rank = np.arange(len(cand)) - np.flatnonzero(first_of_user)[np.cumsum(first_of_user) - 1]
  slot = rank % cfg.request_size
  req = np.cumsum(slot == 0) - 1
  n, c, h = int(req[-1]) + 1 if len(req) else 0, cfg.request_size, cfg.history_len
  first = cand[slot == 0]                                   # first candidate event of each request
  ru = user_of[first]
  # History: the <= H events right before the request's first candidate, oldest first.
  start = np.maximum(first - h, seqs.offsets[ru])
  hist_len = (first - start).astype(np.int32)
  t0 = int(seqs.timestamps.min()) if seqs.timestamps is not None and e else 0
  rel_time = (np.zeros(e, np.int64) if seqs.timestamps is None else seqs.timestamps - t0).astype(np.int32)
  tab = (np.asarray(seqs.extras["tab"], np.int32) + 1 if "tab" in seqs.extras else np.zeros(e, np.int32))
  ratio = watch_ratio(seqs)
  bucket = (np.zeros(e, np.int32) if ratio is None
            else (np.searchsorted(WATCH_EDGES, ratio, side="right") + 1).astype(np.int32))
  actions = pack_bits(labels)

  ragged = cfg.history_layout == "ragged"
  if ragged:   # no [N, H] arrays: one start per request, the event columns once
    item_feats = (context.item_feats if context is not None
                  else np.zeros((seqs.num_items, 0), np.int32))
    history = RaggedHistory({"hist_ids": seqs.items.astype(np.int32), "hist_actions": actions,
                             "hist_watch": bucket, "hist_tab": tab, "hist_times": rel_time},
                            item_feats, cfg.buckets())
  else:
    cols = np.arange(h)[None, :]
    valid = cols < hist_len[:, None]
    hidx = np.where(valid, start[:, None] + cols, 0)

  def hist(values):
    return np.where(valid, values[hidx], 0).astype(values.dtype)

  cand_event = np.full((n, c), -1, np.int64)
  cand_event[req, slot] = cand
  cmask = cand_event >= 0
  cidx = np.where(cmask, cand_event, 0)

  def cands(values):
    out = values[cidx]
    return np.where(cmask.reshape(cmask.shape + (1,) * (out.ndim - 2)), out, 0).astype(values.dtype)

  arrays = {
      "user_ids": seqs.user_ids[ru].astype(np.int64), "user_index": ru.astype(np.int64),
      "hist_lengths": hist_len, "request_times": rel_time[first],
      "cand_ids": cands(seqs.items.astype(np.int32)), "cand_mask": cmask.astype(np.float32),
      "cand_tab": cands(tab), "cand_labels": cands(labels),
      "cand_watch_ratio": cands(np.zeros(e, np.float32) if ratio is None else ratio),
      "cand_event": cand_event,
  }
  if ragged:
    arrays["hist_start"] = start.astype(np.int64)
  else:
    arrays.update({"hist_ids": hist(seqs.items.astype(np.int32)), "hist_actions": hist(actions),
                   "hist_watch": hist(bucket), "hist_tab": hist(tab), "hist_times": hist(rel_time)})
  if context is not None:
    if len(context.user_feats) != seqs.num_users or len(context.item_feats) != seqs.num_items:
      raise ValueError(f"{seqs.source}: context tables have {len(context.user_feats)} users / "
                       f"{len(context.item_feats)} items, the sequences {seqs.num_users} / {seqs.num_items}")
    arrays["user_feats"] = context.user_feats[ru]
    arrays["cand_feats"] = context.item_feats[arrays["cand_ids"]]   # row 0 (padding) is all 0
    if not ragged:
      arrays["hist_feats"] = context.item_feats[arrays["hist_ids"]]
  else:
    arrays["user_feats"] = np.zeros((n, 0), np.int32)
    arrays["cand_feats"] = np.zeros((n, c, 0), np.int32)
    if not ragged:
      arrays["hist_feats"] = np.zeros((n, h, 0), np.int32)
  return RankingExamples(split, cfg.task_names, arrays, cuts, history if ragged else None)
