"""The jitted training step, the same for every task.

One batch: the task's loss(params, batch, key) -> gradients -> optax update. The state buffers are
donated, and nothing in the step syncs with the host. The step's randomness is
fold_in(base_key, step), so a resumed run draws the same dropout masks and negatives as an
uninterrupted one.

`loss_fn`, `packed_outputs`, `make_eval_step` (retrieval) live in `recjax/tasks/retrieval.py` and
are re-exported here, with `make_train_step(model, tx, loss_cfg, catalogue, key)`, for the scripts
and notebook that build a retrieval step by hand.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from recjax import compile_options
from recjax.tasks.retrieval import loss_fn, make_eval_step, packed_outputs  # noqa: F401  (re-exports)
from recjax.train.state import TrainState


def make_step(loss, tx: optax.GradientTransformation, base_key):
  """Returns step(state, batch) -> (state, loss) for `loss(params, batch, key) -> scalar`."""

  # The memory-optimized XLA:CPU schedule: a smaller activation block, same results (compile_options.py).
  @functools.partial(jax.jit, donate_argnums=(0,), compiler_options=compile_options.step_options())
  def step(state: TrainState, batch):
    key = jax.random.fold_in(base_key, state.step)
    value, grads = jax.value_and_grad(loss)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return TrainState(state.step + 1, params, opt_state), value

  return step


def make_train_step(model, tx: optax.GradientTransformation, loss_cfg, catalogue: np.ndarray, base_key,
                    mesh=None):
  """The retrieval step: step(state, batch) -> (state, loss) with `tasks.retrieval.loss_fn`
  (`mesh`: the device mesh of a sharded step, for `loss.impl="shard_map"`)."""
  catalogue = jnp.asarray(catalogue, jnp.int32)

  def loss(params, batch, key):
    return loss_fn(params, model, batch, key, loss_cfg, catalogue, mesh)
  return make_step(loss, tx, base_key)
