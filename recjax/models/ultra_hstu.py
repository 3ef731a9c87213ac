"""ULTRA-HSTU as a multi-task ranker (arXiv 2602.16986; papers.md §2).

Per request and per stream s (a "transducer" of the mixture), one sequence

    [ context u_1 … u_C | history h_1 … h_n | candidates c_1 … c_T | padding ]

* Summed tokens (§2.1): a history token is ONE token, item + action, not the interleaved pair:
      h_j = E_item[id_j] + Σ_f E_f[feat_jf] + E_tab[tab_j]                      (item part)
            + Σ_b bit_b(action_j & encode_s) A_b + E_watch[bucket_j]             (action part)
            + E_time[bucket(t_request − t_j)] + E_recency[n − j]
  A candidate token has the same item part and a zero action part ("candidate masking": nothing of
  its outcome is an input; `layers/ranking_inputs.py` builds it without ever reading a label).
  `token_layout="interleaved"` is the paper's baseline layout, for the summed-vs-interleaved
  ablation: event j becomes two tokens, its item part then its action part (each with the event's
  time-gap and recency embeddings), so the history costs 2n tokens; causal attention lets the
  action token read its item, never the other way round. K1, K2, L' and `attn_norm_len` count
  tokens, so an arm that wants the same events in each window doubles them (configs/long_sequences.py
  `ultra_interleaved`). Not combined with GACT folding (a fold would mix item and action halves).
* Heterogeneous action encoding: the explicit feedbacks are the 8-bit KuaiRand bitmask
  (`hist_actions`: click, like, follow, comment, forward, hate, long_view, profile_enter), the
  implicit one the bucketed watch ratio (`hist_watch`, 8 buckets of play / duration, 0 = unknown).
  KuaiRand logs and the synthetic worlds (KuaiRand format) provide both; MovieLens batches carry
  zeros there (no action, unknown watch), so the action part vanishes. The paper also puts the
  user context at action time into the action; the batch has no per-event context, so the context
  enters as the C context tokens (the user feature embeddings, one token per feature).
* Semi-local attention (§2.2): `MaskSpec(local_window=K1, global_prefix=C + K2,
  contextual_prefix=C, num_targets=T)` through the one attention entry point, evaluated blockwise
  (`layers/sla.py`, linear in L). Choices where the paper is silent: K2 counts global *history*
  columns after the context (the context tokens are always global), so K2 = 0 is "context + local";
  history is oldest first, so the global columns are the oldest events (TorchEasyRec's ascending
  order). K1 counts keys with the diagonal; K1 = 0 (the "global only" ablation) keeps the
  diagonal, as the paper's K1 = 0 does (its band L − K1 ≤ i + j ≤ L is then the anti-diagonal).
  `sla=False` runs plain causal attention (HSTU's mask with context prefix and targets).
  Candidates see the context, the whole history and themselves, never another candidate.
* Attention truncation (§2.3): the first `full_layers` (N1) blocks run on the whole sequence; then
  only the context, the newest `truncated_len` (L') history tokens and the candidates go on to
  the remaining blocks (`truncated_len=0`: off). A batch whose history width is at most L' is not
  truncated: it has nothing to cut, and its blocks keep its own width rather than L'.
* Mixture of transducers (§2.3): stream s keeps the history events with `action & select_s != 0`
  (`select_s = 0`: every event), in order, and encodes only the bits `encode_s` of their action;
  each stream has its own block stack (the embedding tables are shared). The candidates' outputs
  of the S streams are fused by a sum or by concat + Dense (`fusion`). One stream is plain
  ULTRA-HSTU. E.g. consumption vs engagement on KuaiRand bits: select (0, 190) = (every event,
  events with a like / follow / comment / forward / hate / profile visit), encode (255, 190).
  `stream_len` gives each stream a token budget, its newest k tokens (before any GACT fold), and cuts
  the stream's width to k, so a sparse stream does not run at the whole history's padded width: the
  paper splits one budget between its streams (2k consumption + 1k engagement against 3k mixed).
* One logit per feedback from the fused candidate output (the ranking task's multi-task BCE).
* `remat`: every block under `jax.checkpoint` (`nn.remat`, policy `remat_policy`): activations are
  recomputed in the backward pass; values and gradients are unchanged.

* GACT temporal folding (papers.md §4.2, `layers/gact.py`; `history_fold` f > 1): each stream's
  history tokens (built and selected as above) are folded f at a time along the feature axis
  (`gact.fold_time`, no learned pooling; `fold_align`: folds start at the oldest event (default) or
  end at the newest, which keeps the newest event in a fixed slot) and mapped f·D -> D by one Dense, so the
  stack runs on C + ⌈n/f⌉ + T tokens instead of C + n + T. GACT's global query tokens are the
  ones this layout already has: the user-context prefix every token sees and the candidates
  (which carry the request time through the time-gap embedding), each reading the whole folded
  history. f = 1 is the unfolded model, parameter for parameter. Folding keeps the history
  causal-at-fold-granularity, which is harmless here: every history event precedes every candidate.

No relative attention bias: the blocked SLA path takes none, and a slot-index position bias
would make candidates non-exchangeable; order and time enter through the recency and time-gap
embeddings instead. Stochastic length is the ranking task's (`ranking.sl_alpha`, data/stochastic_length.py): it cuts the
histories before they reach any model; its load-balanced variant is not implemented (see there).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax.layers.dropout import Dropout
from recjax.layers.embeddings import truncated_normal
from recjax.layers.gact import FOLD_ALIGNS, fold_time
from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs
from recjax.layers.relative_bias import time_buckets
from recjax.layers.sla import SLABlocking
from recjax.models.hstu import HSTUBlock
from recjax.models.hstu_ranker import merge_history_and_candidates

FUSIONS = ("sum", "concat_mlp")
TOKEN_LAYOUTS = ("summed", "interleaved")
REMAT_POLICIES = {
    "nothing": None,   # save nothing inside a block: recompute all of it
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,   # keep the projections' outputs
}


def compact_events(keep_NH: jax.Array, *xs):
  """Moves the kept events of each row to the front, in order -> (lengths [N], gathered xs).

  Slots past a row's kept count hold whatever came after (callers mask them with the lengths)."""
  order_NH = jnp.argsort(~keep_NH, axis=1, stable=True)
  gathered = [jnp.take_along_axis(x, order_NH.reshape(order_NH.shape + (1,) * (x.ndim - 2)), axis=1)
              for x in xs]
  return keep_NH.sum(1).astype(jnp.int32), gathered


