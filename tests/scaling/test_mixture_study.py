"""The mixture study's driver (experiments/mixture_study.py): its grid and results file -> runs table."""
import json

import numpy as np
import pytest

from experiments import mixture_study as ms
from recjax.scaling import runs


def test_grid_mixtures_are_valid_and_keep_every_tab_in_the_fit():
  grid = ms.mixtures()
  assert {"uniform", "corner0", "corner3"} <= set(grid) and len(grid) == 1 + ms.NUM_TABS + ms.DIRICHLET_SAMPLES
  for name, w in grid.items():
    assert len(w) == ms.NUM_TABS and abs(sum(w) - 1) < 1e-9, name
    assert min(w) >= ms.WEIGHT_MIN - 1e-6, name   # the law's MRE counts a tab only at weight >= 0.1
  assert len({w for w in grid.values()}) == len(grid)   # no duplicates


def test_results_file_to_runs_table_row(tmp_path):
  record = {"config": {"name": "x"}, "num_params": 1234, "epochs": 8.0, "wall_clock_s": 1.0,
            "metrics": {"test": {"hr@10": 0.1, "domain_loss": {"0": 5.0, "1": 6.0, "2": 7.0, "3": 8.0}}},
            "dataset_stats": {"domain_mixture": {"weights": [0.4, 0.3, 0.2, 0.1], "pool": [10, 20, 30, 40],
                                                 "targets": [40, 30, 20, 10], "total_targets": 100,
                                                 "realised_shares": [0.4, 0.3, 0.2, 0.1]}}}
  path = tmp_path / "r.json"
  path.write_text(json.dumps(record))
  row = ms.read_run(str(path))
  assert row["n_tokens"] == 800 and row["model_size"] == 1234 and row["mean_loss"] == 6.5
  table = runs.read_runs_csv(ms.write_table([row, row], str(tmp_path / "t.csv")))
  assert table.domains == ("tab0", "tab1", "tab2", "tab3")
  np.testing.assert_allclose(table.losses_MK[1], [5, 6, 7, 8])
  np.testing.assert_allclose(table.weights_MK[0], [0.4, 0.3, 0.2, 0.1])


def test_run_names_carry_the_seed_and_the_default_seed_keeps_the_old_name():
  assert ms.run_name("uniform", 64, 16000) == "d64_t16000_uniform"
  assert ms.run_name("uniform", 64, 16000, seed=2) == "d64_t16000_uniform_seed2"
  assert ms.parse_run_name("d64_t16000_bestsmall") == (64, 16000, "bestsmall", ms.DEFAULT_SEED)
  assert ms.parse_run_name("d64_t16000_corner0_seed12") == (64, 16000, "corner0", 12)
  with pytest.raises(ValueError, match="not d<dim>"):
    ms.parse_run_name("uniform_seed1")


def _row(losses, shares=(0.25, 0.25, 0.25, 0.25), hr=0.1):
  return {"weights": list(shares), "losses": list(losses), "mean_loss": float(np.mean(losses)), "hr@10": hr}


def test_seed_comparison_on_fake_runs():
  # predicted is 0.04 worse than uniform at seed 42 but better at the other two; natural is worse at all three.
  big = {"predicted": {42: _row([5.0, 6.0, 7.0, 8.0]), 1: _row([4.9, 5.9, 6.9, 7.9]), 2: _row([4.8, 6.0, 7.0, 7.8])},
         "uniform": {42: _row([4.96, 5.96, 6.96, 7.96]), 1: _row([5.0, 6.0, 7.0, 8.0]), 2: _row([5.0, 6.0, 7.0, 8.0])},
         "natural": {42: _row([6.0, 6.0, 7.0, 8.0]), 1: _row([6.1, 6.0, 7.0, 8.0]), 2: _row([6.2, 6.0, 7.0, 8.0])},
         "bestsmall": {42: _row([5.0, 6.0, 7.0, 8.0]), 1: _row([5.0, 6.0, 7.0, 8.0])}}   # seed 2 missing
  mixes = {m: [0.25] * 4 for m in big}
  out = ms.seed_comparison(big, mixes)
  c = out["comparison"]
  assert c["predicted"]["seeds"] == [1, 2, 42]
  assert c["predicted"]["mean_loss"]["mean"] == pytest.approx(np.mean([6.5, 6.4, 6.4]))
  assert c["predicted"]["mean_loss"]["std"] == pytest.approx(np.std([6.5, 6.4, 6.4], ddof=1))
  np.testing.assert_allclose(c["natural"]["tab_losses"]["mean"], [6.1, 6.0, 7.0, 8.0])
  np.testing.assert_allclose(c["natural"]["tab_losses"]["std"], [0.1, 0.0, 0.0, 0.0], atol=1e-12)
  pu = out["paired"]["predicted_minus_uniform"]
  assert pu["seeds"] == [1, 2, 42]
  np.testing.assert_allclose(pu["diffs"], [-0.1, -0.1, 0.04])
  pn = out["paired"]["predicted_minus_natural"]
  assert pn["verdict"] == "better"
  assert out["paired"]["predicted_minus_bestsmall"]["n"] == 2   # pairs only the seeds both have
  dw = out["done_when"]
  assert dw["predicted_no_worse_than_uniform"] and dw["predicted_no_worse_than_natural"]
  assert dw["seeds"] == 2 and dw["partial"]    # bestsmall has 2 of FULL_SEEDS seeds
  big["uniform"][2] = _row([5.0, 6.0, 7.0, 8.0], shares=(0.4, 0.2, 0.2, 0.2))
  with pytest.raises(ValueError, match="realised_shares differ"):
    ms.seed_comparison(big, mixes)
