"""scripts/make_readme_tables.py: the ranking table groups a config's seeds into one mean ± std row."""
import json
import os
import statistics

import pytest

from scripts import make_readme_tables as tables


def _ranking_result(config, seed, ne_tasks, oracle=(0.5, 0.9), partial=False):
  """A minimal ranking results file: two tasks, per-task NE given, mean = their average."""
  tasks = {}
  for name, ne, o in zip(("is_click", "is_like"), ne_tasks, oracle):
    tasks[name] = {"ne": ne, "auc": 0.7, "gauc": 0.6, "oracle_ne": o, "gap_closed": (1 - ne) / (1 - o)}
  mean = {k: statistics.fmean(t[k] for t in tasks.values()) for k in ("ne", "auc", "gauc", "oracle_ne", "gap_closed")}
  return {"dataset": "synthetic", "model": config.split("_")[0], "config": config, "task": "ranking",
          "seed": seed, "steps": 10, "wall_clock_s": 60.0, "partial": partial,
          "metrics": {"test": {**tasks, "mean": mean}}}


def _write(root, record):
  path = os.path.join(root, "results", record["dataset"], record["config"] + ".json")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f)


@pytest.fixture
def root(tmp_path, monkeypatch):
  monkeypatch.setattr(tables, "ROOT", str(tmp_path))
  return str(tmp_path)


def _rows(table):
  return {line.split(" | ")[1]: line.split(" | ") for line in table.splitlines()[2:]}


def test_seeds_of_one_config_form_one_row_with_mean_std_and_links(root):
  runs = [_ranking_result("hstu_rank_x", 42, (0.80, 0.95)),
          _ranking_result("hstu_rank_x_seed1", 1, (0.70, 0.97)),
          _ranking_result("hstu_rank_x_seed2", 2, (0.75, 0.99), partial=True),
          _ranking_result("dlrm_rank_x", 42, (0.60, 0.90))]
  for r in runs:
    _write(root, r)
  _write(root, {**runs[0], "config": "hstu_rank_x_quick"})   # quick runs are not results
  _write(root, {**runs[0], "config": "hstu_x", "task": "retrieval"})
  table = tables.ranking_table()
  rows = _rows(table)
  assert set(rows) == {"hstu_rank_x", "dlrm_rank_x"}
  # Sorted by mean NE within the dataset: DLRM (0.75) before HSTU (≈ 0.86).
  assert table.splitlines()[2].split(" | ")[1] == "dlrm_rank_x"
  hstu = rows["hstu_rank_x"]
  assert hstu[2] == ("[1](results/synthetic/hstu_rank_x_seed1.json), "
                     "[2](results/synthetic/hstu_rank_x_seed2.json) (PARTIAL), [42](results/synthetic/hstu_rank_x.json)")
  mean_ne = [statistics.fmean(r["metrics"]["test"][t]["ne"] for t in ("is_click", "is_like")) for r in runs[:3]]
  assert hstu[3] == f"{statistics.fmean(mean_ne):.4f} ± {statistics.stdev(mean_ne):.4f}"
  assert hstu[6] == "0.7000"   # the oracle does not depend on the seed: shown bare
  share = [(1 - ne) / (1 - 0.7) for ne in mean_ne]   # gap closed on the task-averaged NE
  assert hstu[7] == f"{statistics.fmean(share):.4f} ± {statistics.stdev(share):.4f}"
  per_task = [r["metrics"]["test"]["mean"]["gap_closed"] for r in runs[:3]]   # average of per-task shares
  assert hstu[8] == f"{statistics.fmean(per_task):.4f} ± {statistics.stdev(per_task):.4f}"
  click = [r["metrics"]["test"]["is_click"]["ne"] for r in runs[:3]]
  assert hstu[9] == f"is_click {statistics.fmean(click):.4f} ± {statistics.stdev(click):.4f}"
  # A single run is shown bare, with its one link.
  assert rows["dlrm_rank_x"][2] == "[42](results/synthetic/dlrm_rank_x.json)"
  assert rows["dlrm_rank_x"][3] == "0.7500"


