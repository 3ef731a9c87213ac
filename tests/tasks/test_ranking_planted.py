"""The ranking task's planted subset on a long-range world: the candidates that are planted
return-phase events (where the signal beyond the newest events lives), and their metrics."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from configs import hstu_rank_synthetic, long_world
from recjax import tasks
from recjax.data import kuairand
from recjax.data import synthetic as sy
from recjax.metrics import ranking as rm

# QUICK_WORLD's structure, smaller: 16 users, histories 300-600 (return phase: the last 10%).
TINY_LONG = dict(long_world.QUICK_WORLD, num_users=16, mean_seq_len=400.0, min_seq_len=300, max_seq_len=600)


class _ItemScorer:
  """A stand-in model: a fixed logit per candidate item (the task's evaluator only calls apply)."""

  def apply(self, variables, batch, train=False):
    del variables, train
    z_NC = (batch["cand_ids"] % 7).astype(jnp.float32) * 0.4 - 3.0
    return {"logits": jnp.broadcast_to(z_NC[..., None], z_NC.shape + (len(kuairand.ACTION_BITS),))}


@pytest.fixture(scope="module")
def planted_task(tmp_path_factory):
  c = hstu_rank_synthetic.ranking_base("planted_subset_test")
  c.data.world = dict(TINY_LONG)
  c.ranking.update(dict(history_len=64, request_size=8, test_k=32, valid_k=16, min_history=8))
  return tasks.make_task(c, str(tmp_path_factory.mktemp("planted")))


def test_planted_subset_is_the_return_phase_candidates(planted_task):
  task = planted_task
  world = sy.build_world(sy.WorldConfig(**TINY_LONG))     # the generator's own truth, not the files
  phase_E = world.long_range["planted_phase"][world.log["is_rand"] == 0]   # the reader's events, in order
  for split, ex in task.examples.items():
    ev = ex.arrays["cand_event"]
    want = (ev >= 0) & (phase_E[np.maximum(ev, 0)] == sy.PLANTED_RETURN)
    np.testing.assert_array_equal(task.planted[split], want, err_msg=split)
  test = task.planted["test"]
  assert 0 < test.sum() < (task.examples["test"].arrays["cand_mask"] > 0).sum()
  assert not task.planted["train"][task.examples["train"].arrays["cand_event"] < 0].any()


def test_planted_metrics_are_the_metrics_of_the_subset(planted_task):
  task = planted_task
  got = task.evaluator(_ItemScorer())({}, "test")
  ex = task.examples["test"]
  real = ex.arrays["cand_mask"] > 0
  sel = task.planted["test"][real]
  z = (ex.arrays["cand_ids"][real] % 7) * 0.4 - 3.0
  p = np.repeat((1 / (1 + np.exp(-z)))[:, None], len(task.task_names), 1)
  users = np.broadcast_to(ex.arrays["user_ids"][:, None], real.shape)[real]
  want = rm.multitask_metrics(p[sel], ex.arrays["cand_labels"][real][sel], task.task_names,
                              user_N=users[sel], oracle_NT=task.oracle["test"][real][sel])
  assert got["planted"]["candidates"] == int(sel.sum())
  for key in ("ne", "oracle_ne", "gap_closed", "auc"):
    assert got["planted"]["mean"][key] == pytest.approx(want["mean"][key], rel=1e-5, nan_ok=True), key
  # The overall metrics are untouched by the subset, and the headline carries the planted NE.
  assert got["is_click"]["count"] == real.sum()
  assert {"planted.mean.ne", "planted.mean.oracle_ne", "planted.mean.gap_closed"} <= set(task.test_headline)
