"""The explicit train state: step, params and optimizer state, one pytree."""
from __future__ import annotations

from typing import Any

import flax
import jax
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(train_cfg) -> optax.GradientTransformation:
  """Adam(W) with a constant learning rate, as in the HSTU reference (AdamW, weight decay 0)."""
  return optax.adamw(train_cfg.learning_rate, b1=train_cfg.b1, b2=train_cfg.b2, eps=train_cfg.eps,
                     weight_decay=train_cfg.weight_decay)
