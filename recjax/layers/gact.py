"""GACT: Global-Aware Compression Transformer (papers.md §4.2; the design is INFERRED, not the paper's).

    x_BLD  (L events)  --fold f-->  [B, M, f·D], M = ⌈L / f⌉  --Linear f·D -> D-->  [B, M, D]
    z = [context C | folded history M | global queries G]  --attention stack-->  outputs

* Temporal folding (non-parametric): events f·m .. f·m + f - 1 are concatenated along the
  feature axis into folded token m (no learned pooling); events past a row's length are zeroed
  first, and the row has ⌈length / f⌉ folded tokens. One linear map takes f·D back to D (none at
  f = 1, so f = 1 is the identity).
* Causality at fold granularity: the stack is causal over folded tokens, so the output at folded
  token m depends on events < f·(m + 1) only (its own fold included, whole). It may therefore be
  used to predict events at f·(m + 1) and later, never the events inside its own fold.
* Global tokens: optional user/request context tokens `context_BCD` form a prefix every token
  sees (`MaskSpec.contextual_prefix`). The G learned global queries sit right after each row's
  last real folded token, as candidates do (`MaskSpec.num_targets`): each reads the context and the
  whole folded history and itself, and no history token reads them. That is the "global-aware"
  part: they see everything, yet the per-position outputs stay causal. (Prepended queries under a
  causal mask would see nothing; prepended queries that see all history would leak the future
  into every history token through the next layer.) Their outputs are the user representation.
* Cost: attention over C + ⌈L / f⌉ + G tokens instead of L: scores shrink by ≈ f².

The attention stack is the shared pre-norm `TransformerBlock` (`layers/transformer.py`: softmax
attention through the one `attention` entry point, then a GELU FFN), given GACT's mask per call;
with f = 1, G = 0 and no context GACT is exactly that stack under a plain causal mask.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax.layers.transformer import TransformerBlock


FOLD_ALIGNS = ("oldest", "newest")


def fold_time(x_BLD: jax.Array, lengths_B: jax.Array, fold: int, align: str = "oldest"
              ) -> tuple[jax.Array, jax.Array]:
  """Concatenate `fold` consecutive events along features -> (x_BMF [B, ⌈L/f⌉, f·D], lengths_B).

  Events at or past a row's length are zeroed, so padding never enters a partly filled fold.
  `align` says which end of a row the folds start from when its length is not a multiple of f:
    "oldest": folds start at event 0, so the partly filled fold is the newest one, and the newest
              event sits in slot (length - 1) mod f of it: a different slot for different lengths;
    "newest": each row is shifted right by (-length) mod f zero slots first, so the partly filled
              fold is the oldest one and the newest event always sits in the last slot of the last
              fold, whatever the length (the projection f·D -> D then sees the newest events in
              fixed slots, as truncation's attention sees them at fixed distances).
  Both give ⌈length / f⌉ folded tokens; they agree where f divides the length.
  """
  if fold < 1:
    raise ValueError(f"fold must be >= 1, got {fold}")
  if align not in FOLD_ALIGNS:
    raise ValueError(f"fold align must be one of {FOLD_ALIGNS}, got {align!r}")
  b, l, d = x_BLD.shape
  m = -(-l // fold)
  lengths_B = jnp.asarray(lengths_B, jnp.int32)
  x_BLD = jnp.where(jnp.arange(l)[None, :, None] < lengths_B[:, None, None], x_BLD, 0)
  if align == "newest" and fold > 1:
    # Slot j of the shifted row holds event j - shift (zero where that is before event 0); the
    # shifted length, length + shift, is a multiple of f and at most m·f, so nothing is lost.
    shift_B = (-lengths_B) % fold
    src_BL = jnp.arange(m * fold)[None, :] - shift_B[:, None]
    x_BLD = jnp.where((src_BL >= 0)[..., None],
                      jnp.take_along_axis(x_BLD, jnp.clip(src_BL, 0, l - 1)[..., None], axis=1), 0)
  else:
    x_BLD = jnp.pad(x_BLD, ((0, 0), (0, m * fold - l), (0, 0)))
  return x_BLD.reshape(b, m, fold * d), -(-lengths_B // fold)


class GACT(nn.Module):
  """Fold, add context and global queries, run the stack.

  __call__(x_BLD, lengths_B, context_BCD=None) -> (history_BMD, global_BGD, lengths_B of M):
    history_BMD [B, ⌈L/f⌉, D]: folded-token outputs (zeros past each row's folded length);
    global_BGD [B, G, D]: the global queries' outputs.
  """
  dim: int
  fold: int = 4
  num_global: int = 4
  num_blocks: int = 2
  num_heads: int = 1

  def setup(self):
    if self.fold < 1:
      raise ValueError(f"GACT.fold must be >= 1, got {self.fold}")
    if self.num_global < 0:
      raise ValueError(f"GACT.num_global must be >= 0, got {self.num_global}")
    self.project = nn.Dense(self.dim, name="fold_proj") if self.fold > 1 else None
    self.global_queries = (self.param("global_queries", nn.initializers.normal(0.02),
                                      (self.num_global, self.dim)) if self.num_global else None)
    if self.dim % self.num_heads:
      raise ValueError(f"GACT.dim {self.dim} is not divisible by num_heads {self.num_heads}")
    # The shared pre-norm block (layers/transformer.py); GACT gives it its own mask per call.
    self.blocks = [TransformerBlock(self.num_heads, self.dim // self.num_heads, 4 * self.dim, activation="gelu",
                                    name=f"block_{i}") for i in range(self.num_blocks)]

  def __call__(self, x_BLD, lengths_B, context_BCD=None):
    b, _, d = x_BLD.shape
    if d != self.dim:
      raise ValueError(f"GACT input has feature size {d}, expected dim={self.dim}")
    lengths_B = jnp.asarray(lengths_B, jnp.int32)
    x_BMF, m_len_B = fold_time(x_BLD, lengths_B, self.fold)
    x_BMD = x_BMF if self.project is None else self.project(x_BMF)
    m, g = x_BMD.shape[1], self.num_global
    c = 0 if context_BCD is None else context_BCD.shape[1]
    parts = ([] if context_BCD is None else [context_BCD]) + [x_BMD, jnp.zeros((b, g, d), x_BMD.dtype)]
    z = jnp.concatenate(parts, axis=1)
    global_pos_BG = c + m_len_B[:, None] + jnp.arange(g)[None, :]     # right after the real tokens
    if g:
      z = z.at[jnp.arange(b)[:, None], global_pos_BG].set(
          jnp.broadcast_to(self.global_queries.astype(z.dtype), (b, g, d)))
    mask = MaskSpec(causal=True, contextual_prefix=c, num_targets=g)
    n_B = c + m_len_B + g
    for block in self.blocks:
      z = block(z, n_B, mask=mask)
    history_BMD = jnp.where(jnp.arange(m)[None, :, None] < m_len_B[:, None, None], z[:, c:c + m], 0)
    global_BGD = jnp.take_along_axis(z, global_pos_BG[..., None], axis=1)
    return history_BMD, global_BGD, m_len_B
