"""experiments/scaling_study.py on results files made from known laws: the table, the fits, the
efficiency ratio (over runs and over users) and the plot; partial runs skipped, bad files named."""
import csv
import json

import numpy as np
import pytest

from experiments import scaling_study

USERS = 400
SIZES = {"d8x1": (8, 1), "d8": (8, 2), "d16": (16, 2), "d32": (32, 2)}
SLOPE = {"hstu": -0.04, "sasrec": -0.02}   # NDCG@10 per decade of training FLOPs: the ratio is 2


def _write_run(runs_dir, workdirs, model, size, seed, flops, rng, partial=False):
  dim, blocks = SIZES[size]
  ndcg = 0.10 - SLOPE[model] * np.log10(flops / 1e12)
  nll = 7.0 - 0.5 * np.log10(flops / 1e12) + (0.3 if model == "sasrec" else 0.0)
  hits = int(round(ndcg * USERS))          # rank 1 (NDCG 1) for `hits` users, rank 500 (NDCG 0) for the rest
  ranks = np.where(np.arange(USERS) < hits, 1, 500)
  per_user_nll = nll + rng.normal(0, 0.5, USERS)
  per_user_nll += nll - per_user_nll.mean()
  tag = f"{model}_{size}_s{seed}"
  (workdirs / tag / "eval").mkdir(parents=True)
  np.savez(workdirs / tag / "eval" / "valid.npz", user_ids=np.arange(USERS), ranks=ranks, nll=per_user_nll)
  valid = {"epoch": 8, "split": "valid", "ndcg@10": hits / USERS, "hr@10": hits / USERS, "nll": float(nll)}
  record = {"partial": partial, "config": f"scaling_ml1m_{model}_{size}", "seed": seed, "commit": "abc",
            "num_params": 1000 * dim * blocks + 100 * dim + 20 * dim, "steps": 40, "epochs": 8.0,
            "wall_clock_s": 10.0, "mfu": {"mfu_measured": 0.1},
            "train_flops": {"flops": flops, "examples": 5120, "steps": 40, "per_example": flops / 5120},
            "item_representation": {"params": 100 * dim},
            "config_values": {"model": {"name": model, "dim": dim, "num_blocks": blocks, "max_len": 20}},
            "metrics": {"per_epoch": [valid], "test": {"ndcg@10": 0.1, "hr@10": 0.2, "nll": 7.0}}}
  (runs_dir / f"{tag}.json").write_text(json.dumps(record))


def test_study_recovers_the_efficiency_ratio_from_results_files(tmp_path):
  runs_dir, workdirs = tmp_path / "runs", tmp_path / "workdirs"
  runs_dir.mkdir()
  rng = np.random.default_rng(0)
  for model, base in (("hstu", 2e11), ("sasrec", 1e11)):
    for i, size in enumerate(SIZES):
      _write_run(runs_dir, workdirs, model, size, 42, base * 4 ** i, rng)
  _write_run(runs_dir, workdirs, "hstu", "d8x1", 1, 2e11, rng)                  # seed replicates
  _write_run(runs_dir, workdirs, "sasrec", "d8x1", 1, 1e11, rng)
  _write_run(runs_dir, workdirs, "sasrec", "d32", 1, 9e12, rng, partial=True)   # skipped
  rows = scaling_study.collect(str(runs_dir))
  assert len(rows) == 10 and {r["seed"] for r in rows} == {1, 42}
  d16 = next(r for r in rows if r["model"] == "hstu" and r["size"] == "d16")
  assert d16["params_non_embedding"] == 1000 * 16 * 2 and d16["params_total"] == 1000 * 32 + 120 * 16
  scaling_study.write_csv(str(tmp_path / "runs.csv"), rows)
  assert scaling_study.markdown_table(rows).count("\n") == len(rows) + 1
  with open(tmp_path / "runs.csv") as f:
    assert tuple(next(csv.reader(f))) == scaling_study.COLUMNS

  out = scaling_study.study(rows, a="hstu", b="sasrec", fit_seed=42, num_bootstrap=50, seed=0,
                            workdirs=str(workdirs))
  eff = out["efficiency"]["valid_ndcg@10:log_linear"]
  # NDCG is quantised to 1/400 per run, so the ratio is 2 up to that rounding.
  assert eff["slope_ratio"]["value"] == pytest.approx(2.0, rel=0.05)
  assert eff["slope_ratio"]["lo"] <= eff["slope_ratio"]["value"] <= eff["slope_ratio"]["hi"]
  users = eff["over_users"]
  assert users["slope_ratio"]["lo"] < 2.0 < users["slope_ratio"]["hi"]
  assert users["slope_hstu"]["value"] == pytest.approx(-0.04, rel=0.05)
  seeds = eff["over_users_and_seeds"]   # the replicate runs here equal seed 42's: sd 0, same interval
  assert seeds["seed_sd"] == {"hstu": 0.0, "sasrec": 0.0}
  assert seeds["slope_ratio"]["lo"] == pytest.approx(users["slope_ratio"]["lo"], rel=1e-6)
  assert out["fits"]["valid_nll:power_law"]["hstu"]["b_at_search_bound"] in (True, False)
  nll = out["fits"]["valid_nll:log_linear"]
  assert nll["sasrec"]["params"]["eta"]["value"] == pytest.approx(0.5, rel=1e-6)
  assert "b" in out["fits"]["valid_nll:power_law"]["hstu"]["params"]
  assert out["fitted_runs"]["hstu"] == list(SIZES)
  assert out["seed_spread"][0]["model"] == "hstu" and out["seed_spread"][0]["seeds"] == [1, 42]

  scaling_study.plot(str(tmp_path / "s.png"), rows, a="hstu", b="sasrec", fit_seed=42, num_bootstrap=20, seed=0)
  assert (tmp_path / "s.png").stat().st_size > 10_000


