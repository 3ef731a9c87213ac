"""The jitted training step and the evaluation step.

One batch: `model.apply` -> outputs [B, L, D] and the tied item table -> packed supervised positions
(`token_index`) -> loss (sampled or full softmax) -> gradients -> optax update. The state buffers
are donated, and nothing in the step syncs with the host.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recjax import losses
from recjax.metrics.retrieval import target_ranks
from recjax.train.state import TrainState


def packed_outputs(out_BLD, labels_BL, token_index_T):
  """Rows of the supervised positions: (user vectors [T, D], positive ids [T])."""
  d = out_BLD.shape[-1]
  return out_BLD.reshape(-1, d)[token_index_T], labels_BL.reshape(-1)[token_index_T]


def loss_fn(params, model, batch, key, loss_cfg, catalogue):
  dropout_key, negatives_key = jax.random.split(key)
  out_BLD, table_VD = model.apply({"params": params}, batch, train=True, rngs={"dropout": dropout_key})
  user_TD, pos_T = packed_outputs(out_BLD, batch["labels"], batch["token_index"])
  weight_T = batch["token_weight"]
  if loss_cfg.kind == "sampled_softmax":
    neg_TN = losses.sample_negatives(negatives_key, user_TD.shape[0], loss_cfg.num_negatives, catalogue)
    return losses.sampled_softmax_loss(user_TD, table_VD, pos_T, neg_TN, weight_T,
                                       temperature=loss_cfg.temperature, chunk=loss_cfg.chunk,
                                       impl=loss_cfg.get("impl", "auto"))
  if loss_cfg.kind == "full_softmax":
    return losses.full_softmax_loss(user_TD, table_VD, pos_T, weight_T, temperature=loss_cfg.temperature,
                                    catalogue=catalogue, item_chunk=loss_cfg.item_chunk)
  raise ValueError(f"unknown loss.kind {loss_cfg.kind!r} (sampled_softmax | full_softmax)")


def make_train_step(model, tx: optax.GradientTransformation, loss_cfg, catalogue: np.ndarray, base_key):
  """Returns step(state, batch) -> (state, loss). The step's randomness is fold_in(base_key, step),
  so a resumed run draws the same dropout masks and negatives as an uninterrupted one."""
  catalogue = jnp.asarray(catalogue, jnp.int32)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state: TrainState, batch):
    key = jax.random.fold_in(base_key, state.step)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, model, batch, key, loss_cfg, catalogue)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), loss

  return step


def make_eval_step(model, catalogue: np.ndarray, num_items: int, exclude_history: bool):
  """Returns ranks(params, batch) -> [B] rank of each target over the full catalogue.

  Query = the L2-normalised output at the last real position; candidates = every catalogue item,
  L2-normalised; items in the input window are removed when `exclude_history` (the reference's
  `filter_invalid_ids`)."""
  catalogue = np.asarray(catalogue, np.int64)
  col_of_item = np.full((num_items,), -1, np.int32)
  col_of_item[catalogue] = np.arange(len(catalogue), dtype=np.int32)
  catalogue_j = jnp.asarray(catalogue, jnp.int32)
  col_of_item = jnp.asarray(col_of_item)

  @jax.jit
  def ranks(params, batch):
    out_BLD, table_VD = model.apply({"params": params}, batch, train=False)
    b = out_BLD.shape[0]
    rows = jnp.arange(b)
    u_BD = losses.l2_normalize(out_BLD[rows, jnp.maximum(batch["lengths"] - 1, 0)])
    scores_BC = u_BD @ losses.l2_normalize(table_VD[catalogue_j]).T
    targets = batch["targets"]
    col = col_of_item[targets]
    direct = jnp.sum(u_BD * losses.l2_normalize(table_VD[targets]), axis=-1)
    target_scores = jnp.where(col >= 0, scores_BC[rows, jnp.maximum(col, 0)], direct)
    excluded = target_excluded = None
    if exclude_history:
      seen_BV = jnp.zeros((b, table_VD.shape[0]), bool).at[rows[:, None], batch["ids"]].set(True)
      seen_BV = seen_BV.at[:, 0].set(False)
      excluded = seen_BV[:, catalogue_j]
      target_excluded = seen_BV[rows, targets]
    return target_ranks(scores_BC, target_scores, excluded, target_excluded)

  return ranks
