"""experiments/semantic_ids.py: the collision sweep, the item-table gatherer with issue 17's verdicts,
the Sports gatherer, and the plots."""
import json
import os

import numpy as np
import pytest

from experiments import semantic_ids as study
from recjax.semantic_ids import catalogue_sids


def _planted(clusters=8, per=40, dim=16, seed=0):
  rng = np.random.default_rng(seed)
  centres = 3.0 * rng.standard_normal((clusters, dim))
  return (np.repeat(centres, per, axis=0) + 0.2 * rng.standard_normal((clusters * per, dim))).astype(np.float32)


def test_sweep_collisions_fall_with_codebook_size():
  """RQ-KMeans only: the sweep hands each tokenizer to catalogue_sids.tokenize, whose RQ-VAE path
  is tested with the tokenizers (tests/semantic_ids/test_sid_settings.py); RQ-VAE needs its 3,000
  steps to be a fair point, minutes here."""
  x = _planted()
  base = catalogue_sids.SIDSettings(vectors="content:tfidf", num_levels=2)
  rows = study.sweep_vectors(x, [2, 32], ["rq_kmeans"], base)
  assert [(r["tokenizer"], r["codebook_size"]) for r in rows] == [("rq_kmeans", 2), ("rq_kmeans", 32)]
  small, large = rows
  # 2 x 2 = 4 SIDs for 320 items: every item collides; 32 x 32 leaves far fewer collisions.
  assert small["collision_rate"] == 1.0 and small["distinct_sids"] <= 4
  assert large["collision_rate"] < 0.5, large
  assert len(large["perplexity"]) == 2 and all(p >= 1.0 for p in large["perplexity"])


def _write(root, dataset, config, seed, ndcg, kind, rows, cold_hr, residual=0):
  rep = {"kind": kind, "params": rows * 10, "id_table_params": 1000 * 10}
  if kind == "sid":
    rep["sid"] = {"route": "content:tfidf", "settings": {"num_levels": 3, "codebook_size": 64},
                  "collisions": {"collision_rate": 0.3}}
  rec = {"dataset": dataset, "config": config, "seed": seed, "epochs": 101.0, "item_representation": rep,
         "model_config": {"sid_residual_size": residual},
         "config_values": {"model": {"dim": 10}, "data": {"cold_items": 0.1}},
         "metrics": {"test": {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "warm": {"ndcg@10": ndcg},
                              "cold": {"hr@10": cold_hr, "queries": 50}}}}
  os.makedirs(os.path.join(root, dataset), exist_ok=True)
  with open(os.path.join(root, dataset, f"{config}.json"), "w") as f:
    json.dump(rec, f)


def test_item_tables_pool_seeds_and_give_the_issue_verdicts(tmp_path):
  root = str(tmp_path / "results")
  _write(root, "ml-1m", "sid_x_id_seed1", 1, 0.100, "id", 1000, 0.00)
  _write(root, "ml-1m", "sid_x_id_seed2", 2, 0.110, "id", 1000, 0.02)
  _write(root, "ml-1m", "sid_x_sid_seed1", 1, 0.100, "sid", 240, 0.04)
  _write(root, "ml-1m", "sid_x_sid_seed2", 2, 0.104, "sid", 240, 0.06)
  _write(root, "ml-1m", "sid_x_sid_res_seed1", 1, 0.090, "sid", 300, 0.00, residual=60)
  rows = {r["config"]: r for r in study.gather_item_tables(root)}
  assert set(rows) == {"sid_x_id", "sid_x_sid", "sid_x_sid_res"}
  assert rows["sid_x_id"]["ndcg@10"]["mean"] == pytest.approx(0.105) and rows["sid_x_id"]["ndcg@10"]["n"] == 2
  assert rows["sid_x_sid"]["rows"] == 240 and rows["sid_x_sid_res"]["table"].endswith("+ 60 hashed rows")   # the one label, as the README shows it
  v = {x["config"]: x for x in study.verdicts(list(rows.values()))}
  assert v["sid_x_sid"]["ndcg@10_rel_to_id"] == pytest.approx(0.102 / 0.105 - 1)
  assert v["sid_x_sid"]["within_5pct"] and v["sid_x_sid"]["at_least_4x_smaller"] and v["sid_x_sid"]["cold_better"]
  assert not v["sid_x_sid_res"]["within_5pct"] and not v["sid_x_sid_res"]["at_least_4x_smaller"]
  assert not v["sid_x_sid_res"]["cold_better"]   # 0.00 vs ID's 0.01: not better

  study.plot_item_tables(list(rows.values()), str(tmp_path / "tables.png"))
  assert os.path.getsize(tmp_path / "tables.png") > 1000