def test_no_oracle_shows_dashes(root):
  r = _ranking_result("hstu_rank_ml", 42, (0.8, 0.9))
  r["dataset"] = "ml-100k"
  for t in r["metrics"]["test"].values():
    for k in ("oracle_ne", "gap_closed"):
      t.pop(k)
  _write(root, r)
  row = _rows(tables.ranking_table())["hstu_rank_ml"]
  assert row[6:9] == ["–", "–", "–"]


def _kunlun(config, ne_tasks, flops_per_example, best_epoch=3):
  r = _ranking_result(config, 42, ne_tasks)
  r["flops"] = [{"flops_per_example": flops_per_example}]
  r["metrics"]["best_epoch"] = {"epoch": best_epoch}
  r["config_values"] = {"train": {"num_epochs": 8}}
  return r


def test_kunlun_ablation_table_deltas_flops_noise_and_partial(root):
  full = _kunlun("kunlun_rank_synthetic", (0.80, 0.90), 30e6, best_epoch=7)        # mean NE 0.85
  _write(root, full)
  _write(root, _kunlun("kunlun_rank_synthetic_no_compskip", (0.81, 0.90), 60e6))   # 0.855: +0.005
  _write(root, _kunlun("kunlun_rank_synthetic_no_window", (0.801, 0.90), 30e6))    # 0.8505: +0.0005
  # noise yardstick: Kunlun's own seeds, mean NE 0.85 (the full row, seed 42) and 0.852 (seed 1)
  _write(root, {**_kunlun("kunlun_rank_synthetic_seed1", (0.80, 0.904), 30e6), "seed": 1})
  bench = os.path.join(root, "results", "bench", "kunlun_ablation_cpu.json")   # the step-throughput bench's rows
  os.makedirs(os.path.dirname(bench), exist_ok=True)
  with open(bench, "w") as f:
    f.write(json.dumps({"rows": [{"model": "kunlun", "examples_per_s": 300.0, "utilisation_vs_matmul_peak": 0.09},
                                 {"model": "kunlun_no_compskip", "examples_per_s": 200.4,
                                  "utilisation_vs_matmul_peak": 0.1}]}))
  table = tables.kunlun_ablation_table()
  lines = table.splitlines()
  assert lines[0] == "**PARTIAL**: not yet run: no_hsp, no_moe, no_event_personalisation, no_gdpa, no_sumkron."
  rows = {line.split(" | ")[1]: line.split(" | ") for line in lines if line.startswith("| ") and "[" in line}
  sigma = statistics.stdev([0.85, 0.852])
  no_cs = rows["[kunlun_rank_synthetic_no_compskip](results/synthetic/kunlun_rank_synthetic_no_compskip.json)"]
  assert no_cs[2] == "0.8550" and no_cs[3] == f"+0.0050 ({100 * 0.005 / 0.85:+.2f}%)"   # 2σ = 0.0028 < 0.005
  assert no_cs[7] == "0.0600" and no_cs[8] == "-50.0%" and no_cs[9] == "3 of 8"
  no_w = rows["[kunlun_rank_synthetic_no_window](results/synthetic/kunlun_rank_synthetic_no_window.json)"]
  assert no_w[3].endswith("within noise") and no_w[8] == "+0.0%"
  assert (no_cs[10], no_cs[11]) == ("200", "10.0%") and (no_w[10], no_w[11]) == ("–", "–")   # bench columns
  assert f"2σ = {2 * sigma:.4f}" in table
  assert rows["[kunlun_rank_synthetic](results/synthetic/kunlun_rank_synthetic.json)"][9] == "7 of 8"
  # The ablation rows live in their own table; the full model stays in the ranking table.
  ranking = _rows(tables.ranking_table())
  assert "kunlun_rank_synthetic" in ranking and "kunlun_rank_synthetic_no_compskip" not in ranking


