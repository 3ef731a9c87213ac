"""HSTU as a multi-task ranker (HSTU §3 / ULTRA-HSTU §2.1 layout, papers.md).

Per request: the history tokens (item + action + watch + tab embeddings, oldest first) and then
the C candidate tokens (item + tab + item features; no action), one sequence. The user context
enters in one of two ways (`user_context`):

    "sum":    [ h_1 … h_n | c_1 … c_C | padding ]             every c_k + Σ_f E_f[user feature f]
    "tokens": [ u_1 … u_Fu | h_1 … h_n | c_1 … c_C | padding ]  one token per user feature

"tokens" is ULTRA-HSTU's `[contextual | history | candidates]` layout (papers.md §2.1): the
candidate's query meets each feature's key on its own (a learned, per-feature interaction, as
DLRM's dot products), instead of a sum of Fu embeddings drowning the candidate's own item in its
token (KuaiRand has 26 user features, most of them uninformative). "sum" is the older layout,
kept so the results that used it stay reproducible.

HSTU blocks run under `MaskSpec(causal=True, num_targets=C)`: context and history rows are
causal, a candidate row sees the context, the whole history and itself but no other candidate,
so a candidate's score is the same whether it is ranked alone or with others. Positions are embedded as the distance to the
request (recency: the newest history event is 1, every candidate 0), which keeps candidates
exchangeable; context tokens carry no position (their tables are per feature already). The
relative bias is the time part only (history row j asks at the next event's time, candidates at
the request time, context tokens sit at the request time). One logit per task from the candidate's output, and
optionally a watch-ratio regression output.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax.layers.dropout import Dropout
from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs
from recjax.models.hstu import HSTUBlock


def merge_history_and_candidates(hist_NHX: jax.Array, cand_NCX: jax.Array, hist_lengths_N: jax.Array
                                 ) -> jax.Array:
  """[N, H, ...] history and [N, C, ...] candidates -> [N, H + C, ...] with the candidates right
  after each row's real history (positions n .. n + C - 1), zeros after them."""
  h, c = hist_NHX.shape[1], cand_NCX.shape[1]
  p = jnp.arange(h + c)[None, :]
  n = hist_lengths_N[:, None]
  src = jnp.where(p < n, p, jnp.where(p < n + c, h + p - n, 0))
  both = jnp.concatenate([hist_NHX, cand_NCX], axis=1)
  src = src.reshape(src.shape + (1,) * (both.ndim - 2))
  out = jnp.take_along_axis(both, src, axis=1)
  keep = p < n + c
  keep = keep.reshape(keep.shape + (1,) * (both.ndim - 2))
  return jnp.where(keep, out, jnp.zeros_like(out))


class HSTURanker(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 64
  num_blocks: int = 2
  num_heads: int = 2
  dqk: int = 32
  dv: int = 32
  max_history: int = 256        # recency-position table covers distances 0..max_history
  attn_norm_len: int = 128      # N: attention weights are divided by it (a constant, as in HSTU)
  dropout: float = 0.1
  use_time_bias: bool = True
  num_time_buckets: int = 129
  backend: str = "xla"
  attention_impl: str = "auto"  # "auto": the C++ attention kernel on CPU (layers/native_attention.py) | "xla" | "native"
  watch_head: bool = False
  user_context: str = "sum"     # "sum" into every candidate token, or "tokens": one prefix token each
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    n, h = batch["hist_ids"].shape
    c = batch["cand_ids"].shape[1]
    if h > self.max_history:
      raise ValueError(f"history width {h} exceeds model.max_history={self.max_history}")
    if self.user_context not in ("sum", "tokens"):
      raise ValueError(f"model.user_context must be 'sum' or 'tokens', got {self.user_context!r}")
    inputs = RankingInputs(self.num_items, self.dim, self.num_tasks, self.user_vocab, self.item_vocab,
                           self.num_tabs, self.num_watch_buckets, name="inputs")
    hist_x, valid = inputs.history(batch)
    user_NFD = inputs.user(batch)
    cand_x = inputs.candidates(batch)
    if self.user_context == "sum":
      cand_x = cand_x + user_NFD.sum(-2)[:, None, :]
    lengths = batch["hist_lengths"].astype(jnp.int32)
    positions = nn.Embed(self.max_history + 1, self.dim, name="recency_embedding",
                         embedding_init=nn.initializers.normal(math.sqrt(2.0 / (self.max_history + self.dim))))
    recency = jnp.where(valid, lengths[:, None] - jnp.arange(h)[None, :], 0)
    hist_x = (hist_x * math.sqrt(self.dim) + positions(recency)) * valid[..., None]
    cand_x = cand_x * math.sqrt(self.dim) + positions(jnp.zeros((n, c), jnp.int32))
    x = merge_history_and_candidates(hist_x, cand_x, lengths)
    # A fixed-width prefix: every row's context occupies slots 0 .. Fu - 1, so lengths shift by Fu.
    fu = user_NFD.shape[1] if self.user_context == "tokens" else 0
    if fu:
      x = jnp.concatenate([user_NFD * math.sqrt(self.dim), x], axis=1)
    x = Dropout(self.dropout)(x, deterministic=not train)
    key_times = query_times = None
    if self.use_time_bias:
      req_N = batch["request_times"].astype(jnp.int32)
      req = jnp.broadcast_to(req_N[:, None], (n, c))
      key_times = merge_history_and_candidates(batch["hist_times"].astype(jnp.int32), req, lengths)
      # History row j asks at the next token's time (for the newest event: the request time);
      # candidate rows at the request time.
      nxt = jnp.concatenate([key_times[:, 1:], key_times[:, -1:]], axis=1)
      is_hist = jnp.arange(h + c)[None, :] < lengths[:, None]
      query_times = jnp.where(is_hist, nxt, req_N[:, None])
      if fu:
        ctx_times = jnp.broadcast_to(req_N[:, None], (n, fu))
        key_times = jnp.concatenate([ctx_times, key_times], axis=1)
        query_times = jnp.concatenate([ctx_times, query_times], axis=1)
    mask = MaskSpec(causal=True, num_targets=c)
    for i in range(self.num_blocks):
      # No relative position bias: it depends on the slot index, so candidates would not be
      # exchangeable; order enters through the recency embedding instead.
      x = HSTUBlock(dim=self.dim, num_heads=self.num_heads, dqk=self.dqk, dv=self.dv,
                    attn_norm_len=self.attn_norm_len, dropout=self.dropout, use_position_bias=False,
                    use_time_bias=self.use_time_bias, num_time_buckets=self.num_time_buckets,
                    backend=self.backend, attention_tiling=False, mask=mask, attention_impl=self.attention_impl,
                    name=f"block_{i}")(x, fu + lengths + c, key_times, query_times, train=train)
    slots = fu + lengths[:, None] + jnp.arange(c)[None, :]
    out_NCD = layer_norm_no_affine(jnp.take_along_axis(x, slots[..., None], axis=1))
    z = nn.silu(nn.Dense(self.dim, name="head_hidden")(out_NCD))
    logits = nn.Dense(self.num_tasks, name="task_logits")(z)
    watch = nn.Dense(1, name="watch_ratio")(z)[..., 0] if self.watch_head else None
    return {"logits": logits, "watch_ratio": watch}
