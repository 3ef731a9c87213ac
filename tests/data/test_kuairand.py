"""KuaiRand reader: logs (hand-written fixtures), bitmask, errors, and the real feature tables."""
from __future__ import annotations

import numpy as np
import pytest

from recjax.data import kuairand as kr
from recjax.data.errors import DataError
from tests.data.helpers import assert_error, shared_dir, write

HEADER = ",".join(kr.LOG_COLUMNS)
# user,video,date,hourmin,time_ms,click,like,follow,comment,forward,hate,long_view,play,dur,
# profile_stay,comment_stay,profile_enter,is_rand,tab
STD_1 = [
    "0,5,20220410,1800,1649585000500,1,0,0,0,0,0,1,20000,30000,0,0,0,0,1",
    "0,2,20220410,1800,1649585000100,0,1,1,0,0,0,0,500,30000,0,0,1,0,1",
    "3,0,20220411,900,1649639000000,1,1,1,1,1,1,1,9000,9000,10,20,1,0,2",
]
STD_2 = ["0,7,20220423,1000,1650679200000,0,0,0,0,0,0,0,100,5000,0,0,0,0,0"]
RAND = ["0,1,20220424,1000,1650765600000,1,0,0,0,0,0,0,8000,9000,0,0,0,1,4"]


def _release(tmp_path, std1=STD_1, std2=STD_2, rand=RAND, features=True):
  d = tmp_path / "KuaiRand-Pure" / "data"
  write(d, "log_standard_4_08_to_4_21_pure.csv", "\n".join([HEADER, *std1]) + "\n")
  write(d, "log_standard_4_22_to_5_08_pure.csv", "\n".join([HEADER, *std2]) + "\n")
  write(d, "log_random_4_22_to_5_08_pure.csv", "\n".join([HEADER, *rand]) + "\n")
  if features:
    rows = [f"{i},{100 + i},NORMAL,2022-04-10,Kmovie,0.0,{1000.0 * i},720.0,1280.0,{i},9.0,\"{i},3\""
            for i in range(8)]
    write(d, "video_features_basic_pure.csv", "\n".join([",".join(kr.VIDEO_FEATURE_COLUMNS), *rows]) + "\n")
  return tmp_path / "KuaiRand-Pure"


def test_load_standard_logs(tmp_path):
  s = kr.load_kuairand(_release(tmp_path))
  assert s.user_ids.tolist() == [0, 3]
  # Same second, different ms: ms order wins over file order (video 2 before video 5).
  assert s.items_of(0).tolist() == [3, 6, 8]                 # video_id + 1
  assert s.timestamps[:3].tolist() == [1649585000, 1649585000, 1650679200]
  assert s.num_items == 9 and s.candidate_items is None       # videos 0..7 listed, contiguous
  assert s.extras["actions"][:2].tolist() == [2 | 4 | 128, 1 | 64]
  assert s.extras["actions"][3] == 255
  assert s.extras["tab"].tolist() == [1, 1, 0, 2]
  assert s.extras["play_time_ms"][0] == 500 and s.extras["duration_ms"][0] == 30000
  assert s.extras["is_rand"].sum() == 0


def test_random_and_all_logs(tmp_path):
  d = _release(tmp_path)
  r = kr.load_kuairand(d, logs="random")
  assert r.items.tolist() == [2] and r.extras["is_rand"].tolist() == [1]
  a = kr.load_kuairand(d, logs="all")
  assert a.items_of(0).tolist() == [3, 6, 8, 2] and len(a.items) == 5
  assert len(kr.find_log_files(d, "pure", "all")) == 3


def test_bitmask_round_trip():
  cols = {n: np.array([1, 0, 1]) * (i % 2) for i, n in enumerate(kr.ACTION_BITS)}
  mask = kr.action_bitmask(cols)
  back = kr.decode_actions(mask)
  assert all(back[n].tolist() == (cols[n] == 1).tolist() for n in kr.ACTION_BITS)
  assert kr.action_bitmask({n: np.ones(1, np.int64) for n in kr.ACTION_BITS}).tolist() == [255]


@pytest.mark.parametrize("row,field,msg", [
    ("0,5,20220410,1800,1649585000500,1,0,0,0,0,0,1,20000,30000,0,0,0,0", None, "expected 19 fields"),
    ("0,5,20220410,1800,1649585000500,2,0,0,0,0,0,1,20000,30000,0,0,0,0,1", "is_click", "flag 2"),
    ("0,5,20220410,1800,1649585000500,1,0,0,0,0,0,1,20000,30000,0,0,0,0,15", "tab", "tab 15"),
    ("0,5,20221310,1800,1649585000500,1,0,0,0,0,0,1,20000,30000,0,0,0,0,1", "date", "not a YYYYMMDD"),
    ("0,5,20220410,1875,1649585000500,1,0,0,0,0,0,1,20000,30000,0,0,0,0,1", "hourmin", "not an HHMM"),
    ("0,-5,20220410,1800,1649585000500,1,0,0,0,0,0,1,20000,30000,0,0,0,0,1", "video_id", "out of range"),
    ("0,5,20220410,1800,1649585000500,1,0,0,0,0,0,1,x,30000,0,0,0,0,1", "play_time_ms", "not an integer"),
    ("0;5;20220410;1800;1649585000500;1;0;0;0;0;0;1;0;30000;0;0;0;0;1", None, "expected 19 fields"),
])
def test_log_row_errors(tmp_path, row, field, msg):
  d = _release(tmp_path, std1=[STD_1[0], row])
  path = str(d / "data" / "log_standard_4_08_to_4_21_pure.csv")
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d)
  assert_error(e, path, line=3, field=field, contains=msg)


