"""Readers for the official GroupLens MovieLens files (ML-100K, ML-1M, ML-20M) and for the
ML-1M sequence copy kept in shared/data/ml-1m (see its PROVENANCE.md).

Ids: MovieIDs start at 1 and are kept unchanged as model ids (0 = padding), so results line up with
the HSTU reference code. `num_items` = max(MovieID in the movie table and the ratings) + 1, and
`candidate_items` = every MovieID listed in the movie table when that file is present (ML-1M:
3,883 movies, 3,953 embedding rows) -- the HSTU protocol ranks exactly the movies.dat ids.

Every row is validated; any problem raises DataError naming file, line and field. Nothing is
silently dropped.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from recjax.data.errors import DataError
from recjax.data.sequences import sequences_from_interactions
from recjax.data.text_sequences import (NumericTable, check_header, check_range, parse_int,
                                        read_lines, read_numeric_table, read_text_table)
from recjax.data.types import Interactions, UserSequences

MAX_MOVIE_ID = 2**31 - 2        # items are stored as int32 model ids
ML1M_SEQUENCES = "sequences.tsv.gz"
ML1M_TIMESTAMPS = "timestamps_users1-2999.tsv.gz"
ML1M_RATINGS_CHRONO = "ratings_chronological_users1-2999.tsv.gz"
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


# ---------------------------------------------------------------------------------------------
# Ratings files
# ---------------------------------------------------------------------------------------------

def _check_ratings(table: NumericTable, user: str, item: str, rating: str, timestamp: str,
                   half_stars: bool) -> None:
  """Id, rating and timestamp ranges shared by every ratings format."""
  table.check_range(user, low=1, what="user id")
  table.check_range(item, low=1, high=MAX_MOVIE_ID, what="movie id")
  table.check_range(rating, low=0.5 if half_stars else 1, high=5, what="rating")
  table.check_range(timestamp, low=0, what="timestamp")
  if half_stars:
    r = table[rating]
    bad = (r * 2) != np.round(r * 2)
    if bad.any():
      i = int(np.argmax(bad))
      raise DataError(table.path, f"rating {r[i]} is not a multiple of 0.5",
                      line=table.first_line + i, field=rating)


def _interactions(table: NumericTable, user: str, item: str, rating: str, timestamp: str
                  ) -> Interactions:
  items = table[item]
  return Interactions(user=table[user], item=items, timestamp=table[timestamp], source=table.path,
                      num_items=int(items.max()) + 1,
                      extras={"rating": table[rating].astype(np.float32)})


def read_ml1m_ratings(path: str | os.PathLike) -> Interactions:
  """ML-1M `ratings.dat`: `UserID::MovieID::Rating::Timestamp`, no header, whole-star ratings.

  Returns:
    Interactions (file order) with extras["rating"] float32 [E].
  """
  cols = ("UserID", "MovieID", "Rating", "Timestamp")
  table = read_numeric_table(path, cols, sep="::", header=False)
  _check_ratings(table, *cols, half_stars=False)
  return _interactions(table, *cols)


def read_ml100k_ratings(path: str | os.PathLike) -> Interactions:
  """ML-100K `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`, no header."""
  cols = ("user_id", "item_id", "rating", "timestamp")
  table = read_numeric_table(path, cols, sep="\t", header=False)
  _check_ratings(table, *cols, half_stars=False)
  return _interactions(table, *cols)


def read_ml20m_ratings(path: str | os.PathLike) -> Interactions:
  """ML-20M `ratings.csv`: header `userId,movieId,rating,timestamp`, half-star ratings."""
  cols = ("userId", "movieId", "rating", "timestamp")
  table = read_numeric_table(path, cols, sep=",", header=True, float_columns=("rating",))
  _check_ratings(table, *cols, half_stars=True)
  return _interactions(table, *cols)


# ---------------------------------------------------------------------------------------------
# Movie and user tables
# ---------------------------------------------------------------------------------------------

def _movie_ids(path: str, values: list[str], lines: list[int], field: str) -> np.ndarray:
  """Parses and checks a movie-id column: integers in 1..MAX_MOVIE_ID, no duplicates."""
  ids = np.array([parse_int(path, v, line=ln, field=field) for v, ln in zip(values, lines)], np.int64)
  check_range(path, ids, field=field, first_line=lines[0], low=1, high=MAX_MOVIE_ID, what="movie id")
  _check_unique(path, ids, lines, field)
  return ids


def _check_unique(path: str, ids: np.ndarray, lines: list[int], field: str) -> None:
  _, first, counts = np.unique(ids, return_index=True, return_counts=True)
  if np.any(counts > 1):
    dup_value = ids[first[np.argmax(counts > 1)]]
    where = [ln for v, ln in zip(ids.tolist(), lines) if v == dup_value]
    raise DataError(path, f"id {dup_value} is listed twice (lines {where[0]} and {where[1]})",
                    line=where[1], field=field)


def _genre_tuples(values: list[str]) -> np.ndarray:
  """'A|B' strings -> object [M] array of ('A', 'B') tuples (built element-wise so numpy does
  not turn equal-length tuples into a 2-D array)."""
  out = np.empty(len(values), object)
  for i, g in enumerate(values):
    out[i] = tuple(g.split("|"))
  return out


def read_ml1m_movies(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """ML-1M `movies.dat` (latin-1): `MovieID::Title::Genres`, Genres '|'-separated.

  Returns:
    {"movie_id": int64 [M], "title": object [M], "genres": object [M] (tuples of str)}.
  """
  t = read_text_table(path, ("MovieID", "Title", "Genres"), sep="::", header=False, encoding="latin-1")
  return {"movie_id": _movie_ids(t.path, t.column("MovieID"), t.lines, "MovieID"),
          "title": t.str_column("Title"),
          "genres": _genre_tuples(t.column("Genres"))}


def read_ml1m_users(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """ML-1M `users.dat`: `UserID::Gender::Age::Occupation::Zip-code`.

  Returns:
    {"user_id","age","occupation": int64 [U], "gender","zip": object [U]}.
  """
  t = read_text_table(path, ("UserID", "Gender", "Age", "Occupation", "Zip-code"), sep="::",
                      header=False, encoding="latin-1")
  user_id = t.int_column("UserID")
  check_range(t.path, user_id, field="UserID", first_line=t.lines[0], low=1, what="user id")
  _check_unique(t.path, user_id, t.lines, "UserID")
  gender = t.str_column("Gender")
  for g, ln in zip(gender, t.lines):
    if g not in ("M", "F"):
      raise DataError(t.path, f"gender '{g}' is not M or F", line=ln, field="Gender")
  return {"user_id": user_id, "gender": gender, "age": t.int_column("Age"),
          "occupation": t.int_column("Occupation"), "zip": t.str_column("Zip-code")}


def read_ml100k_items(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """ML-100K `u.item` (latin-1, '|'-separated): id, title, release date, video release date,
  IMDb URL, then 19 genre flags.

  Returns:
    {"movie_id": int64 [M], "title", "release_date", "imdb_url": object [M],
     "genres": int8 [M, 19] (0/1, order ML100K_GENRES)}.
  """
  names = ("movie_id", "title", "release_date", "video_release_date", "imdb_url") + ML100K_GENRES
  t = read_text_table(path, names, sep="|", header=False, encoding="latin-1")
  genres = np.stack([t.int_column(g) for g in ML100K_GENRES], axis=1)
  bad = (genres != 0) & (genres != 1)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise DataError(t.path, f"genre flag {genres[i, j]} is not 0 or 1", line=t.lines[i],
                    field=ML100K_GENRES[j])
  return {"movie_id": _movie_ids(t.path, t.column("movie_id"), t.lines, "movie_id"),
          "title": t.str_column("title"), "release_date": t.str_column("release_date"),
          "imdb_url": t.str_column("imdb_url"), "genres": genres.astype(np.int8)}


def read_ml100k_users(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """ML-100K `u.user`: `user id|age|gender|occupation|zip code`."""
  t = read_text_table(path, ("user_id", "age", "gender", "occupation", "zip"), sep="|", header=False,
                      encoding="latin-1")
  user_id = t.int_column("user_id")
  check_range(t.path, user_id, field="user_id", first_line=t.lines[0], low=1, what="user id")
  _check_unique(t.path, user_id, t.lines, "user_id")
  age = t.int_column("age")
  check_range(t.path, age, field="age", first_line=t.lines[0], low=0, high=150, what="age")
  return {"user_id": user_id, "age": age, "gender": t.str_column("gender"),
          "occupation": t.str_column("occupation"), "zip": t.str_column("zip")}


def read_ml20m_movies(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """ML-20M `movies.csv` (UTF-8, quoted CSV): header `movieId,title,genres`."""
  t = read_text_table(path, ("movieId", "title", "genres"), sep=",", header=True, quoted=True)
  return {"movie_id": _movie_ids(t.path, t.column("movieId"), t.lines, "movieId"),
          "title": t.str_column("title"),
          "genres": _genre_tuples(t.column("genres"))}


# ---------------------------------------------------------------------------------------------
# Joining ratings with the movie table
# ---------------------------------------------------------------------------------------------

def _unlisted(values: np.ndarray, known: np.ndarray) -> int | None:
  """Index of the first value missing from the sorted catalogue `known`, or None."""
  pos = np.clip(np.searchsorted(known, values), 0, len(known) - 1)
  bad = known[pos] != values
  return int(np.argmax(bad)) if bad.any() else None


def _check_listed(path: str, values: np.ndarray, known: np.ndarray, *, first_line: int, field: str,
                  table_path: str) -> None:
  """Every id in the column `values` (row i on line first_line + i) must be in `known`."""
  i = _unlisted(values, known)
  if i is not None:
    raise DataError(path, f"movie id {values[i]} is not listed in {table_path}", line=first_line + i,
                    field=field)


def _join_catalogue(inter: Interactions, movie_ids: np.ndarray, table_path: str, *, item_field: str,
                    first_line: int) -> Interactions:
  known = np.sort(movie_ids)
  _check_listed(inter.source, inter.item, known, first_line=first_line, field=item_field,
                table_path=table_path)
  num_items = int(max(known.max(), inter.item.max())) + 1
  return Interactions(user=inter.user, item=inter.item, timestamp=inter.timestamp,
                      source=f"{inter.source} + {table_path}", num_items=num_items,
                      candidate_items=known, extras=inter.extras)


# ---------------------------------------------------------------------------------------------
# The ML-1M sequence copy in shared/data/ml-1m
# ---------------------------------------------------------------------------------------------

def _read_id_lines(path: str, header: Sequence[str], field: str) -> tuple[list[int], list[np.ndarray], list[int]]:
  """Reads `user<TAB>v v v ...` lines after a fixed header.

  Returns:
    (users, per-user int64 value arrays, line numbers).
  """
  users, values, lines, seen = [], [], [], {}
  for line, text in read_lines(path):
    if line == 1:
      check_header(path, text.split("\t"), header)
      continue
    parts = text.split("\t")
    if len(parts) != 2:
      raise DataError(path, f"expected 2 TAB-separated fields ({', '.join(header)}), found {len(parts)}",
                      line=line)
    user = parse_int(path, parts[0], line=line, field=header[0])
    if user < 1:
      raise DataError(path, f"user id {user} must be >= 1", line=line, field=header[0])
    if user in seen:
      raise DataError(path, f"user {user} already appeared on line {seen[user]}", line=line, field=header[0])
    seen[user] = line
    tokens = parts[1].split(" ")
    if tokens == [""]:
      raise DataError(path, "empty sequence", line=line, field=field)
    try:
      arr = np.array(tokens).astype(np.int64)
      clean = all(t.isdigit() and t.isascii() for t in tokens)
    except (ValueError, OverflowError):
      clean = False
    if not clean:
      for k, tok in enumerate(tokens):
        parse_int(path, tok, line=line, field=f"{field}[{k}]")
        if tok.startswith("-"):
          raise DataError(path, f"value {tok} is negative", line=line, field=f"{field}[{k}]")
    users.append(user)
    values.append(arr)
    lines.append(line)
  if not users:
    raise DataError(path, "no data rows after the header")
  return users, values, lines


def _check_line_values(path: str, values: np.ndarray, *, line: int, field: str, low: int, high: int,
                       what: str) -> None:
  """Range check of the values listed on one line; the error names the position in the line."""
  bad = (values < low) | (values > high)
  if bad.any():
    k = int(np.argmax(bad))
    raise DataError(path, f"{what} {values[k]} is out of range [{low}, {high}]", line=line,
                    field=f"{field}[{k}]")


def _aligned(path: str, users: list[int], values: list[np.ndarray], lines: list[int],
             seq_index: dict[int, int], seq_values: list[np.ndarray], seq_path: str, what: str) -> None:
  """Checks that every user of a side file has a sequence of exactly the same length."""
  for user, v, line in zip(users, values, lines):
    if user not in seq_index:
      raise DataError(path, f"user {user} has {what} but no sequence in {seq_path}", line=line,
                      field="user_id")
    n_seq = len(seq_values[seq_index[user]])
    if len(v) != n_seq:
      raise DataError(path, f"user {user} has {len(v)} {what} but {n_seq} items in {seq_path}",
                      line=line, field=f"{what}_chronological")


def read_ml1m_sequences(data_dir: str | os.PathLike, *, with_timestamps: bool) -> UserSequences:
  """Reads shared/data/ml-1m: `sequences.tsv.gz` (+ movies.dat, + the users 1-2999 timestamps).

  Args:
    data_dir: folder holding sequences.tsv.gz (and, when present, movies.dat,
      timestamps_users1-2999.tsv.gz, ratings_chronological_users1-2999.tsv.gz).
    with_timestamps: False -> all users (6,040 in the full copy), timestamps=None.
      True -> only the users listed in the timestamps file (1-2999), with their real unix-second
      timestamps (and extras["rating"] when the ratings file is present).
  Returns:
    UserSequences, users in file order (ascending UserID in the shared copy).
  """
  data_dir = os.fspath(data_dir)
  seq_path = os.path.join(data_dir, ML1M_SEQUENCES)
  users, seqs, lines = _read_id_lines(seq_path, ("user_id", "movie_ids_chronological"), "movie_ids")
  for v, line in zip(seqs, lines):
    _check_line_values(seq_path, v, line=line, field="movie_ids", low=1, high=MAX_MOVIE_ID, what="movie id")
  num_items = int(max(int(v.max()) for v in seqs)) + 1
  candidates, source = None, seq_path
  movies_path = os.path.join(data_dir, "movies.dat")
  if os.path.exists(movies_path):
    known = np.sort(read_ml1m_movies(movies_path)["movie_id"])
    for v, line in zip(seqs, lines):
      k = _unlisted(v, known)
      if k is not None:
        raise DataError(seq_path, f"movie id {v[k]} is not listed in {movies_path}", line=line,
                        field=f"movie_ids[{k}]")
    num_items, candidates, source = max(num_items, int(known.max()) + 1), known, f"{seq_path} + {movies_path}"
  if not with_timestamps:
    return _pack(users, seqs, None, {}, num_items, candidates, source)
  return _with_ml1m_timestamps(data_dir, users, seqs, num_items, candidates, source)


def _with_ml1m_timestamps(data_dir: str, users: list[int], seqs: list[np.ndarray], num_items: int,
                          candidates: np.ndarray | None, source: str) -> UserSequences:
  """Keeps the users of the timestamps file, attaching their (validated) timestamps/ratings."""
  seq_path = os.path.join(data_dir, ML1M_SEQUENCES)
  ts_path = os.path.join(data_dir, ML1M_TIMESTAMPS)
  if not os.path.exists(ts_path):
    raise DataError(ts_path, "file not found (needed for with_timestamps=True)")
  seq_index = {u: k for k, u in enumerate(users)}
  ts_users, ts_values, ts_lines = _read_id_lines(ts_path, ("user_id", "timestamps_chronological"),
                                                 "timestamps")
  _aligned(ts_path, ts_users, ts_values, ts_lines, seq_index, seqs, seq_path, "timestamps")
  for v, line in zip(ts_values, ts_lines):
    dec = np.flatnonzero(np.diff(v) < 0)
    if len(dec):
      raise DataError(ts_path, f"timestamps decrease at position {int(dec[0]) + 1} "
                      f"({v[dec[0]]} -> {v[dec[0] + 1]})", line=line, field=f"timestamps[{int(dec[0]) + 1}]")
  extras: dict[str, list[np.ndarray]] = {}
  rt_path = os.path.join(data_dir, ML1M_RATINGS_CHRONO)
  if os.path.exists(rt_path):
    extras["rating"] = _ml1m_side_ratings(rt_path, ts_users, seq_index, seqs, seq_path)
  order = sorted(range(len(ts_users)), key=lambda i: seq_index[ts_users[i]])   # sequence-file order
  return _pack([ts_users[i] for i in order], [seqs[seq_index[ts_users[i]]] for i in order],
               [ts_values[i] for i in order], {k: [v[i] for i in order] for k, v in extras.items()},
               num_items, candidates, f"{source} + {ts_path}")


def _ml1m_side_ratings(rt_path: str, ts_users: list[int], seq_index: dict[int, int],
                       seqs: list[np.ndarray], seq_path: str) -> list[np.ndarray]:
  """Ratings aligned with the timestamps file's users, in that file's user order."""
  rt_users, rt_values, rt_lines = _read_id_lines(rt_path, ("user_id", "ratings_chronological"), "ratings")
  _aligned(rt_path, rt_users, rt_values, rt_lines, seq_index, seqs, seq_path, "ratings")
  if sorted(rt_users) != sorted(ts_users):
    raise DataError(rt_path, f"lists {len(rt_users)} users, the timestamps file lists {len(ts_users)}; "
                    "they must list the same users")
  for v, line in zip(rt_values, rt_lines):
    _check_line_values(rt_path, v, line=line, field="ratings", low=1, high=5, what="rating")
  by_user = dict(zip(rt_users, rt_values))
  return [by_user[u].astype(np.float32) for u in ts_users]


def _pack(users: list[int], seqs: list[np.ndarray], times: list[np.ndarray] | None,
          extras: dict[str, list[np.ndarray]], num_items: int, candidates: np.ndarray | None,
          source: str) -> UserSequences:
  """Lists of per-user arrays -> CSR UserSequences."""
  offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
  return UserSequences(
      user_ids=np.array(users, np.int64), offsets=offsets,
      items=np.concatenate(seqs).astype(np.int32),
      timestamps=None if times is None else np.concatenate(times).astype(np.int64),
      num_items=num_items, source=source, candidate_items=candidates,
      extras={k: np.concatenate(v) for k, v in extras.items()})


# ---------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------

def _ratings_with_movies(ratings: Interactions, movies_path: str, read_movies, *, item_field: str,
                         first_line: int) -> Interactions:
  if not os.path.exists(movies_path):
    return ratings
  return _join_catalogue(ratings, read_movies(movies_path)["movie_id"], movies_path,
                         item_field=item_field, first_line=first_line)


def load_movielens(name: str, data_dir: str | os.PathLike, *, with_timestamps: bool = False
                   ) -> UserSequences:
  """Loads a MovieLens dataset from the official files in `data_dir` as time-ordered sequences.

  Args:
    name: "ml-1m" (uses ratings.dat when present, else the sequences.tsv.gz copy), "ml-100k"
      (u.data + u.item) or "ml-20m" (ratings.csv + movies.csv).
    with_timestamps: only for the ML-1M sequence copy: keep users 1-2999 with real timestamps
      (see read_ml1m_sequences). The ratings files always carry timestamps.
  Returns:
    UserSequences, users in ascending UserID order; ratings files add extras["rating"].
  """
  data_dir = os.fspath(data_dir)
  if name == "ml-1m":
    ratings_path = os.path.join(data_dir, "ratings.dat")
    if not os.path.exists(ratings_path):
      if not os.path.exists(os.path.join(data_dir, ML1M_SEQUENCES)):
        raise DataError(data_dir, f"neither ratings.dat (official ML-1M) nor {ML1M_SEQUENCES} (the shared "
                        "copy) found; run scripts/download_movielens.sh or point data_dir at a copy")
      return read_ml1m_sequences(data_dir, with_timestamps=with_timestamps)
    inter = _ratings_with_movies(read_ml1m_ratings(ratings_path), os.path.join(data_dir, "movies.dat"),
                                 read_ml1m_movies, item_field="MovieID", first_line=1)
  elif name == "ml-100k":
    inter = _ratings_with_movies(read_ml100k_ratings(os.path.join(data_dir, "u.data")),
                                 os.path.join(data_dir, "u.item"), read_ml100k_items,
                                 item_field="item_id", first_line=1)
  elif name == "ml-20m":
    inter = _ratings_with_movies(read_ml20m_ratings(os.path.join(data_dir, "ratings.csv")),
                                 os.path.join(data_dir, "movies.csv"), read_ml20m_movies,
                                 item_field="movieId", first_line=2)
  else:
    raise ValueError(f"unknown MovieLens dataset {name!r}; expected 'ml-1m', 'ml-100k' or 'ml-20m'")
  return sequences_from_interactions(inter)


def item_content(name: str, data_dir: str, item_ids) -> tuple[list[str], list[list[str]]]:
  """(titles, genre lists) of `item_ids`, in their order, from the item file of MovieLens `name`
  ("ml-1m": movies.dat, "ml-100k": u.item) under `data_dir`: the content of semantic IDs."""
  if name == "ml-1m":
    path = os.path.join(data_dir, "movies.dat")
    items = read_ml1m_movies(path)
    genres = [list(g) for g in items["genres"]]
  elif name == "ml-100k":
    path = os.path.join(data_dir, "u.item")
    items = read_ml100k_items(path)
    genres = [[g for g, on in zip(ML100K_GENRES, row) if on] for row in items["genres"]]
  else:
    raise ValueError(f"item content is read from ml-1m movies.dat or ml-100k u.item, not {name!r}")
  row_of = {int(m): r for r, m in enumerate(items["movie_id"])}
  missing = [int(v) for v in item_ids if int(v) not in row_of]
  if missing:
    raise ValueError(f"{path}: {len(missing)} catalogue item(s) have no row, e.g. movie id {missing[0]}")
  rows = [row_of[int(v)] for v in item_ids]
  return [items["title"][r] for r in rows], [genres[r] for r in rows]
