"""The shared numeric-table parser and the one-line-per-user sequence format."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.data.errors import DataError
from recjax.data.text_sequences import (read_numeric_table, read_text_sequences, read_text_table,
                                        write_text_sequences)
from tests.data.helpers import assert_error, write

COLS = ("user", "item", "rating", "ts")


# --------------------------------------------------------------------------------------------
# read_numeric_table
# --------------------------------------------------------------------------------------------

def test_numeric_table_reads_ints_and_floats(tmp_path):
  p = write(tmp_path, "r.csv", "user,item,rating,ts\n1,2,3.5,100\n4,5,-0.5,200\n")
  t = read_numeric_table(p, COLS, sep=",", header=True, float_columns=("rating",))
  assert t["user"].tolist() == [1, 4] and t["user"].dtype == np.int64
  assert t["rating"].tolist() == [3.5, -0.5] and t["rating"].dtype == np.float64
  assert t.first_line == 2 and len(t) == 2


def test_numeric_table_crlf_missing_final_newline_and_gzip(tmp_path):
  p = write(tmp_path, "r.dat.gz", "1::2::3::4\r\n5::6::7::8")
  t = read_numeric_table(p, COLS, sep="::", header=False)
  assert t["ts"].tolist() == [4, 8]


def test_numeric_table_line_numbers_across_chunks(tmp_path):
  rows = [f"{i}\t{i + 1}\t3\t{i * 10}" for i in range(1, 200)]
  rows[150] = "151\t152\tx\t1510"
  p = write(tmp_path, "u.data", "\n".join(rows) + "\n")
  with pytest.raises(DataError) as e:
    read_numeric_table(p, COLS, sep="\t", header=False, chunk_bytes=64)   # many small chunks
  assert_error(e, p, line=151, field="rating", contains="'x' is not an integer")
  good = write(tmp_path, "ok.data", "\n".join(r for i, r in enumerate(rows) if i != 150) + "\n")
  t = read_numeric_table(good, COLS, sep="\t", header=False, chunk_bytes=64)
  assert len(t) == 198 and t["user"][-1] == 199


@pytest.mark.parametrize("row,field,msg", [
    ("1,2,3", None, "expected 4 fields"),
    ("1,2,,4", "rating", "'' is not an integer"),
    ("1,-,3,4", "item", "'-' is not an integer"),
    ("1,2.5,3,4", "item", "'2.5' is not an integer"),
    ("1, 2,3,4", "item", "' 2' is not an integer"),
    ("1,2,3,4e3", "ts", "'4e3' is not an integer"),
    ("", None, "blank line"),
    ("1,99999999999999999999,3,4", "item", "too large"),
])
def test_numeric_table_rejects_bad_rows(tmp_path, row, field, msg):
  p = write(tmp_path, "r.csv", f"1,1,1,1\n{row}\n2,2,2,2\n")
  with pytest.raises(DataError) as e:
    read_numeric_table(p, COLS, sep=",", header=False)
  assert_error(e, p, line=2, field=field, contains=msg)


def test_numeric_table_header_and_empty_file(tmp_path):
  p = write(tmp_path, "h.csv", "user,item,ts\n1,2,3\n")
  with pytest.raises(DataError) as e:
    read_numeric_table(p, COLS, sep=",", header=True)
  assert_error(e, p, line=1, contains="missing column(s): rating")
  empty = write(tmp_path, "e.csv", "")
  with pytest.raises(DataError) as e:
    read_numeric_table(empty, COLS, sep=",", header=True)
  assert_error(e, empty, contains="empty file")
  header_only = write(tmp_path, "ho.csv", "user,item,rating,ts\n")
  with pytest.raises(DataError) as e:
    read_numeric_table(header_only, COLS, sep=",", header=True)
  assert_error(e, header_only, contains="no data rows")


def test_text_table_quoted_csv(tmp_path):
  p = write(tmp_path, "m.csv", 'id,title\n1,"Heat, The (1995)"\n2,Plain\n')
  t = read_text_table(p, ("id", "title"), sep=",", header=True, quoted=True)
  assert t.column("title") == ["Heat, The (1995)", "Plain"] and t.lines == [2, 3]
  bad = write(tmp_path, "b.csv", "id,title\n1,a,b\n")
  with pytest.raises(DataError) as e:
    read_text_table(bad, ("id", "title"), sep=",", header=True, quoted=True)
  assert_error(e, bad, line=2, contains="expected 2 fields")


# --------------------------------------------------------------------------------------------
# Sequence text format
# --------------------------------------------------------------------------------------------

def test_per_user_read_write_round_trip(tmp_path):
  p = write(tmp_path, "seq.txt", "# a comment\n3 5 6 7\n1\t9 8\n")
  s = read_text_sequences(p)
  assert s.user_ids.tolist() == [3, 1]                      # file order is kept
  assert s.items.tolist() == [5, 6, 7, 9, 8] and s.timestamps is None
  assert s.num_items == 10
  out = write_text_sequences(s, tmp_path / "out.txt", comment="written by a test")
  again = read_text_sequences(out)
  assert again.user_ids.tolist() == s.user_ids.tolist() and again.items.tolist() == s.items.tolist()


def test_pairs_layout_and_id_offset(tmp_path):
  p = write(tmp_path, "pairs.txt", "2 0\n1 4\n2 3\n1 1\n")
  s = read_text_sequences(p, layout="pairs", id_offset=1, num_items=6)
  assert s.user_ids.tolist() == [1, 2]
  assert s.items.tolist() == [5, 2, 1, 4] and s.num_items == 6
  out = write_text_sequences(s, tmp_path / "p2.txt", layout="pairs", id_offset=1)
  assert open(out).read().splitlines()[0] == "1 4"


@pytest.mark.parametrize("text,line,field,msg", [
    ("1 2 3\n2 4 x\n", 2, "items[1]", "'x' is not an integer"),
    ("1 2 3\n1 4\n", 2, "user", "already appeared on line 1"),
    ("1 2 3\n5\n", 2, None, "user has no items"),
    ("1 2 3\n\n2 3\n", 2, None, "blank line"),
    ("1 2 0\n", 1, "items[1]", "model ids must be >= 1"),
    ("-1 2\n", 1, "user", "negative"),
    ("1 2 300\n", 1, "items[1]", "below num_items=100"),
])
def test_per_user_errors(tmp_path, text, line, field, msg):
  p = write(tmp_path, "bad.txt", text)
  with pytest.raises(DataError) as e:
    read_text_sequences(p, num_items=100)
  assert_error(e, p, line=line, field=field, contains=msg)


def test_sequence_file_empty_or_only_comments(tmp_path):
  p = write(tmp_path, "empty.txt", "")
  with pytest.raises(DataError) as e:
    read_text_sequences(p)
  assert_error(e, p, contains="empty file")
  c = write(tmp_path, "comments.txt", "# nothing here\n")
  with pytest.raises(DataError) as e:
    read_text_sequences(c)
  assert_error(e, c, contains="no data lines")


def test_pairs_layout_rejects_three_fields(tmp_path):
  p = write(tmp_path, "pairs.txt", "1 2\n1 2 3\n")
  with pytest.raises(DataError) as e:
    read_text_sequences(p, layout="pairs")
  assert_error(e, p, line=2, contains="expected 2 fields")
