"""Reader for the official KuaiRand release (Pure, 1K, 27K; Gao et al., CIKM 2022).

Layout (after `tar xzf KuaiRand-Pure.tar.gz`): KuaiRand-Pure/data/ holds
  log_standard_4_08_to_4_21_pure.csv, log_standard_4_22_to_5_08_pure.csv,
  log_random_4_22_to_5_08_pure.csv, user_features_pure.csv, video_features_basic_pure.csv, ...
(1K uses the `_1k` suffix, 27K `_27k` and splits the standard logs into `_part1`, `_part2`).
`data_dir` may be the release folder or its `data/` folder.
Log columns are found by their header names, in any order (each official column exactly once;
missing, repeated or extra columns are errors naming the file and the column).

Conversion into recjax conventions:
  * model item id = video_id + 1 (video ids start at 0; 0 is padding);
  * timestamp = time_ms // 1000 (unix seconds); events are ordered by (user_id, time_ms), file
    order breaking exact ties, so sub-second order survives the conversion to seconds;
  * the 8 binary feedbacks are folded into one action bitmask (Meta's DLRM-v3 KuaiRand tasks):
    is_click=1, is_like=2, is_follow=4, is_comment=8, is_forward=16, is_hate=32, long_view=64,
    is_profile_enter=128, stored in extras["actions"]; extras also keep play_time_ms,
    duration_ms, tab and is_rand.
"""
from __future__ import annotations

import os
import re

import numpy as np

from recjax.data.errors import DataError
from recjax.data.sequences import sequences_from_interactions
from recjax.data.text_sequences import (NumericTable, TextTable, check_header, check_range, open_binary,
                                        read_numeric_table, read_text_table)
from recjax.data.types import Interactions, UserSequences

LOG_COLUMNS = ("user_id", "video_id", "date", "hourmin", "time_ms", "is_click", "is_like", "is_follow",
               "is_comment", "is_forward", "is_hate", "long_view", "play_time_ms", "duration_ms",
               "profile_stay_time", "comment_stay_time", "is_profile_enter", "is_rand", "tab")
ACTION_BITS = {"is_click": 1, "is_like": 2, "is_follow": 4, "is_comment": 8, "is_forward": 16,
               "is_hate": 32, "long_view": 64, "is_profile_enter": 128}
BINARY_COLUMNS = tuple(ACTION_BITS) + ("is_rand",)
NON_NEGATIVE_COLUMNS = ("time_ms", "play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time")
MAX_TAB = 14   # the README: tab in [0, 14]
USER_FEATURE_COLUMNS = (
    "user_id", "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author",
    "follow_user_num", "follow_user_num_range", "fans_user_num", "fans_user_num_range",
    "friend_user_num", "friend_user_num_range", "register_days", "register_days_range",
    *(f"onehot_feat{i}" for i in range(18)))
USER_STRING_COLUMNS = ("user_active_degree", "follow_user_num_range", "fans_user_num_range",
                       "friend_user_num_range", "register_days_range")
VIDEO_FEATURE_COLUMNS = ("video_id", "author_id", "video_type", "upload_dt", "upload_type",
                         "visible_status", "video_duration", "server_width", "server_height",
                         "music_id", "music_type", "tag")
VIDEO_STRING_COLUMNS = ("video_type", "upload_dt", "upload_type", "tag")
VARIANTS = ("pure", "1k", "27k")
LOG_KINDS = {"standard": ("standard",), "random": ("random",), "all": ("standard", "random")}
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

def _check_variant(variant: str) -> None:
  """The official variants are VARIANTS; synthetic worlds use their own suffix (e.g. "synth")."""
  if not (variant.isascii() and variant.isalnum() and variant.islower()):
    raise ValueError(f"variant must be lowercase letters/digits (official: {VARIANTS}), got {variant!r}")


def _log_name_re(variant: str, kind: str) -> re.Pattern:
  return re.compile(rf"log_{kind}_\d+_\d+_to_\d+_\d+_{re.escape(variant)}(_part\d+)?\.csv(\.gz)?")


