"""The ranking task with the ragged history layout: the same requests and the same metrics as the
padded layout, with batches only as wide as their histories' length bucket."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import hstu_rank_synthetic
from recjax import tasks
from recjax.models import init_params


@pytest.mark.slow   # ~40 s on the loaded 2-core box (a world, four compiled widths)
def test_ragged_task_trains_on_the_same_requests_and_evaluates_identically(tmp_path):
  config = hstu_rank_synthetic.get_config("quick")
  padded = tasks.make_task(config, str(tmp_path))
  config.ranking.history_layout = "ragged"
  config.ranking.bucket_min = 4                    # widths 4, 8, 16 (history_len 16)
  ragged = tasks.make_task(config, str(tmp_path))  # same workdir: the same generated world
  model, _, _ = padded.build_model()
  params = init_params(model, jax.random.key(0), padded.init_batch())
  # One epoch of bucketed batches holds every training request once, each batch no wider than needed.
  b = config.train.batch_size
  ds = ragged.train_dataset(b, 1, seed=0)
  assert len(ds) == ragged.steps_per_epoch(b)
  widths, seen = set(), []
  for i in range(len(ds)):
    batch = ds[i]
    real = batch["cand_mask"].any(1)
    widths.add(batch["hist_ids"].shape[1])
    assert batch["hist_ids"].shape[1] in (4, 8, 16) and batch["hist_lengths"].max() <= batch["hist_ids"].shape[1]
    seen.append(batch["cand_ids"][real])
  assert len(widths) > 1
  want = padded.examples["train"].arrays["cand_ids"]
  assert sorted(map(tuple, np.concatenate(seen))) == sorted(map(tuple, want))
  # Evaluation: rows grouped by bucket, predictions put back in request order -> the same metrics.
  got, ref = ragged.evaluator(model)(params, "test"), padded.evaluator(model)(params, "test")
  for name in padded.task_names + ("mean",):
    for key in ("ne", "auc", "gauc", "oracle_ne"):
      assert got[name][key] == pytest.approx(ref[name][key], rel=1e-5, abs=1e-6, nan_ok=True), (name, key)