def test_log_header_and_empty_errors(tmp_path):
  d = _release(tmp_path)
  p = write(d / "data", "log_standard_4_22_to_5_08_pure.csv", HEADER.replace(",tab", "") + "\n0\n")
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d)
  assert_error(e, p, line=1, contains="missing column(s): tab")
  p = write(d / "data", "log_standard_4_22_to_5_08_pure.csv", "")
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d)
  assert_error(e, p, contains="empty file")


def _reorder(lines, order):
  """CSV lines (header first) with their columns permuted: new column j = old column order[j]."""
  return [",".join(line.split(",")[k] for k in order) for line in lines]


def test_logs_read_by_header_name_in_any_column_order(tmp_path):
  want = kr.load_kuairand(_release(tmp_path / "official"), logs="all")
  order = np.random.default_rng(0).permutation(len(kr.LOG_COLUMNS)).tolist()
  assert order != list(range(len(kr.LOG_COLUMNS)))
  d = tmp_path / "shuffled" / "KuaiRand-Pure"
  _release(tmp_path / "shuffled")
  for name, rows in (("log_standard_4_08_to_4_21_pure.csv", STD_1), ("log_random_4_22_to_5_08_pure.csv", RAND)):
    write(d / "data", name, "\n".join(_reorder([HEADER, *rows], order)) + "\n")   # one file kept official
  got = kr.load_kuairand(d, logs="all")
  np.testing.assert_array_equal(got.items, want.items)
  np.testing.assert_array_equal(got.timestamps, want.timestamps)
  np.testing.assert_array_equal(got.user_ids, want.user_ids)
  assert got.extras.keys() == want.extras.keys()
  for k in want.extras:
    np.testing.assert_array_equal(got.extras[k], want.extras[k])
  # Row errors still name the right field in a reordered file.
  bad = STD_1[0].split(",")
  bad[kr.LOG_COLUMNS.index("tab")] = "15"
  p = write(d / "data", "log_standard_4_08_to_4_21_pure.csv", "\n".join(_reorder([HEADER, ",".join(bad)], order)) + "\n")
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d)
  assert_error(e, p, line=2, field="tab", contains="tab 15")


@pytest.mark.parametrize("header,msg", [
    (HEADER.replace("user_id,video_id", "video_id"), "missing column(s): user_id"),
    (HEADER + ",extra", "unexpected column(s): extra"),
    (HEADER.replace("is_like", "like"), "missing column(s): is_like; unexpected column(s): like"),
    (HEADER.replace("is_like", "is_click"), "column(s) is_click more than once"),
])
def test_log_header_must_name_every_column_once(tmp_path, header, msg):
  d = _release(tmp_path)
  p = write(d / "data", "log_standard_4_22_to_5_08_pure.csv", header + "\n" + STD_2[0] + "\n")
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d)
  assert_error(e, p, line=1, contains=msg)


def test_unlisted_video_and_missing_logs(tmp_path):
  d = _release(tmp_path, std2=["0,9,20220423,1000,1650679200000,0,0,0,0,0,0,0,100,5000,0,0,0,0,0"])
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d)
  assert_error(e, str(d / "data" / "log_standard_4_22_to_5_08_pure.csv"), line=2, field="video_id",
               contains="not listed in")
  s = kr.load_kuairand(d, use_video_features=False)
  assert s.num_items == 11
  with pytest.raises(DataError) as e:
    kr.load_kuairand(d, variant="1k")
  assert_error(e, str(d / "data"), contains="no standard log file for KuaiRand-1k")


def test_feature_table_errors(tmp_path):
  header = ",".join(kr.USER_FEATURE_COLUMNS)
  row = '0,full_active,0,1,1,514,500+,150,"[100,1k)",34,"[30,60)",799,730+' + ",1" * 12 + ",1.0" * 6
  p = write(tmp_path, "user_features_pure.csv", f"{header}\n{row}\n{row}\n")
  with pytest.raises(DataError) as e:
    kr.read_user_features(p)
  assert_error(e, p, line=3, field="user_id", contains="listed twice")
  p = write(tmp_path, "x/user_features_pure.csv", header.replace("onehot_feat17", "feat17") + f"\n{row}\n")
  with pytest.raises(DataError) as e:
    kr.read_user_features(tmp_path / "x")
  assert_error(e, p, line=1, contains="unexpected column(s): feat17")
  p = write(tmp_path, "y/user_features_pure.csv", f"{header}\n{row.replace(',799,', ',7x9,')}\n")
  with pytest.raises(DataError) as e:
    kr.read_user_features(p)
  assert_error(e, p, line=2, field="register_days", contains="not a number")


def test_user_and_video_features_fixture(tmp_path):
  d = _release(tmp_path)
  v = kr.read_video_features(d)
  assert v["video_id"].tolist() == list(range(8)) and v["tag"][2] == "2,3"
  assert v["video_duration"].dtype == np.float64 and v["author_id"][1] == 101
  assert kr.read_video_ids(d / "data" / "video_features_basic_pure.csv").tolist() == list(range(8))


def test_real_kuairand_pure_features():
  d = shared_dir("kuairand-pure")
  u = kr.read_user_features(d)
  assert len(u) == 31 and len(u["user_id"]) == 27_285
  assert u["user_id"].tolist() == list(range(27_285))
  assert (u["user_active_degree"] == "full_active").sum() == 17_959
  assert np.isnan(u["onehot_feat4"]).sum() == 874               # empty fields become NaN
  v = kr.read_video_features(d)
  assert len(v) == 12 and len(v["video_id"]) == 7_583
  assert len(np.unique(v["author_id"])) == 6_510
  assert v["upload_dt"].min() == "2022-04-09" and v["upload_dt"].max() == "2022-04-11"
