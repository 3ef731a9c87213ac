"""The evaluation step: streamed ranks equal the old dense path on a real model, and the history
filter (`eval.exclude_history`) removes window items and makes a seen target a miss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from recjax import losses
from recjax.metrics.retrieval import MISS_RANK, catalogue_ranks_reference
from recjax.models.sasrec import SASRec
from recjax.train.step import make_eval_step


class FixedModel:
  """Stand-in model: `apply` returns the outputs [B, L, D] and item table [V, D] held in params."""

  def apply(self, variables, batch, train=False):
    del batch, train
    return variables["params"]["out"], variables["params"]["table"]


def _fixed_case():
  """Three users whose last-position vector is (1, 0); the cosine score of item i is its first
  coordinate: item 1 scores 1.0 (above everything), items 2..6 score .9 .8 .7 .6 .5."""
  angles = np.arccos([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
  table = np.zeros((7, 2), np.float32)
  table[1:, 0], table[1:, 1] = np.cos(angles), np.sin(angles)
  out = np.zeros((3, 4, 2), np.float32)
  out[:, :, 0] = 1.0
  batch = {
      "ids": jnp.asarray([[1, 2, 0, 0],      # both items above the target are history
                          [1, 1, 1, 0],      # one item above the target, three times
                          [5, 3, 6, 0]],     # the target itself is history
                         jnp.int32),
      "lengths": jnp.asarray([2, 3, 3], jnp.int32),
      "targets": jnp.asarray([3, 3, 3], jnp.int32),   # score .8: items 1 and 2 outscore it
  }
  return {"out": jnp.asarray(out), "table": jnp.asarray(table)}, batch


@pytest.mark.parametrize("item_chunk", [1, 4, 4096])
def test_history_filter_ignores_window_items_and_misses_seen_targets(item_chunk):
  params, batch = _fixed_case()
  catalogue = np.arange(1, 7)
  on = np.asarray(make_eval_step(FixedModel(), catalogue, 7, True, item_chunk)(params, batch))
  off = np.asarray(make_eval_step(FixedModel(), catalogue, 7, False, item_chunk)(params, batch))
  np.testing.assert_array_equal(on, [1, 2, MISS_RANK])
  np.testing.assert_array_equal(off, [3, 3, 3])


@pytest.mark.parametrize("exclude_history", [True, pytest.param(False, marks=pytest.mark.slow)])   # 10-min suite
def test_eval_step_equals_the_dense_path_on_a_real_model(exclude_history):
  """A small SASRec with random weights; catalogue ⊂ table rows; windows with repeats and targets
  inside and outside them, and outside the catalogue: the step's ranks at several chunk sizes equal
  the dense reference on the same outputs."""
  v, b, l = 120, 32, 10
  rng = np.random.default_rng(0)
  model = SASRec(num_items=v, dim=16, num_blocks=1, num_heads=1, ffn_dim=16, max_len=l, dropout=0.0)
  lengths = rng.integers(1, l + 1, b).astype(np.int32)
  ids = rng.integers(1, 25, (b, l)).astype(np.int32)   # few distinct ids: repeats in most windows
  ids[np.arange(l)[None] >= lengths[:, None]] = 0
  targets = rng.integers(1, 30, b).astype(np.int32)
  batch = {"ids": jnp.asarray(ids), "lengths": jnp.asarray(lengths), "targets": jnp.asarray(targets)}
  params = model.init(jax.random.key(0), batch)["params"]
  catalogue = np.setdiff1d(np.arange(1, v), [7, 11, 50])   # targets 7 and 11 are not candidates
  out, table = model.apply({"params": params}, batch)
  u = losses.l2_normalize(out[jnp.arange(b), lengths - 1])
  want = np.asarray(catalogue_ranks_reference(u, table, catalogue, batch["targets"],
                                              batch["ids"] if exclude_history else None,
                                              item_transform=losses.l2_normalize))
  if exclude_history:
    assert (want == MISS_RANK).any() and (want < MISS_RANK).any()
  for chunk in (29, len(catalogue)):   # 29 does not divide C = 116
    got = make_eval_step(model, catalogue, v, exclude_history, chunk)(params, batch)
    np.testing.assert_array_equal(np.asarray(got), want, err_msg=f"item_chunk={chunk}")


def test_eval_step_rejects_a_catalogue_with_padding():
  with pytest.raises(ValueError, match="padding"):
    make_eval_step(FixedModel(), np.arange(0, 6), 7, True)
