"""The mixture study's driver (experiments/mixture_study.py): its grid and results file -> runs table."""
import json

import numpy as np

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
