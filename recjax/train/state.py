"""The explicit train state: step, params and optimizer state, one pytree."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def learning_rate(train_cfg):
  """`train.lr_schedule`: "constant" (default; the HSTU reference) or "inverse_sqrt" (T5 / TIGER:
  the rate for `train.warmup_steps` steps, then rate * sqrt(warmup / step))."""
  lr, kind = train_cfg.learning_rate, train_cfg.get("lr_schedule", "constant")
  if kind == "constant":
    return lr
  if kind == "inverse_sqrt":
    warmup = train_cfg.get("warmup_steps", 0)
    if warmup < 1:
      raise ValueError(f"train.lr_schedule='inverse_sqrt' needs train.warmup_steps >= 1, got {warmup}")
    return lambda step: lr * jnp.sqrt(warmup / jnp.maximum(step, warmup).astype(jnp.float32))
  raise ValueError(f"unknown train.lr_schedule {kind!r} (constant | inverse_sqrt)")


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  """Adam(W) at `learning_rate(train_cfg)`; the HSTU reference: AdamW, constant rate, weight decay 0."""
  return optax.adamw(learning_rate(train_cfg), b1=train_cfg.b1, b2=train_cfg.b2, eps=train_cfg.eps,
                     weight_decay=train_cfg.weight_decay)
