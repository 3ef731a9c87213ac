"""MovieLens readers on small hand-written fixtures, their errors, and the real shared copies."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.data import movielens as ml
from recjax.data.errors import DataError
from tests.data.helpers import assert_error, shared_dir, write

ML1M_MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Café (1999)::Drama\n5::Heat (1995)::Action\n"
ML1M_RATINGS = "2::5::4::300\n1::1::5::200\n1::2::3::100\n1::5::1::200\n"
ML100K_ITEM = ("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join("0" * 18) + "|1\n"
               "3|Café (1995)|01-Jan-1995||http://y|" + "|".join("1" + "0" * 18) + "\n")


def _ml1m_dir(tmp_path, ratings=ML1M_RATINGS):
  write(tmp_path, "ml-1m/movies.dat", ML1M_MOVIES, encoding="latin-1")
  write(tmp_path, "ml-1m/ratings.dat", ratings)
  return tmp_path / "ml-1m"


# --------------------------------------------------------------------------------------------
# ML-1M official files
# --------------------------------------------------------------------------------------------

def test_ml1m_ratings_and_movies(tmp_path):
  d = _ml1m_dir(tmp_path)
  inter = ml.read_ml1m_ratings(d / "ratings.dat")
  assert inter.user.tolist() == [2, 1, 1, 1] and inter.extras["rating"].dtype == np.float32
  movies = ml.read_ml1m_movies(d / "movies.dat")
  assert movies["movie_id"].tolist() == [1, 2, 5]
  assert movies["title"][1] == "Café (1999)"                 # latin-1 decoded
  assert movies["genres"][0] == ("Animation", "Children's", "Comedy")


def test_load_ml1m_from_ratings_dat(tmp_path):
  s = ml.load_movielens("ml-1m", _ml1m_dir(tmp_path))
  assert s.user_ids.tolist() == [1, 2]
  assert s.items_of(0).tolist() == [2, 1, 5]                 # by time; the t=200 tie keeps file order
  assert s.timestamps.tolist() == [100, 200, 200, 300]
  assert s.extras["rating"].tolist() == [3, 5, 1, 4]
  assert s.num_items == 6 and s.candidate_items.tolist() == [1, 2, 5]


def test_ml1m_users(tmp_path):
  p = write(tmp_path, "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
  u = ml.read_ml1m_users(p)
  assert u["user_id"].tolist() == [1, 2] and u["gender"].tolist() == ["F", "M"] and u["age"].tolist() == [1, 56]
  bad = write(tmp_path, "bad_users.dat", "1::X::1::10::48067\n")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_users(bad)
  assert_error(e, bad, line=1, field="Gender")


@pytest.mark.parametrize("ratings,line,field,msg", [
    ("1::1::5::1\n1::1::5\n", 2, None, "expected 4 fields separated by '::'"),
    ("1::1::5::1\n1\t1\t5\t1\n", 2, None, "expected 4 fields"),          # wrong delimiter
    ("1::1::5::1\n1::one::5::1\n", 2, "MovieID", "'one' is not an integer"),
    ("1::1::5::1\n1::0::5::1\n", 2, "MovieID", "movie id 0 is out of range"),
    ("1::1::5::1\n-3::1::5::1\n", 2, "UserID", "user id -3 is out of range"),
    ("1::1::5::1\n1::1::6::1\n", 2, "Rating", "rating 6 is out of range"),
    ("1::1::5::1\n1::1::4.5::1\n", 2, "Rating", "'4.5' is not an integer"),
    ("1::1::5::1\n1::1::5::-1\n", 2, "Timestamp", "timestamp -1 is out of range"),
])
def test_ml1m_ratings_errors(tmp_path, ratings, line, field, msg):
  p = write(tmp_path, "ratings.dat", ratings)
  with pytest.raises(DataError) as e:
    ml.read_ml1m_ratings(p)
  assert_error(e, p, line=line, field=field, contains=msg)


def test_ml1m_empty_ratings_and_unlisted_movie(tmp_path):
  p = write(tmp_path, "empty/ratings.dat", "")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_ratings(p)
  assert_error(e, p, contains="empty file")
  d = _ml1m_dir(tmp_path, ratings="1::1::5::1\n1::4::5::2\n")
  with pytest.raises(DataError) as e:
    ml.load_movielens("ml-1m", d)
  assert_error(e, str(d / "ratings.dat"), line=2, field="MovieID", contains="not listed in")


def test_ml1m_movies_errors(tmp_path):
  p = write(tmp_path, "movies.dat", "1::A::Drama\n1::B::Comedy\n")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_movies(p)
  assert_error(e, p, line=2, field="MovieID", contains="listed twice")
  p = write(tmp_path, "movies2.dat", "1::A::Drama\n2::B\n")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_movies(p)
  assert_error(e, p, line=2, contains="expected 3 fields")


# --------------------------------------------------------------------------------------------
# ML-100K
# --------------------------------------------------------------------------------------------

def test_load_ml100k(tmp_path):
  write(tmp_path, "u.data", "5\t3\t4\t20\n5\t1\t2\t10\n6\t1\t5\t30\n")
  write(tmp_path, "u.item", ML100K_ITEM, encoding="latin-1")
  s = ml.load_movielens("ml-100k", tmp_path)
  assert s.user_ids.tolist() == [5, 6] and s.items.tolist() == [1, 3, 1]
  assert s.num_items == 4 and s.candidate_items.tolist() == [1, 3]
  items = ml.read_ml100k_items(tmp_path / "u.item")
  assert items["genres"].shape == (2, 19) and items["genres"][0, -1] == 1 and items["title"][1] == "Café (1995)"


def test_ml100k_users(tmp_path):
  p = write(tmp_path, "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
  assert ml.read_ml100k_users(p)["age"].tolist() == [24, 53]
  bad = write(tmp_path, "bad.user", "1|24|M|technician\n")
  with pytest.raises(DataError) as e:
    ml.read_ml100k_users(bad)
  assert_error(e, bad, line=1, contains="expected 5 fields")


@pytest.mark.parametrize("data,line,field,msg", [
    ("1\t1\t5\t1\n1,1,5,1\n", 2, None, "expected 4 fields separated by TAB"),
    ("1\t1\t5\t1\n1\t1\t0\t1\n", 2, "rating", "rating 0 is out of range"),
    ("1\t1\t5\t1\n1\t99999999999\t5\t1\n", 2, "item_id", "out of range"),
])
def test_ml100k_errors(tmp_path, data, line, field, msg):
  p = write(tmp_path, "u.data", data)
  with pytest.raises(DataError) as e:
    ml.read_ml100k_ratings(p)
  assert_error(e, p, line=line, field=field, contains=msg)


def test_ml100k_item_bad_genre_flag(tmp_path):
  p = write(tmp_path, "u.item", ML100K_ITEM.replace("|1\n", "|2\n", 1), encoding="latin-1")
  with pytest.raises(DataError) as e:
    ml.read_ml100k_items(p)
  assert_error(e, p, line=1, field="Western", contains="not 0 or 1")


# --------------------------------------------------------------------------------------------
# ML-20M
# --------------------------------------------------------------------------------------------

def test_load_ml20m(tmp_path):
  write(tmp_path, "ratings.csv", "userId,movieId,rating,timestamp\n1,10,3.5,5\n1,2,0.5,4\n")
  write(tmp_path, "movies.csv", 'movieId,title,genres\n2,"American President, The (1995)",Comedy|Drama\n'
        "10,GoldenEye (1995)|x,Action\n")
  s = ml.load_movielens("ml-20m", tmp_path)
  assert s.items.tolist() == [2, 10] and s.extras["rating"].tolist() == [0.5, 3.5]
  assert s.num_items == 11 and s.candidate_items.tolist() == [2, 10]
  movies = ml.read_ml20m_movies(tmp_path / "movies.csv")
  assert movies["title"][0] == "American President, The (1995)"


@pytest.mark.parametrize("text,line,field,msg", [
    ("userId,movieId,rating\n1,2,3\n", 1, None, "missing column(s): timestamp"),
    ("userId,movieId,timestamp,rating\n1,2,3,4\n", 1, None, "wrong order"),
    ("userId,movieId,rating,timestamp\n1,2,0.25,1\n", 2, "rating", "out of range"),
    ("userId,movieId,rating,timestamp\n1,2,5.5,1\n", 2, "rating", "out of range"),
    ("userId,movieId,rating,timestamp\n1,2,2.75,1\n", 2, "rating", "not a multiple of 0.5"),
    ("userId,movieId,rating,timestamp\n1,2,3.5,1\n1;2;3.5;1\n", 3, None, "expected 4 fields"),
    ("userId,movieId,rating,timestamp\n", None, None, "no data rows"),
])
def test_ml20m_errors(tmp_path, text, line, field, msg):
  p = write(tmp_path, "ratings.csv", text)
  with pytest.raises(DataError) as e:
    ml.read_ml20m_ratings(p)
  assert_error(e, p, line=line, field=field, contains=msg)


def test_unknown_name_and_missing_files(tmp_path):
  with pytest.raises(ValueError, match="unknown MovieLens dataset"):
    ml.load_movielens("ml-10m", tmp_path)
  with pytest.raises(DataError) as e:
    ml.load_movielens("ml-1m", tmp_path)
  assert_error(e, str(tmp_path), contains="neither ratings.dat")
  with pytest.raises(DataError) as e:
    ml.load_movielens("ml-100k", tmp_path)
  assert_error(e, str(tmp_path / "u.data"), contains="file not found")


# --------------------------------------------------------------------------------------------
# The ML-1M sequence copy
# --------------------------------------------------------------------------------------------

def _seq_dir(tmp_path, ts_text=None, rt_text=None):
  write(tmp_path, "s/sequences.tsv.gz", "user_id\tmovie_ids_chronological\n1\t5 1 2\n2\t2 5\n3\t1\n")
  write(tmp_path, "s/movies.dat", ML1M_MOVIES, encoding="latin-1")
  if ts_text is not None:
    write(tmp_path, "s/timestamps_users1-2999.tsv.gz", ts_text)
  if rt_text is not None:
    write(tmp_path, "s/ratings_chronological_users1-2999.tsv.gz", rt_text)
  return tmp_path / "s"


TS_OK = "user_id\ttimestamps_chronological\n1\t10 10 30\n2\t5 6\n"
RT_OK = "user_id\tratings_chronological\n1\t5 4 3\n2\t1 2\n"


def test_ml1m_sequences_without_timestamps(tmp_path):
  s = ml.read_ml1m_sequences(_seq_dir(tmp_path, TS_OK), with_timestamps=False)
  assert s.user_ids.tolist() == [1, 2, 3] and s.items.tolist() == [5, 1, 2, 2, 5, 1]
  assert s.timestamps is None and s.num_items == 6 and s.candidate_items.tolist() == [1, 2, 5]


def test_ml1m_sequences_with_timestamps_and_ratings(tmp_path):
  d = _seq_dir(tmp_path, TS_OK, RT_OK)
  s = ml.read_ml1m_sequences(d, with_timestamps=True)
  assert s.user_ids.tolist() == [1, 2]                      # only users with timestamps
  assert s.items.tolist() == [5, 1, 2, 2, 5] and s.timestamps.tolist() == [10, 10, 30, 5, 6]
  assert s.extras["rating"].tolist() == [5, 4, 3, 1, 2]
  assert ml.load_movielens("ml-1m", d, with_timestamps=True).timestamps.tolist() == s.timestamps.tolist()


@pytest.mark.parametrize("ts_text,line,field,msg", [
    ("user_id\ttimestamps_chronological\n1\t10 10\n", 2, "timestamps_chronological", "2 timestamps but 3 items"),
    ("user_id\ttimestamps_chronological\n1\t10 9 30\n", 2, "timestamps[1]", "timestamps decrease"),
    ("user_id\ttimestamps_chronological\n7\t10\n", 2, "user_id", "no sequence"),
    ("user_id\ttimestamps\n1\t10 10 30\n", 1, None, "missing column(s): timestamps_chronological"),
    ("user_id\ttimestamps_chronological\n1\t10 x 30\n", 2, "timestamps[1]", "'x' is not an integer"),
])
def test_ml1m_timestamp_alignment_errors(tmp_path, ts_text, line, field, msg):
  d = _seq_dir(tmp_path, ts_text)
  with pytest.raises(DataError) as e:
    ml.read_ml1m_sequences(d, with_timestamps=True)
  assert_error(e, str(d / "timestamps_users1-2999.tsv.gz"), line=line, field=field, contains=msg)


def test_ml1m_sequences_errors(tmp_path):
  d = _seq_dir(tmp_path)
  with pytest.raises(DataError) as e:
    ml.read_ml1m_sequences(d, with_timestamps=True)
  assert_error(e, str(d / "timestamps_users1-2999.tsv.gz"), contains="file not found")
  write(tmp_path, "s/sequences.tsv.gz", "user_id\tmovie_ids_chronological\n1\t5 1 3\n")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_sequences(d, with_timestamps=False)
  assert_error(e, str(d / "sequences.tsv.gz"), line=2, field="movie_ids[2]", contains="not listed in")
  write(tmp_path, "s/sequences.tsv.gz", "user_id\tmovie_ids_chronological\n1\t5 0\n")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_sequences(d, with_timestamps=False)
  assert_error(e, str(d / "sequences.tsv.gz"), line=2, field="movie_ids[1]", contains="out of range")


def test_ml1m_ratings_side_file_errors(tmp_path):
  d = _seq_dir(tmp_path, TS_OK, "user_id\tratings_chronological\n1\t5 4 9\n2\t1 2\n")
  with pytest.raises(DataError) as e:
    ml.read_ml1m_sequences(d, with_timestamps=True)
  assert_error(e, str(d / "ratings_chronological_users1-2999.tsv.gz"), line=2, field="ratings[2]")


# --------------------------------------------------------------------------------------------
# Real data (skipped when shared/data is absent)
# --------------------------------------------------------------------------------------------

def test_real_ml1m_statistics():
  d = shared_dir("ml-1m")
  s = ml.load_movielens("ml-1m", d)
  assert s.num_users == 6040 and len(s.items) == 1_000_209
  assert len(np.unique(s.items)) == 3706
  assert s.num_items == 3953 and len(s.candidate_items) == 3883
  assert s.items_of(0)[:7].tolist() == [3186, 1721, 1022, 1270, 2340, 1836, 3408]
  assert s.lengths.min() == 20 and s.lengths.max() == 2314


def test_real_ml1m_timestamp_half():
  d = shared_dir("ml-1m")
  s = ml.read_ml1m_sequences(d, with_timestamps=True)
  assert s.num_users == 2999 and len(s.items) == 487_650
  assert s.user_ids[0] == 1 and s.user_ids[-1] == 2999
  same_user = np.repeat(np.arange(s.num_users), s.lengths)
  assert np.all((np.diff(s.timestamps) >= 0) | (np.diff(same_user) != 0))
  assert set(np.unique(s.extras["rating"]).tolist()) == {1, 2, 3, 4, 5}


def test_real_ml1m_side_tables():
  d = shared_dir("ml-1m")
  assert len(ml.read_ml1m_users(d / "users.dat")["user_id"]) == 6040
  assert len(ml.read_ml1m_movies(d / "movies.dat")["movie_id"]) == 3883


def test_real_ml100k_statistics():
  d = shared_dir("ml-100k")
  raw = ml.read_ml100k_ratings(d / "u.data")
  assert len(raw) == 100_000
  s = ml.load_movielens("ml-100k", d)
  assert s.num_users == 943 and len(np.unique(s.items)) == 1682 and len(s.items) == 100_000
  assert s.num_items == 1683 and len(s.candidate_items) == 1682
  assert len(ml.read_ml100k_users(d / "u.user")["user_id"]) == 943
