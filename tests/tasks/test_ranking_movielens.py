"""The MovieLens ranking configs: labels read back against u.data, and a quick ML-100K run end to end."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from configs import (dcnv2_rank_ml100k, din_rank_ml100k, din_rank_ml1m_half, dlrm_rank_ml100k,
                     dlrm_rank_ml1m_half, hstu_rank_ml100k, hstu_rank_ml1m_half, interformer_lite_rank_ml100k,
                     kunlun_rank_ml100k, rank_movielens, wukong_rank_ml100k)
from tests.conftest import shared_data

CONFIGS = (hstu_rank_ml100k, dlrm_rank_ml100k, din_rank_ml100k, kunlun_rank_ml100k, interformer_lite_rank_ml100k,
           wukong_rank_ml100k, dcnv2_rank_ml100k, hstu_rank_ml1m_half, dlrm_rank_ml1m_half, din_rank_ml1m_half)


@pytest.mark.parametrize("module", CONFIGS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_configs_name_their_results_file_and_share_the_protocol(module):
  c = module.get_config()
  assert c.name == module.__name__.rsplit(".", 1)[-1]
  assert c.task == "ranking" and c.ranking.tasks == "rating" and c.data.with_timestamps
  assert c.dataset_label == ("ml-100k" if "ml100k" in c.name else "ml-1m-users1-2999")
  q = module.get_config("quick")
  assert q.quick and 0 < q.train.max_steps <= 20 and q.ranking.history_len < c.ranking.history_len


def test_kunlun_family_reads_movielens_rating_bits_as_event_types():
  """On MovieLens the action bits are the history's own rating labels (bit 0: >= 4, bit 1: = 5), not
  KuaiRand's click (0) and long view (6): bit 6 would select no event at all."""
  for module in (kunlun_rank_ml100k, interformer_lite_rank_ml100k):
    m = module.get_config().model
    assert tuple(m.event_bits) == (-1, 0, 1) and len(m.events) == 3, m
  from configs import interformer_lite_rank_synthetic, kunlun_rank_synthetic
  for movielens, synthetic in ((kunlun_rank_ml100k, kunlun_rank_synthetic),
                               (interformer_lite_rank_ml100k, interformer_lite_rank_synthetic)):
    a, b = movielens.get_config().model.to_dict(), synthetic.get_config().model.to_dict()
    assert {k: v for k, v in a.items() if k not in ("events", "event_bits")} == \
           {k: v for k, v in b.items() if k not in ("events", "event_bits")}   # same architecture


def test_kunlun_ml100k_ablation_rows_change_one_component_and_name_their_run():
  from configs import kunlun_rank_synthetic
  full = kunlun_rank_ml100k.get_config().model.to_dict()
  for row, overrides in kunlun_rank_synthetic.ABLATIONS.items():
    c = kunlun_rank_ml100k.get_config(row)
    assert c.name == f"kunlun_rank_ml100k_{row}"
    changed = {k for k, v in c.model.to_dict().items() if full[k] != v}
    assert changed == {k for k, v in overrides.items() if full[k] != v} and changed, (row, changed)
    assert kunlun_rank_ml100k.get_config(f"{row},quick").quick
  with pytest.raises(ValueError, match="no_hsp"):
    rank_movielens.ranking_config("dlrm", "ml100k", "no_hsp")        # ablations are Kunlun's only
  with pytest.raises(ValueError, match="no_hsp"):
    kunlun_rank_ml100k.get_config("no_hsp,no_moe")                    # one component at a time


def test_unknown_model_dataset_or_argument_is_rejected():
  with pytest.raises(ValueError, match="unknown model"):
    rank_movielens.ranking_config("sasrec", "ml100k")
  with pytest.raises(ValueError, match="'quick'"):
    rank_movielens.ranking_config("hstu", "ml100k", "fast")


def test_ml100k_test_labels_are_the_last_ratings_of_u_data(tmp_path):
  """Brute force from the raw file: each user's last test_k ratings by time give the test labels."""
  data_dir = shared_data("ml-100k")
  from recjax import tasks
  c = hstu_rank_ml100k.get_config("quick")
  task = tasks.make_task(c, str(tmp_path))
  assert task.task_names == ("rating_ge_4", "rating_eq_5")
  raw = np.loadtxt(os.path.join(data_dir, "u.data"), dtype=np.int64)     # user item rating time
  ex = task.examples["test"].arrays
  k = c.ranking.test_k
  checked = 0
  for user in np.unique(raw[:, 0]):
    rows = raw[raw[:, 0] == user]
    times = np.sort(rows[:, 3])
    if len(rows) > k and times[-k] == times[-k - 1]:
      continue                                  # a tie across the boundary: the order is the file's
    last = rows[rows[:, 3] >= times[-k]]
    want = sorted(zip(last[:, 2] >= 4, last[:, 2] == 5))
    sel = ex["user_ids"] == user
    got = ex["cand_labels"][sel][ex["cand_mask"][sel] > 0]
    assert sorted(map(tuple, got.astype(bool).tolist())) == want, f"user {user}"
    checked += 1
  assert checked > 400        # 943 users; ML-100K has many same-second ratings at the boundary


@pytest.mark.slow   # keeps the default suite under 10 minutes; test_tasks runs a ranking config end to end
def test_ml100k_quick_ranking_run_end_to_end(tmp_path):
  shared_data("ml-100k")
  from recjax.train import loop
  summary = loop.train_and_evaluate(hstu_rank_ml100k.get_config("quick"), str(tmp_path / "w"))
  assert tuple(summary["dataset_stats"]["tasks"]) == ("rating_ge_4", "rating_eq_5")
  test = summary["metrics"]["test"]
  for name in ("rating_ge_4", "rating_eq_5", "mean"):
    for key in ("ne", "auc", "gauc"):
      assert math.isfinite(test[name][key]), (name, key)
  # Twelve steps already beat chance on "rating >= 4" (genres, demographics, the history's ratings).
  assert test["rating_ge_4"]["auc"] > 0.5
  assert "oracle_ne" not in test["mean"]       # no oracle outside synthetic worlds