def resolve_data_dir(data_dir: str | os.PathLike) -> str:
  """The folder holding the CSVs: `data_dir` itself, or its `data/` subfolder when that exists."""
  data_dir = os.fspath(data_dir)
  if not os.path.isdir(data_dir):
    raise DataError(data_dir, "KuaiRand data folder not found")
  sub = os.path.join(data_dir, "data")
  if os.path.isdir(sub) and any(n.endswith((".csv", ".csv.gz")) for n in os.listdir(sub)):
    return sub
  return data_dir


def find_log_files(data_dir: str | os.PathLike, variant: str = "pure", logs: str = "standard") -> list[str]:
  """Paths of the log CSVs of `variant` selected by `logs` ("standard", "random" or "all"), sorted."""
  _check_variant(variant)
  if logs not in LOG_KINDS:
    raise ValueError(f"logs must be one of {tuple(LOG_KINDS)}, got {logs!r}")
  folder = resolve_data_dir(data_dir)
  names = sorted(os.listdir(folder))
  paths = []
  for kind in LOG_KINDS[logs]:
    pattern = _log_name_re(variant, kind)
    found = [n for n in names if pattern.fullmatch(n)]
    if not found:
      raise DataError(folder, f"no {kind} log file for KuaiRand-{variant} (expected names like "
                      f"log_{kind}_4_22_to_5_08_{variant}.csv)")
    paths += [os.path.join(folder, n) for n in found]
  return paths


def _feature_file(path: str | os.PathLike, variant: str, stem: str) -> str:
  """`path` if it is a file, else <data folder>/<stem>_<variant>.csv."""
  path = os.fspath(path)
  if os.path.isfile(path):
    return path
  _check_variant(variant)
  return os.path.join(resolve_data_dir(path), f"{stem}_{variant}.csv")


# ---------------------------------------------------------------------------------------------
# Logs
# ---------------------------------------------------------------------------------------------

def _check_log(t: NumericTable) -> None:
  """Ranges of every log column; the first bad row raises with its line and field."""
  t.check_range("user_id", low=0, what="user id")
  t.check_range("video_id", low=0, high=2**31 - 3, what="video id")
  for c in BINARY_COLUMNS:
    t.check_range(c, low=0, high=1, what="flag")
  for c in NON_NEGATIVE_COLUMNS:
    t.check_range(c, low=0, what="value")
  t.check_range("tab", low=0, high=MAX_TAB, what="tab")
  _check_date_hourmin(t)