def newest(x_NLD: jax.Array, start: int, lengths_N: jax.Array, keep: int) -> tuple[jax.Array, jax.Array]:
  """The newest `keep` of the `lengths_N` history tokens at x_NLD[:, start:] -> ([N, keep, D] zero
  padded, their count [N])."""
  kept_N = jnp.minimum(lengths_N, keep)
  j = jnp.arange(keep)[None, :]
  src_NK = start + lengths_N[:, None] - kept_N[:, None] + j
  out = jnp.take_along_axis(x_NLD, jnp.clip(src_NK, 0, x_NLD.shape[1] - 1)[..., None], axis=1)
  return jnp.where((j < kept_N[:, None])[..., None], out, 0.0), kept_N


def interleave(item_NHD: jax.Array, action_NHD: jax.Array) -> jax.Array:
  """[N, H, D] item and action parts of H events -> [N, 2H, D]: item_0, action_0, item_1, action_1, ..."""
  n, h, d = item_NHD.shape
  return jnp.stack([item_NHD, action_NHD], axis=2).reshape(n, 2 * h, d)


def _run_block(block: HSTUBlock, x, lengths_N, train: bool):
  # `train` positional, so that nn.remat can hold it static (static_argnums counts from x).
  return block(x, lengths_N, None, None, train=train)