def test_generative_rows_name_the_protocol_and_keep_sid_level_numbers(tmp_path):
  root = tmp_path / "results" / "amazon-sports"
  root.mkdir(parents=True)
  t = {"hr@5": 0.01, "hr@10": 0.02, "ndcg@5": 0.005, "ndcg@10": 0.008}
  for config, test in (("tiger_s", {**t, "sid_level": {**t, "ndcg@10": 0.009}}), ("sasrec_s_history_removed", t)):
    json.dump({"config": config, "model": config.split("_")[0], "seed": 1, "metrics": {"test": test}},
              open(root / f"{config}.json", "w"))
  rows = {r["config"]: r for r in study.gather_generative(str(tmp_path / "results"))}
  assert rows["tiger_s"]["protocol"].startswith("history kept") and rows["tiger_s"]["sid_level"]["ndcg@10"] == 0.009
  assert rows["sasrec_s_history_removed"]["protocol"] == "history removed"
  assert "sid_level" not in rows["sasrec_s_history_removed"]
  ml = tmp_path / "results" / "ml-1m"    # ML-1M: TIGER, HSTU and SASRec only, every seed; other runs left out
  ml.mkdir()
  for config in ("tiger_ml1m_short", "hstu_ml1m_seed2", "sasrec_ml1m", "sid_hstu_ml1m_id_seed1", "hstu_large_ml1m"):
    json.dump({"config": config, "model": config.split("_")[0], "seed": 1, "metrics": {"test": t}},
              open(ml / f"{config}.json", "w"))
  got = {(r["dataset"], r["config"]): r for r in study.gather_generative(str(tmp_path / "results"))}
  assert {c for d, c in got if d == "ml-1m"} == {"tiger_ml1m_short", "hstu_ml1m_seed2", "sasrec_ml1m"}
  assert got[("ml-1m", "hstu_ml1m_seed2")]["protocol"] == "history removed"
  assert got[("amazon-sports", "tiger_s")]["dataset"] == "amazon-sports"


def test_sweep_plot_is_written(tmp_path):
  sweep = {"toy": {"items": 320, "rows": [
      {"tokenizer": "rq_kmeans", "codebook_size": k, "collision_rate": c} for k, c in ((2, 1.0), (32, 0.2))]}}
  study.plot_sweep(sweep, str(tmp_path / "sweep.png"))
  assert os.path.getsize(tmp_path / "sweep.png") > 1000


def test_sweep_points_accumulate_across_invocations():
  pt = lambda tok, k, c: {"tokenizer": tok, "codebook_size": k, "collision_rate": c}  # noqa: E731
  sweep = study.merge_sweep({}, "ml", {"items": 9}, [pt("rq_kmeans", 16, 0.9), pt("rq_kmeans", 64, 0.4)])
  study.merge_sweep(sweep, "ml", {"items": 9}, [pt("rq_vae", 64, 0.5), pt("rq_kmeans", 64, 0.3)])
  assert [(r["tokenizer"], r["codebook_size"], r["collision_rate"]) for r in sweep["ml"]["rows"]] == [
      ("rq_kmeans", 16, 0.9), ("rq_kmeans", 64, 0.3), ("rq_vae", 64, 0.5)]
  assert sweep["ml"]["items"] == 9


def test_identical_vectors_are_the_collision_floor():
  x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], np.float32)
  assert study.identical_vector_share(x) == 0.5


def test_an_unknown_sweep_dataset_is_named():
  with pytest.raises(ValueError, match="amazon-sports"):
    study.catalogue_vectors("amazon-sports")