def _check_date_hourmin(t: NumericTable) -> None:
  """date must be a YYYYMMDD calendar day, hourmin an HHMM clock time."""
  date, hm = t["date"], t["hourmin"]
  year, month, day = date // 10000, (date // 100) % 100, date % 100
  bad = (year < 2000) | (year > 2100) | (month < 1) | (month > 12) | (day < 1) | (day > 31)
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(t.path, f"date {date[i]} is not a YYYYMMDD date", line=t.first_line + i, field="date")
  bad = (hm < 0) | (hm // 100 > 23) | (hm % 100 > 59)
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(t.path, f"hourmin {hm[i]} is not an HHMM time", line=t.first_line + i, field="hourmin")


def action_bitmask(columns: dict[str, np.ndarray]) -> np.ndarray:
  """Folds the 8 binary feedback columns into one bitmask -> int32 [E] in 0..255."""
  mask = np.zeros(len(columns["is_click"]), np.int32)
  for name, bit in ACTION_BITS.items():
    mask |= columns[name].astype(np.int32) * bit
  return mask


def decode_actions(mask: np.ndarray) -> dict[str, np.ndarray]:
  """Inverse of action_bitmask: {feedback name: bool [E]}."""
  return {name: (np.asarray(mask) & bit) != 0 for name, bit in ACTION_BITS.items()}


def _log_column_order(path: str) -> list[str]:
  """The log's columns in file order: its header must name each of LOG_COLUMNS once, in any order.

  Extra columns are rejected, not skipped: every log column is parsed as an integer, and an
  unknown column is more likely a different file format than harmless surplus.
  """
  with open_binary(path) as f:
    raw = f.readline()
  if not raw:
    raise DataError(path, "empty file")
  found = raw.decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff").split(",")
  twice = sorted({c for c in found if found.count(c) > 1})
  if twice:
    raise DataError(path, f"header names column(s) {', '.join(twice)} more than once", line=1)
  if sorted(found) != sorted(LOG_COLUMNS):
    check_header(path, found, LOG_COLUMNS)   # raises, naming the missing and unexpected columns
  return found


def read_log(path: str | os.PathLike) -> NumericTable:
  """Reads and validates one log CSV, its columns found by header name (any order).

  Returns:
    NumericTable with the LOG_COLUMNS as int64 [E] columns, rows in file order.
  """
  path = os.fspath(path)
  table = read_numeric_table(path, _log_column_order(path), sep=",", header=True)
  _check_log(table)
  return table


def _check_listed_videos(t: NumericTable, video_ids: np.ndarray, features_path: str) -> None:
  """Every log video_id must be in the video feature table (sorted ids)."""
  v = t["video_id"]
  pos = np.clip(np.searchsorted(video_ids, v), 0, len(video_ids) - 1)
  bad = video_ids[pos] != v
  if bad.any():
    i = int(np.argmax(bad))
    raise DataError(t.path, f"video id {v[i]} is not listed in {features_path}",
                    line=t.first_line + i, field="video_id")


def log_interactions(tables: list[NumericTable], *, num_items: int | None = None,
                     candidate_items: np.ndarray | None = None) -> Interactions:
  """Concatenates log tables into Interactions ordered by (user_id, time_ms), file order on ties."""
  cols = {c: np.concatenate([t[c] for t in tables]) for c in LOG_COLUMNS}
  order = np.lexsort((cols["time_ms"], cols["user_id"]))
  cols = {c: v[order] for c, v in cols.items()}
  item = cols["video_id"] + 1
  return Interactions(
      user=cols["user_id"], item=item, timestamp=cols["time_ms"] // 1000,
      source=" + ".join(t.path for t in tables),
      num_items=int(item.max()) + 1 if num_items is None else num_items,
      candidate_items=candidate_items,
      extras={"actions": action_bitmask(cols), "play_time_ms": cols["play_time_ms"],
              "duration_ms": cols["duration_ms"], "tab": cols["tab"].astype(np.int32),
              "is_rand": cols["is_rand"].astype(np.int32)})


def load_kuairand(data_dir: str | os.PathLike, variant: str = "pure", logs: str = "standard", *,
                  use_video_features: bool = True) -> UserSequences:
  """Loads KuaiRand logs as per-user time-ordered sequences.

  Args:
    data_dir: the release folder (or its data/ folder).
    variant: "pure", "1k" or "27k" (or the suffix of a synthetic world, e.g. "synth").
    logs: "standard" (the recommender's own exposures), "random" (the random-exposure log) or
      "all" (both, merged by time).
    use_video_features: when video_features_basic_<variant>.csv is present, check that every
      logged video is listed there and size the catalogue from it (num_items = max video_id + 2,
      candidate_items = listed ids + 1 unless they are exactly 0..N-1).
  Returns:
    UserSequences with timestamps (seconds) and extras actions, play_time_ms, duration_ms, tab,
    is_rand; users in ascending user_id order.
  """
  tables = [read_log(p) for p in find_log_files(data_dir, variant, logs)]
  num_items, candidates = None, None
  features_path = os.path.join(resolve_data_dir(data_dir), f"video_features_basic_{variant}.csv")
  if use_video_features and os.path.exists(features_path):
    video_ids = np.sort(read_video_ids(features_path))
    for t in tables:
      _check_listed_videos(t, video_ids, features_path)
    num_items = int(video_ids[-1]) + 2
    contiguous = video_ids[0] == 0 and len(video_ids) == video_ids[-1] + 1
    candidates = None if contiguous else video_ids + 1
  return sequences_from_interactions(log_interactions(tables, num_items=num_items,
                                                      candidate_items=candidates))


# ---------------------------------------------------------------------------------------------
# Feature tables
# ---------------------------------------------------------------------------------------------

def _typed_columns(t: TextTable, string_columns: tuple[str, ...]) -> dict[str, np.ndarray]:
  """String columns as object arrays; the others int64, or float64 (NaN = empty) when needed."""
  return {c: t.str_column(c) if c in string_columns else t.numeric_column(c) for c in t.names}


def _check_ids(t: TextTable, ids: np.ndarray, field: str) -> None:
  check_range(t.path, ids, field=field, first_line=t.lines[0], low=0, what="id")
  _, first, counts = np.unique(ids, return_index=True, return_counts=True)
  if np.any(counts > 1):
    value = ids[first[np.argmax(counts > 1)]]
    rows = np.flatnonzero(ids == value)
    raise DataError(t.path, f"{field} {value} is listed twice (lines {t.lines[rows[0]]} and "
                    f"{t.lines[rows[1]]})", line=t.lines[rows[1]], field=field)


def read_user_features(path: str | os.PathLike, variant: str = "pure") -> dict[str, np.ndarray]:
  """Reads user_features_<variant>.csv (a file path, or the data folder).

  Returns:
    {column: [U] array} for the 31 official columns: the *_range strings and
    user_active_degree as object arrays, the rest int64 (float64 with NaN where fields are empty).
  """
  t = read_text_table(_feature_file(path, variant, "user_features"), USER_FEATURE_COLUMNS, sep=",",
                      header=True, quoted=True)
  cols = _typed_columns(t, USER_STRING_COLUMNS)
  _check_ids(t, t.int_column("user_id"), "user_id")
  return cols


def read_video_features(path: str | os.PathLike, variant: str = "pure") -> dict[str, np.ndarray]:
  """Reads video_features_basic_<variant>.csv (a file path, or the data folder).

  Returns:
    {column: [V] array} for the 12 official columns; video_id, author_id and music_id int64;
    video_type, upload_dt (YYYY-MM-DD), upload_type and tag (comma-separated ids, may be empty)
    as object arrays; the rest float64 with NaN where empty. Model item id = video_id + 1.
  """
  t = read_text_table(_feature_file(path, variant, "video_features_basic"), VIDEO_FEATURE_COLUMNS,
                      sep=",", header=True, quoted=True)
  cols = _typed_columns(t, VIDEO_STRING_COLUMNS)
  for c in ("video_id", "author_id", "music_id"):
    cols[c] = t.int_column(c)
  _check_ids(t, cols["video_id"], "video_id")
  for d, line in zip(cols["upload_dt"], t.lines):
    if not _DATE_RE.fullmatch(d):
      raise DataError(t.path, f"upload_dt '{d}' is not YYYY-MM-DD", line=line, field="upload_dt")
  return cols


def read_video_ids(path: str | os.PathLike) -> np.ndarray:
  """Only the video_id column of a video feature file (cheap even for the 1K/27K tables).

  Returns:
    int64 [V], file order; validated (integers >= 0, no duplicates).
  """
  path = os.fspath(path)
  with open_binary(path) as f:
    header = f.readline().decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff")
    if not header:
      raise DataError(path, "empty file")
    if header.split(",")[0] != "video_id":
      raise DataError(path, f"first column is '{header.split(',')[0]}', expected 'video_id'", line=1)
    firsts = [raw.split(b",", 1)[0].decode("ascii", "replace") for raw in f]
  t = TextTable(path, ["video_id"], [[v] for v in firsts], list(range(2, len(firsts) + 2)))
  if not firsts:
    raise DataError(path, "no data rows after the header")
  ids = t.int_column("video_id")
  _check_ids(t, ids, "video_id")
  return ids