class UltraHSTU(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 64
  num_blocks: int = 2            # per stream, N1 full + the rest truncated
  num_heads: int = 2
  dqk: int = 32
  dv: int = 32
  max_history: int = 256         # recency table covers distances 0..max_history
  attn_norm_len: int = 128       # N: attention weights are divided by it (a constant, as in HSTU)
  dropout: float = 0.1
  num_time_buckets: int = 129    # time-gap embedding: bucket(t_request − t_j), HSTU's log buckets
  sla: bool = True
  local_window: int = 32         # K1 (keys, with the diagonal); 0 = the diagonal only
  global_window: int = 8         # K2 global history columns after the context
  sla_block: int = 64            # query rows per block of the blocked path; 0 = dense [L, L] mask
  full_layers: int = 1           # N1
  truncated_len: int = 0         # L' (0: no truncation)
  history_fold: int = 1          # GACT fold f: f history events per token (1: off)
  fold_align: str = "oldest"     # which end the folds start from (gact.fold_time): "oldest" | "newest"
  token_layout: str = "summed"   # "summed": item + action in one token; "interleaved": two tokens per event
  stream_select: tuple[int, ...] = (0,)      # per stream: events with action & select != 0 (0: all)
  stream_encode: tuple[int, ...] = (255,)    # per stream: the action bits its tokens encode
  stream_len: tuple[int, ...] = ()           # per stream: its newest k history tokens only (0 or (): all)
  fusion: str = "sum"
  remat: bool = False
  remat_policy: str = "nothing"
  backend: str = "xla"
  watch_head: bool = False
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  def check(self):
    """Raises ValueError on settings that cannot work (called on every trace; all static)."""
    if len(self.stream_select) != len(self.stream_encode) or not self.stream_select:
      raise ValueError(f"model.stream_select {self.stream_select} and model.stream_encode {self.stream_encode} "
                       "must be non-empty and of the same length (one entry per stream)")
    if self.stream_len and (len(self.stream_len) != len(self.stream_select) or min(self.stream_len) < 0):
      raise ValueError(f"model.stream_len {self.stream_len} must be empty or hold one length >= 0 per stream "
                       f"(model.stream_select {self.stream_select}; 0: the stream's whole history)")
    if self.fusion not in FUSIONS:
      raise ValueError(f"model.fusion must be one of {FUSIONS}, got {self.fusion!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"model.remat_policy must be one of {sorted(REMAT_POLICIES)}, got {self.remat_policy!r}")
    if self.local_window < 0 or self.global_window < 0 or self.sla_block < 0:
      raise ValueError(f"model.local_window, global_window and sla_block must be >= 0, got "
                       f"{self.local_window}, {self.global_window}, {self.sla_block}")
    if self.history_fold < 1:
      raise ValueError(f"model.history_fold must be >= 1, got {self.history_fold}")
    if self.fold_align not in FOLD_ALIGNS:
      raise ValueError(f"model.fold_align must be one of {FOLD_ALIGNS}, got {self.fold_align!r}")
    if self.token_layout not in TOKEN_LAYOUTS:
      raise ValueError(f"model.token_layout must be one of {TOKEN_LAYOUTS}, got {self.token_layout!r}")
    if self.token_layout == "interleaved" and self.history_fold > 1:
      raise ValueError("model.token_layout='interleaved' cannot be combined with model.history_fold > 1 "
                       "(a fold would mix item and action tokens)")
    if self.truncated_len < 0 or not 0 <= self.full_layers <= self.num_blocks:
      raise ValueError(f"model.truncated_len must be >= 0 and 0 <= model.full_layers <= num_blocks "
                       f"({self.num_blocks}), got {self.truncated_len}, {self.full_layers}")

  def mask(self, num_context: int, num_targets: int) -> tuple[MaskSpec, SLABlocking | None]:
    if not self.sla:
      return MaskSpec(causal=True, contextual_prefix=num_context, num_targets=num_targets), None
    spec = MaskSpec(causal=True, local_window=max(self.local_window, 1),
                    global_prefix=num_context + self.global_window, contextual_prefix=num_context,
                    num_targets=num_targets)
    return spec, (SLABlocking(self.sla_block) if self.sla_block else None)

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    self.check()
    n, h = batch["hist_ids"].shape
    c = batch["cand_ids"].shape[1]
    if h > self.max_history:
      raise ValueError(f"history width {h} exceeds model.max_history={self.max_history}")
    inputs = RankingInputs(self.num_items, self.dim, self.num_tasks, self.user_vocab, self.item_vocab,
                           self.num_tabs, self.num_watch_buckets, name="inputs")
    scale = math.sqrt(self.dim)
    recency = nn.Embed(self.max_history + 1, self.dim, name="recency_embedding",
                       embedding_init=nn.initializers.normal(math.sqrt(2.0 / (self.max_history + self.dim))))
    time_gap = nn.Embed(self.num_time_buckets, self.dim, name="time_gap_embedding",
                        embedding_init=truncated_normal(0.02))
    lengths = batch["hist_lengths"].astype(jnp.int32)
    valid_NH = jnp.arange(h)[None, :] < lengths[:, None]
    # What every stream shares: the non-action part of a history token, the candidates, the context.
    gap_NH = time_buckets(batch["request_times"][:, None].astype(jnp.int32),
                          batch["hist_times"].astype(jnp.int32), self.num_time_buckets)[:, 0]
    where_NH = (recency(jnp.where(valid_NH, lengths[:, None] - jnp.arange(h)[None, :], 0))
                + time_gap(gap_NH))
    cand_x = self.perturb("candidate_tokens", inputs.candidates(batch) * scale
                          + recency(jnp.zeros((n, c), jnp.int32)))
    ctx_x = inputs.user(batch) * scale                                 # [N, C_ctx, D]
    outs = []
    for s, (select, encode) in enumerate(zip(self.stream_select, self.stream_encode)):
      stream_batch = dict(batch, hist_actions=batch["hist_actions"] & encode)
      keep = valid_NH if select == 0 else valid_NH & ((batch["hist_actions"] & select) != 0)
      if self.token_layout == "interleaved":
        item_x, action_x, _ = inputs.history_parts(stream_batch)
        len_s, (item_x, action_x) = compact_events(keep, item_x * scale + where_NH, action_x * scale + where_NH)
        hist_x, len_s = interleave(item_x, action_x), 2 * len_s
      else:
        hist_x, _ = inputs.history(stream_batch)
        len_s, (hist_x,) = compact_events(keep, hist_x * scale + where_NH)
      hist_x = jnp.where((jnp.arange(hist_x.shape[1])[None, :] < len_s[:, None])[..., None], hist_x, 0.0)
      cap = self.stream_len[s] if self.stream_len else 0
      if 0 < cap < hist_x.shape[1]:   # a token budget per stream: its newest `cap` tokens, the width cut to it
        hist_x, len_s = newest(hist_x, 0, len_s, cap)
      self.sow("intermediates", f"stream_{s}_history_tokens", hist_x)   # the layout, for tests
      hist_x = self.perturb(f"stream_{s}_history_tokens", hist_x)
      if self.history_fold > 1:   # GACT: [N, H, D] -> [N, ⌈H/f⌉, f·D] -> [N, ⌈H/f⌉, D]
        hist_x, len_s = fold_time(hist_x, len_s, self.history_fold, align=self.fold_align)
        hist_x = nn.Dense(self.dim, name=f"stream_{s}_fold_proj")(hist_x)
        hist_x = jnp.where((jnp.arange(hist_x.shape[1])[None, :] < len_s[:, None])[..., None], hist_x, 0.0)
      outs.append(self._stream(s, ctx_x, hist_x, len_s, cand_x, train))
    if len(outs) == 1:
      fused = outs[0]
    elif self.fusion == "sum":
      fused = sum(outs)
    else:
      fused = nn.Dense(self.dim, name="fusion")(jnp.concatenate(outs, axis=-1))
    z = nn.silu(nn.Dense(self.dim, name="head_hidden")(fused))
    logits = nn.Dense(self.num_tasks, name="task_logits")(z)
    watch = nn.Dense(1, name="watch_ratio")(z)[..., 0] if self.watch_head else None
    return {"logits": logits, "watch_ratio": watch}

  def _stream(self, s: int, ctx_x, hist_x, len_N, cand_x, train: bool):
    """One transducer: [context | history | candidates] through its block stack -> the candidates'
    outputs [N, T, D] (layer-normed)."""
    num_ctx, c = ctx_x.shape[1], cand_x.shape[1]
    x = jnp.concatenate([ctx_x, merge_history_and_candidates(hist_x, cand_x, len_N)], axis=1)
    x = Dropout(self.dropout)(x, deterministic=not train)
    mask, sla = self.mask(num_ctx, c)
    run = _run_block
    if self.remat:
      run = nn.remat(_run_block, policy=REMAT_POLICIES[self.remat_policy], static_argnums=(3,))
    hist_width = x.shape[1] - num_ctx - c
    for i in range(self.num_blocks):
      # Attention truncation: the context, the newest L' history tokens, the candidates. Only where the
      # batch's history is wider than L': a narrower one has nothing to cut, and padding it out to L'
      # would only make the remaining blocks run on more (empty) tokens.
      if 0 < self.truncated_len < hist_width and i == self.full_layers:
        x = self.perturb(f"stream_{s}_truncation_input", x)
        cand = jnp.take_along_axis(x, (num_ctx + len_N[:, None] + jnp.arange(c))[..., None], axis=1)
        hist_x, len_N = newest(x, num_ctx, len_N, self.truncated_len)
        x = jnp.concatenate([x[:, :num_ctx], merge_history_and_candidates(hist_x, cand, len_N)], axis=1)
      block = HSTUBlock(dim=self.dim, num_heads=self.num_heads, dqk=self.dqk, dv=self.dv,
                        attn_norm_len=self.attn_norm_len, dropout=self.dropout, use_position_bias=False,
                        use_time_bias=False, num_time_buckets=self.num_time_buckets, backend=self.backend,
                        attention_tiling=False, mask=mask, sla=sla, name=f"stream_{s}_block_{i}")
      x = run(block, x, num_ctx + len_N + c, train)
    slots = num_ctx + len_N[:, None] + jnp.arange(c)[None, :]
    return layer_norm_no_affine(jnp.take_along_axis(x, slots[..., None], axis=1))
