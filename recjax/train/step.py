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
from recjax.metrics.retrieval import catalogue_chunks, catalogue_ranks
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


def make_eval_step(model, catalogue: np.ndarray, num_items: int, exclude_history: bool,
                   item_chunk: int = 4096):
  """Returns ranks(params, batch) -> [B] rank of each target over the full catalogue.

  Query = the L2-normalised output at the last real position; candidates = every catalogue item,
  L2-normalised, scored `item_chunk` at a time (`metrics.retrieval.catalogue_ranks`), so memory is
  O(B * item_chunk) at any catalogue size; items in the input window are removed when
  `exclude_history` (the reference's `filter_invalid_ids`), and a target among them is a miss.
  The default chunk keeps one chunk's [512, 4096] scores (8 MB) in cache; on the 2-core CPU a
  65536-item chunk was 2-4x slower (results/bench/eval_cpu_chunk65536.json)."""
  ids_NK, valid_NK = catalogue_chunks(catalogue, num_items, item_chunk)
  # Arguments, not closed-over constants: a 10M-id catalogue would otherwise be baked into the program.
  ids_NK, valid_NK = jnp.asarray(ids_NK), jnp.asarray(valid_NK)

  @jax.jit
  def _ranks(params, batch, ids_NK, valid_NK):
    out_BLD, table_VD = model.apply({"params": params}, batch, train=False)
    rows = jnp.arange(out_BLD.shape[0])
    u_BD = losses.l2_normalize(out_BLD[rows, jnp.maximum(batch["lengths"] - 1, 0)])
    return catalogue_ranks(u_BD, table_VD, ids_NK, valid_NK, batch["targets"],
                           batch["ids"] if exclude_history else None, item_transform=losses.l2_normalize)

  def ranks(params, batch):
    return _ranks(params, batch, ids_NK, valid_NK)

  return ranks
