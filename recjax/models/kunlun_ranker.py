"""Kunlun as a ranker of the ranking task (registered as `kunlun`): ranking batch -> task logits.

The tower and head are Kunlun's (`recjax/models/kunlun.py`: `context_tower`, `interaction_head`);
this module only turns the ranking batch (`recjax/layers/ranking_inputs.py`) into its inputs:

    context X [N, F, D]      the user feature embeddings + a learned per-field vector, then
                             learned filler tokens up to a multiple of `experts` (>= 1 token)
    event types              one per entry of `events` / `event_bits`: the history events whose
                             action bitmask has bit b set (b = -1: every event), kept in time
                             order, left-aligned (a jagged subsequence of the history, length =
                             its count). Token = Dense_e(history token) + Embed_e(log2 age bucket)
                             with the age measured to the request time; the history token already
                             carries item, item features, action bits, watch bucket and tab
    candidate c [N, C, 2, D] the candidate token (item + tab + item features, no outcome) and its
                             item embedding: the head's per-candidate tokens
Output {"logits": [N, C, T], "watch_ratio": [N, C] or None}: head tokens flattened -> dropout ->
one logit per task (and one watch-ratio output).

A candidate enters only at the head, so no candidate sees another (tests check it by gradients
through `perturb("candidates")`) and the whole tower is context-only (rank-aware decomposition).

Switches (config overrides, the ablations of issue 20): `compskip`; `window` (None = full self-
attention); `pooling` "hsp" / "pma"; `sequence_ffn` "gdpa" / "pffn" (−GDPA: the same personalised
FFN as per-sample matmuls); `hsp_compress` "sum_kron" / "token_linear" (−SumKronLinear); `experts` (1 vs M); `event_personalisation`: on, event type
i gets `event_widths[i]`, `event_layers[i]`, `event_windows[i]`, `event_summary_tokens[i]` where
given; off, every type gets the shared `width`, `layers`, `window`, `summary_tokens`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.layers.dropout import Dropout
from recjax.layers.kunlun import valid_mask
from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs
from recjax.models.kunlun import EventConfig, KunlunConfig, age_buckets, context_tower, interaction_head


def select_events(bits_NH: jax.Array, valid_NH: jax.Array, bit: int) -> tuple[jax.Array, jax.Array]:
  """(order [N, H], lengths [N]): the slots of events with action bit `bit` (-1: all valid ones),
  oldest first, then the rest; gathering by `order` left-aligns the subsequence."""
  sel = valid_NH if bit < 0 else valid_NH & (((bits_NH >> bit) & 1) == 1)
  h = bits_NH.shape[1]
  pos = jnp.arange(h)[None, :]
  order = jnp.argsort(jnp.where(sel, pos, h + pos), axis=1)
  return order, sel.sum(1).astype(jnp.int32)


class KunlunRanker(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 32
  events: tuple[str, ...] = ("all", "click", "long_view")
  event_bits: tuple[int, ...] = (-1, 0, 6)          # KuaiRand bitmask: is_click bit 0, long_view bit 6
  event_personalisation: bool = True
  event_widths: tuple[int, ...] = ()
  event_layers: tuple[int, ...] = ()
  event_windows: tuple[int, ...] = ()
  event_summary_tokens: tuple[int, ...] = ()
  width: int = 32                                    # the shared event capacity (personalisation off)
  layers: int = 3
  window: int = 8                                    # |i - j| < window; 0 = full self-attention
  summary_tokens: int = 4
  heads: int = 2
  kron_rank: int = 2
  compskip: bool = True
  pooling: str = "hsp"
  sequence_ffn: str = "gdpa"
  hsp_compress: str = "sum_kron"
  context_summary_tokens: int = 4
  weight_gen_hidden: int = 64
  experts: int = 2
  expert_hidden: int = 64
  head_tokens: int = 4
  time_buckets: int = 32
  dropout: float = 0.1
  backend: str = "xla"
  watch_head: bool = False
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  def event_configs(self) -> tuple[EventConfig, ...]:
    if len(self.event_bits) != len(self.events):
      raise ValueError(f"events {self.events} and event_bits {self.event_bits} differ in length")
    per = {"event_widths": self.event_widths, "event_layers": self.event_layers,
           "event_windows": self.event_windows, "event_summary_tokens": self.event_summary_tokens}
    for name, values in per.items():
      # Without personalisation the per-type lists are ignored, so their lengths do not matter.
      if self.event_personalisation and values and len(values) != len(self.events):
        raise ValueError(f"{name} has {len(values)} entries, events {self.events} need {len(self.events)} or none")
    out = []
    for i, name in enumerate(self.events):
      pick = lambda key, shared: per[key][i] if self.event_personalisation and per[key] else shared  # noqa: E731
      window = pick("event_windows", self.window)
      out.append(EventConfig(name, width=pick("event_widths", self.width), heads=self.heads,
                             summary_tokens=pick("event_summary_tokens", self.summary_tokens),
                             layers=pick("event_layers", self.layers),
                             window=None if window is None or window <= 0 else window,
                             kron_rank=self.kron_rank))
    return tuple(out)

  def kunlun_config(self, context_fields: int) -> KunlunConfig:
    return KunlunConfig(
        events=self.event_configs(), item_vocab_size=self.num_items, context_vocab_size=1,
        context_fields=context_fields, num_tasks=self.num_tasks, width=self.dim,
        context_summary_tokens=self.context_summary_tokens, weight_gen_hidden=self.weight_gen_hidden,
        experts=self.experts, expert_hidden=self.expert_hidden, head_tokens=self.head_tokens,
        compskip=self.compskip, pooling=self.pooling, sequence_ffn=self.sequence_ffn,
        hsp_compress=self.hsp_compress, time_buckets=self.time_buckets, backend=self.backend)

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    n, c = batch["cand_ids"].shape
    fu = batch["user_feats"].shape[1]
    # Filler tokens: the interaction's output tokens are split over experts, so F % experts == 0.
    fill = (-fu) % self.experts if fu else self.experts
    cfg = self.kunlun_config(fu + fill)   # first: bad settings fail before any work
    inputs = RankingInputs(self.num_items, self.dim, self.num_tasks, self.user_vocab, self.item_vocab,
                           self.num_tabs, self.num_watch_buckets, name="inputs")
    hist_NHD, valid_NH = inputs.history(batch)
    user_NFD = inputs.user(batch)
    # No field embedding without user features: a zero-size parameter cannot be checkpointed.
    x_NFD = user_NFD + self.param("field_embed", nn.initializers.normal(0.02), (fu, self.dim)) if fu else user_NFD
    if fill:
      filler = self.param("context_filler", nn.initializers.normal(0.02), (fill, self.dim))
      x_NFD = jnp.concatenate([x_NFD, jnp.broadcast_to(filler[None], (n, fill, self.dim))], axis=1)

    h = hist_NHD.shape[1]
    seqs, lens = {}, {}
    for e, bit in zip(cfg.events, self.event_bits):
      order_NH, lengths_N = select_events(batch["hist_actions"], valid_NH, bit)
      tokens_NHD = jnp.take_along_axis(hist_NHD, order_NH[..., None], axis=1)
      times_NH = jnp.take_along_axis(batch["hist_times"], order_NH, axis=1)
      ages = age_buckets(times_NH, lengths_N, cfg.time_buckets, batch["request_times"])
      s = (nn.Dense(e.width, name=f"{e.name}_in")(tokens_NHD)
           + nn.Embed(cfg.time_buckets, e.width, name=f"{e.name}_age")(ages))
      seqs[e.name], lens[e.name] = s * valid_mask(lengths_N, h), lengths_N

    c_NKD = context_tower(self, cfg, x_NFD, seqs, lens)
    cand_NCXD = jnp.stack([inputs.candidates(batch), inputs.candidate_items(batch)], axis=2)
    cand_NCXD = self.perturb("candidates", cand_NCXD)   # a zero no-op unless a test asks for its gradient
    z = interaction_head(cfg, c_NKD, cand_NCXD, decomposed=False)
    z = Dropout(self.dropout)(z, deterministic=not train)
    logits = nn.Dense(self.num_tasks, name="task_logits")(z)
    watch = nn.Dense(1, name="watch_ratio")(z)[..., 0] if self.watch_head else None
    return {"logits": logits, "watch_ratio": watch}


__all__ = ["KunlunRanker", "select_events"]