def test_kunlun_ablation_table_on_movielens_reads_its_own_folder(root):
  """The ML-100K table reads results/ml-100k and has no seed-noise band (no seeded ML-100K runs)."""
  for config, ne in (("kunlun_rank_ml100k", (0.80, 0.90)), ("kunlun_rank_ml100k_no_hsp", (0.81, 0.90)),
                     ("kunlun_rank_synthetic_no_hsp", (0.99, 0.99))):   # another dataset's row: not read
    _write(root, {**_kunlun(config, ne, 30e6), "dataset": "ml-100k" if "ml100k" in config else "synthetic"})
  table = tables.kunlun_ablation_table("kunlun_rank_ml100k")
  rows = {line.split(" | ")[1]: line.split(" | ") for line in table.splitlines() if line.startswith("| ") and "[" in line}
  no_hsp = rows["[kunlun_rank_ml100k_no_hsp](results/ml-100k/kunlun_rank_ml100k_no_hsp.json)"]
  assert no_hsp[3] == f"+0.0050 ({100 * 0.005 / 0.85:+.2f}%)"          # no "within noise" without a yardstick
  assert "no seed-noise yardstick on this dataset yet" in table
  assert table.startswith("**PARTIAL**: not yet run: no_compskip, no_window, no_moe, no_event_personalisation, no_gdpa, no_sumkron.")
  assert "kunlun_rank_ml100k_no_hsp" not in _rows(tables.ranking_table())


def test_kunlun_ablation_rows_are_the_configs_ablations():
  from configs import kunlun_rank_synthetic   # pylint: disable=import-outside-toplevel
  assert [row for row, _, _ in tables.KUNLUN_ABLATIONS] == list(kunlun_rank_synthetic.ABLATIONS)


def _mixture_files(root, predicted_offset):
  """comparison.json (from the study's own seed_comparison) and fit_small.json of a fake mixture study."""
  from experiments import mixture_study as ms  # pylint: disable=import-outside-toplevel
  row = lambda base, shift: {"weights": [0.25] * 4, "losses": [base + shift + k for k in range(4)],
                             "mean_loss": base + shift + 1.5, "hr@10": 0.1}
  big = {"uniform": {s: row(5.0, 0.01 * i) for i, s in enumerate((1, 2, 42))},
         "natural": {s: row(5.5, 0.01 * i) for i, s in enumerate((1, 2, 42))},
         "predicted": {s: row(5.0 + predicted_offset, 0.011 * i) for i, s in enumerate((1, 2))}}
  seeded = ms.seed_comparison(big, {m: [0.25] * 4 for m in big})
  folder = os.path.join(root, "results", "mixture_study")
  os.makedirs(folder)
  law = {"mre": 0.1}
  with open(os.path.join(folder, "comparison.json"), "w") as f:
    json.dump({"scale": {"dim": 64, "targets": 16000, "model_size": 59072}, "small_runs": 16, "heldout_runs": 8,
               "heldout_larger_model": {"mixture_law": law, "exponential_law": law}, **seeded}, f)
  with open(os.path.join(folder, "fit_small.json"), "w") as f:
    json.dump({"params": {"mixture_law": {"H": 1.0, "tab0": {"b": 1, "c": 2}}, "exponential_law": {"c": [1, 2, 3]}},
               "metrics": {"mixture_law": {"train": law}, "exponential_law": {"train": law}}}, f)


def test_mixture_tables_show_seeds_mean_std_and_the_verdict(root):
  _mixture_files(root, predicted_offset=0.5)     # predicted 0.5 worse at both of its 2 seeds
  text = tables.mixture_tables()
  assert "| mixture law (capacity competition + noise) | 3 | 10.00% | 10.00% |" in text   # params counted: H, b, c
  uniform = next(line for line in text.splitlines() if line.startswith("| uniform |"))
  assert "| 1, 2, 42 |" in uniform and "6.5100 ± 0.0100" in uniform
  assert "| predicted − uniform | 1: +0.5000, 2: +0.5010 |" in text
  assert "Done-when (2 seeds, PARTIAL): predicted vs uniform **WORSE** (worse)" in text