def test_bad_results_file_is_named(tmp_path):
  (tmp_path / "x.json").write_text(json.dumps({"partial": False, "config_values": {"model": {}}}))
  with pytest.raises(ValueError, match=r"x\.json: not a finished scaling run"):
    scaling_study.collect(str(tmp_path))
  (tmp_path / "x.json").unlink()
  with pytest.raises(ValueError, match="no finished runs"):
    scaling_study.collect(str(tmp_path))


def _write_ranking_run(runs_dir, model, size, seed, flops, ne):
  best = {"epoch": 3, "split": "valid", "mean": {"ne": ne, "auc": 0.7}}
  record = {"partial": False, "task": "ranking", "dataset": "synthetic", "config": f"kunlun_scaling_synthetic_{model}_{size}",
            "seed": seed, "commit": "abc", "num_params": 1000, "steps": 40, "epochs": 4.0, "wall_clock_s": 60.0,
            "train_flops": {"flops": flops, "examples": 5120, "steps": 40, "per_example": flops / 5120},
            "config_values": {"model": {"name": "kunlun", "dim": int(size[1:]), "layers": 3}},   # both: a Kunlun config
            "metrics": {"best_epoch": best, "per_epoch": [best], "test": {"mean": {"ne": ne + 0.01, "auc": 0.7, "gauc": 0.6}}}}
  (runs_dir / f"{model}_{size}_s{seed}.json").write_text(json.dumps(record))


def test_ranking_runs_fit_ne_and_the_gap_at_equal_compute(tmp_path):
  """NE = 0.95 − η·log10(C / 1e12): Kunlun η = 0.02 at 0.01 lower NE, InterFormer-lite η = 0.01.
  Slope ratio 2; at the geometric-mean compute C* the gap is −0.01 + (−0.02 + 0.01)·log10(C*/1e12)."""
  runs_dir = tmp_path / "runs"
  runs_dir.mkdir()
  rng = np.random.default_rng(1)
  flops = {"d8": 1e11, "d16": 4e11, "d32": 1.6e12, "d64": 6.4e12}
  for size, c in flops.items():
    x = np.log10(c / 1e12)
    _write_ranking_run(runs_dir, "kunlun", size, 42, c, 0.94 - 0.02 * x + rng.normal(0, 1e-4))
    _write_ranking_run(runs_dir, "interformer_lite", size, 42, c * 1.3, 0.95 - 0.01 * np.log10(c * 1.3 / 1e12)
                       + rng.normal(0, 1e-4))
  rows = scaling_study.collect(str(runs_dir))
  assert scaling_study.task_of(rows) == "ranking" and len(rows) == 8
  assert {r["model"] for r in rows} == {"kunlun", "interformer_lite"}   # the family from the run's name
  scaling_study.write_csv(str(tmp_path / "runs.csv"), rows)
  with open(tmp_path / "runs.csv") as f:
    assert tuple(next(csv.reader(f))) == scaling_study.RANKING_COLUMNS
  assert scaling_study.markdown_table(rows).count("\n") == len(rows) + 1
  out = scaling_study.study(rows, a="kunlun", b="interformer_lite", fit_seed=42, num_bootstrap=50, seed=0,
                            workdirs="ignored for ranking")
  eff = out["efficiency"]["valid_ne:log_linear"]
  assert eff["slope_ratio"]["value"] == pytest.approx(2.0, rel=0.05)
  x = np.log10(out["at_compute"] / 1e12)
  want_gap = (0.94 - 0.02 * x) - (0.95 - 0.01 * x)
  gap = eff["gap_at_compute"]
  assert gap["value"] == pytest.approx(want_gap, abs=5e-4) and gap["lo"] <= gap["value"] <= gap["hi"] < 0
  assert "over_users" not in eff and "valid_ne:power_law" in out["fits"]
  scaling_study.plot(str(tmp_path / "r.png"), rows, a="kunlun", b="interformer_lite", fit_seed=42,
                     num_bootstrap=20, seed=0)
  assert (tmp_path / "r.png").stat().st_size > 10_000
  # a folder that mixes tasks is refused
  _write_run(runs_dir, tmp_path / "wd", "hstu", "d8", 42, 1e11, rng)
  with pytest.raises(ValueError, match="several tasks"):
    scaling_study.collect(str(runs_dir))