def test_sports_table_puts_published_rows_first_then_ours_per_protocol(root):
  """Fabricated Sports results: two seeds of one config form one mean ± std row; the protocol is
  named per row; a partial run is labelled."""
  def sports(config, seed, r10, partial=False):
    return {"dataset": "amazon-sports", "model": "sasrec", "config": config, "task": "retrieval", "seed": seed,
            "epochs": 100, "steps": 27900, "wall_clock_s": 3600.0, "partial": partial,
            "metrics": {"test": {"hr@5": r10 / 2, "hr@10": r10, "ndcg@5": r10 / 4, "ndcg@10": r10 / 3}}}
  for rec in (sports("sasrec_amazon_sports_seed1", 1, 0.05), sports("sasrec_amazon_sports_seed2", 2, 0.07),
              sports("sasrec_amazon_sports_history_removed", 42, 0.06, partial=True)):
    _write(root, rec)
  lines = tables.sports_table().splitlines()
  assert lines[2].startswith("| TIGER") and "0.0400" in lines[2]
  ours = [line.split(" | ") for line in lines if "recjax" in line]
  assert len(ours) == 2
  hr = {row[1]: row for row in ours}
  seeded = hr["recjax `sasrec_amazon_sports`"]
  assert seeded[4] == f"0.0600 ± {statistics.stdev([0.05, 0.07]):.4f}" and "TIGER's protocol" in seeded[-1]
  removed = hr["recjax `sasrec_amazon_sports_history_removed`"]
  assert removed[4] == "0.0600" and "PARTIAL: seed 42" in removed[-1] and "our protocol" in removed[-1]

  # A finished run re-evaluated under our protocol (--snapshot): labelled as such, not as partial.
  rec = sports("sasrec_amazon_sports_history_removed", 42, 0.06, partial=True)
  rec["metrics"]["per_epoch_before_eval_change"] = [{"epoch": 1}]
  _write(root, rec)
  removed = [line for line in tables.sports_table().splitlines() if "history_removed" in line][0]
  assert "re-evaluated (no epoch selection): seed 42" in removed and "PARTIAL" not in removed


def test_sid_items_table_names_the_recipe_size_and_cold_hits(root):
  """Fabricated SID / ID runs: seeds of one config form one row; the SID recipe, its table size and
  shrink factor, and the cold targets' hits are read from the results file."""
  def run(config, seed, ndcg, kind, residual=0, cold_hr=0.05, dataset="ml-1m"):
    rep = {"kind": kind, "params": 793 * 50 if kind == "sid" else 3953 * 50, "id_table_params": 3953 * 50}
    if kind == "sid":
      rep["params"] += residual * 50
      rep["shrink_vs_id_table"] = rep["id_table_params"] / rep["params"]
      rep["sid"] = {"route": "content:tfidf", "settings": {"num_levels": 3, "codebook_size": 256, "disambiguate": True}}
    test = {"ndcg@10": ndcg, "hr@10": 2 * ndcg, "warm": {"ndcg@10": ndcg + 0.01},
            "cold": {"hr@10": cold_hr, "hr@200": 4 * cold_hr, "queries": 600}}
    return {"dataset": dataset, "model": "hstu", "config": config, "task": "retrieval", "seed": seed,
            "epochs": 101.0, "item_representation": rep, "metrics": {"test": test},
            "model_config": {"dim": 50, "sid_residual_size": residual},
            "config_values": {"data": {"cold_items": 0.1}, "model": {"dim": 50}}}
  for rec in (run("sid_hstu_ml1m_id_seed1", 1, 0.14, "id", cold_hr=0.0),
              run("sid_hstu_ml1m_sid_seed1", 1, 0.10, "sid"), run("sid_hstu_ml1m_sid_seed2", 2, 0.12, "sid"),
              run("sid_hstu_ml1m_sid_res190_seed1", 1, 0.13, "sid", residual=190)):
    _write(root, rec)
  rows = [line.split(" | ") for line in tables.sid_items_table().splitlines()[2:]]
  assert [row[2] for row in rows] == [
      "ID", "SID content:tfidf 3 x 256 + disambiguation", "SID content:tfidf 3 x 256 + disambiguation + 190 hashed rows"]
  ident, plain, res = rows
  assert ident[3] == "3,953" and ident[-2] == "0.0000 (0 / 600)" and ident[-1] == "0.0000 |"
  assert plain[3] == "793 (5.0x)" and plain[6] == f"0.1100 ± {statistics.stdev([0.10, 0.12]):.4f}"
  assert plain[-2] == "0.0500 ± 0.0000", "several seeds: mean ± std of the cold HR@10, no hit count"
  assert plain[-1] == "0.2000 ± 0.0000 |"
  assert res[3] == "983 (4.0x)" and res[6] == "0.1300"
