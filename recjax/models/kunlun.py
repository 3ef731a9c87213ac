"""Kunlun (arXiv 2602.10016; papers.md §1): context features + several event sequences -> task logits.

Batch (all arrays, right-padded):
    context_ids   [B, F] int     one id per context field (a shared hashed vocabulary)
    events        {name: {"ids": [B, L_e] int, "times": [B, L_e] number, "lengths": [B] int}}
                  one entry per `EventConfig`, in any order
    candidates    [B, N] int     items to score for each request (same vocabulary as event ids)
    request_time  [B] (optional) event ages are request_time - time; without it, ages are taken
                  from each sequence's latest valid event
Output: logits [B, N, num_tasks].

One layer l (layers run in lock-step over event types; a type with fewer layers stops early and
keeps its last summary):
    X_sum = WeightGeneration_l(X)
    per event type e, while l < layers_e:
        CompSkip on,  l even:  S_e = GDPA(S_e, X_sum);  H_e = HSP(S_e)        (fresh summary)
        CompSkip on,  l odd:   S_e = WindowAttention(S_e);  H_e = cached H_e  (no HSP at all)
        CompSkip off:          S_e = WindowAttention(GDPA(S_e, X_sum));  H_e = HSP(S_e)
    X = LN(X + MoWE_l([X_sum ; H_1 ; ... ; H_E]))                           (global interaction)
Context tokens C = [X ; H_1 ; ... ; H_E] -> per candidate: MoWE_head([C ; item(candidate)]) ->
flatten -> one logit per task.

Choices where the paper is silent (besides those in recjax/layers/kunlun.py and wukong.py):
  * The candidate enters only at the head. The whole tower is then context-only, so rank-aware
    decomposition (papers.md §6c) runs it once per request, and the head's FM and linear blocks
    split exactly (`decomposed=True`). Kunlun puts ad features into X, which would make GDPA
    candidate-dependent; the cost of giving that up is not measured.
  * Event tokens: a per-type projection of the shared item embedding plus an embedding of the
    log2-bucketed event age (the paper's temporal encoding, "ROTE", is not public).
  * CompSkip off runs GDPA, window attention and HSP in every layer, so "CompSkip on" skips the
    window block on even layers and the GDPA + HSP blocks on odd layers.
  * Each event type's summary is projected to the shared width D by one Dense per type.
  * With CompSkip an event type's layer count must be odd: only HSP reads the sequence, so the
    window block of a trailing odd layer would feed nothing.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.layers.kunlun import GDPA, HierarchicalSeedPooling, WeightGeneration, WindowAttention, valid_mask
from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.wukong import MixtureOfWukongExperts


@dataclasses.dataclass(frozen=True)
class EventConfig:
  """Capacity of one event type (event-level personalisation, papers.md §1.7)."""
  name: str
  width: int = 32
  heads: int = 2
  summary_tokens: int = 4
  seeds: int | None = None       # HSP seeds; None = 4 x summary_tokens (the reference's ratio)
  layers: int = 2
  window: int | None = 8         # |i - j| < window; None = full self-attention
  kron_rank: int = 2
  tau: float | None = None       # GDPA temperature; None = the padded sequence length

  def __post_init__(self):
    if self.width % self.heads:
      raise ValueError(f"event {self.name!r}: width {self.width} not divisible by heads {self.heads}")
    if self.layers < 1 or self.summary_tokens < 1 or self.kron_rank < 1:
      raise ValueError(f"event {self.name!r}: layers, summary_tokens, kron_rank must be >= 1")
    if self.num_seeds < self.summary_tokens:
      raise ValueError(f"event {self.name!r}: seeds {self.seeds} < summary_tokens {self.summary_tokens}")

  @property
  def num_seeds(self) -> int:
    return self.seeds if self.seeds is not None else 4 * self.summary_tokens


@dataclasses.dataclass(frozen=True)
class KunlunConfig:
  events: tuple[EventConfig, ...]
  item_vocab_size: int
  context_vocab_size: int
  context_fields: int
  num_tasks: int = 1
  width: int = 32                # D of context tokens, summaries and the interaction
  context_summary_tokens: int = 4
  weight_gen_hidden: int = 64
  experts: int = 2
  expert_hidden: int = 64
  head_tokens: int = 4
  gdpa_activation: str = "gelu"
  compskip: bool = True
  pooling: str = "hsp"           # "hsp" (seeds + SumKronLinear) or "pma" (summary_tokens seeds, no compression)
  sequence_ffn: str = "gdpa"     # "gdpa", or "pffn": the same personalised FFN as per-sample matmuls (−GDPA)
  hsp_compress: str = "sum_kron"  # HSP's seed compression; "token_linear" = one [S, T] map (−SumKronLinear)
  time_buckets: int = 32
  backend: str = "xla"

  def __post_init__(self):
    names = [e.name for e in self.events]
    if not names or len(set(names)) != len(names):
      raise ValueError(f"Kunlun needs at least one event type with unique names, got {names}")
    if self.pooling not in ("hsp", "pma"):
      raise ValueError(f"pooling must be 'hsp' or 'pma', got {self.pooling!r}")
    if self.sequence_ffn not in ("gdpa", "pffn"):
      raise ValueError(f"sequence_ffn must be 'gdpa' or 'pffn', got {self.sequence_ffn!r}")
    if self.hsp_compress not in ("sum_kron", "token_linear"):
      raise ValueError(f"hsp_compress must be 'sum_kron' or 'token_linear', got {self.hsp_compress!r}")
    for what, n in (("context_fields", self.context_fields), ("head_tokens", self.head_tokens)):
      if n % self.experts:
        raise ValueError(f"{what}={n} must be divisible by experts={self.experts}")
    for e in self.events:
      if self.compskip and e.layers % 2 == 0:
        # The last layer would be odd: its window block updates the sequence, which no later HSP
        # reads, so it would be dead code (XLA drops it) and the layer count would misreport.
        raise ValueError(f"event {e.name!r}: with compskip, layers must be odd (even layers make a "
                         f"fresh summary, odd ones reuse it); got {e.layers}")

  @property
  def num_layers(self) -> int:
    return max(e.layers for e in self.events)


def age_buckets(times_BL: jax.Array, lengths_B: jax.Array, buckets: int,
                request_time_B: jax.Array | None) -> jax.Array:
  """floor(log2(1 + age)) clipped to [0, buckets); age from request_time or the latest valid event."""
  t = times_BL.astype(jnp.float32)
  valid = jnp.arange(t.shape[1])[None, :] < lengths_B[:, None]
  ref = (jnp.max(jnp.where(valid, t, -jnp.inf), axis=1) if request_time_B is None
         else request_time_B.astype(jnp.float32))
  age = jnp.where(valid, jnp.maximum(ref[:, None] - t, 0.0), 0.0)
  return jnp.clip(jnp.floor(jnp.log2(1.0 + age)), 0, buckets - 1).astype(jnp.int32)


def check_batch(config: KunlunConfig, batch: dict) -> None:
  """Shape checks that name the offending field."""
  for key in ("context_ids", "events", "candidates"):
    if key not in batch:
      raise ValueError(f"Kunlun batch lacks {key!r}")
  b, f = batch["context_ids"].shape
  if f != config.context_fields:
    raise ValueError(f"context_ids: {f} fields, config says {config.context_fields}")
  if batch["candidates"].ndim != 2 or batch["candidates"].shape[0] != b:
    raise ValueError(f"candidates must be [B={b}, N], got {batch['candidates'].shape}")
  for e in config.events:
    ev = batch["events"].get(e.name)
    if ev is None:
      raise ValueError(f"events[{e.name!r}] missing; batch has {sorted(batch['events'])}")
    ids, times, lengths = ev["ids"], ev["times"], ev["lengths"]
    if ids.ndim != 2 or ids.shape[0] != b or times.shape != ids.shape or lengths.shape != (b,):
      raise ValueError(f"events[{e.name!r}]: ids/times must be [B={b}, L] and lengths [B]; got "
                       f"ids {ids.shape}, times {times.shape}, lengths {lengths.shape}")


def context_tower(mdl: nn.Module, cfg: KunlunConfig, x_BFD: jax.Array, seqs: dict, lens: dict) -> jax.Array:
  """The context-only tower (module docstring, one layer): context tokens x [B, F, D] and event
  tokens {name: [B, L_e, width_e]} with their lengths -> C = [X ; H_1 ; ... ; H_E] [B, F + Σ T_e, D].

  Called from a module's compact `__call__` (`mdl`): the submodules it makes are `mdl`'s, named
  as Kunlun names them, so every model built on the tower has the same parameter tree."""
  d = cfg.width
  summaries = {}
  for layer in range(cfg.num_layers):
    xsum_BND = WeightGeneration(cfg.context_summary_tokens, cfg.weight_gen_hidden,
                                name=f"weight_gen_{layer}")(x_BFD)
    for e in cfg.events:
      if layer >= e.layers:
        continue
      s, lengths_B = seqs[e.name], lens[e.name]
      fresh = not cfg.compskip or layer % 2 == 0
      if fresh:
        tau = e.tau if e.tau is not None else float(s.shape[1])
        s = GDPA(e.heads, tau, cfg.gdpa_activation, cfg.backend, form=cfg.sequence_ffn, name=f"{e.name}_gdpa_{layer}")(
            s, lengths_B, nn.Dense(e.width, name=f"{e.name}_ctx_{layer}")(xsum_BND))
      if not cfg.compskip or layer % 2 == 1:
        s = WindowAttention(e.heads, e.window, cfg.backend, name=f"{e.name}_window_{layer}")(s, lengths_B)
      if fresh:
        pma = cfg.pooling == "pma"
        h = HierarchicalSeedPooling(e.summary_tokens if pma else e.num_seeds, e.summary_tokens, e.heads,
                                    e.kron_rank, cfg.backend, compress=not pma, compress_with=cfg.hsp_compress,
                                    name=f"{e.name}_hsp_{layer}")(s, lengths_B)
        summaries[e.name] = nn.Dense(d, name=f"{e.name}_summary_proj_{layer}")(h)
      mdl.sow("intermediates", f"{e.name}_summary_{layer}", summaries[e.name])
      seqs[e.name] = s
    h_all = jnp.concatenate([xsum_BND] + [summaries[e.name] for e in cfg.events], axis=1)
    x_BFD = layer_norm_no_affine(x_BFD + MixtureOfWukongExperts(
        cfg.context_fields, cfg.experts, cfg.expert_hidden, name=f"interaction_{layer}")(h_all))
  return jnp.concatenate([x_BFD] + [summaries[e.name] for e in cfg.events], axis=1)


def interaction_head(cfg: KunlunConfig, c_BCD: jax.Array, cand_BNXD: jax.Array, decomposed: bool) -> jax.Array:
  """Context tokens [B, n_c, D] and each candidate's tokens [B, N, n_x, D] -> [B, N, head_tokens·D]."""
  b, n = cand_BNXD.shape[:2]
  out_BNTD = MixtureOfWukongExperts(cfg.head_tokens, cfg.experts, cfg.expert_hidden, name="head")(
      c_BCD, cand_BNXD, decomposed=decomposed)
  return out_BNTD.reshape(b, n, cfg.head_tokens * cfg.width)


class Kunlun(nn.Module):
  config: KunlunConfig

  @nn.compact
  def __call__(self, batch: dict, *, decomposed: bool = False) -> jax.Array:
    cfg = self.config
    check_batch(cfg, batch)
    d = cfg.width
    item_embed = nn.Embed(cfg.item_vocab_size, d, name="item_embed")
    field_DF = self.param("field_embed", nn.initializers.normal(0.02), (cfg.context_fields, d))
    x_BFD = nn.Embed(cfg.context_vocab_size, d, name="context_embed")(batch["context_ids"]) + field_DF

    seqs, lens = {}, {}
    for e in cfg.events:
      ev = batch["events"][e.name]
      lens[e.name] = lengths_B = ev["lengths"].astype(jnp.int32)
      l = ev["ids"].shape[1]
      ages = age_buckets(ev["times"], lengths_B, cfg.time_buckets, batch.get("request_time"))
      s = (nn.Dense(e.width, name=f"{e.name}_in")(item_embed(ev["ids"]))
           + nn.Embed(cfg.time_buckets, e.width, name=f"{e.name}_age")(ages))
      seqs[e.name] = s * valid_mask(lengths_B, l)

    c_BCD = context_tower(self, cfg, x_BFD, seqs, lens)
    cand_BNXD = item_embed(batch["candidates"])[:, :, None, :]
    return nn.Dense(cfg.num_tasks, name="logits")(interaction_head(cfg, c_BCD, cand_BNXD, decomposed))


def repeat_per_candidate(batch: dict) -> dict:
  """The undecomposed serving layout: one row per (request, candidate), context copied N times."""
  b, n = batch["candidates"].shape
  rep = lambda x: jnp.repeat(x, n, axis=0)
  out = {"context_ids": rep(batch["context_ids"]), "candidates": batch["candidates"].reshape(b * n, 1),
         "events": {k: {f: rep(v) for f, v in ev.items()} for k, ev in batch["events"].items()}}
  if "request_time" in batch:
    out["request_time"] = rep(batch["request_time"])
  return out


__all__ = ["EventConfig", "Kunlun", "KunlunConfig", "age_buckets", "check_batch", "context_tower",
           "interaction_head", "repeat_per_candidate"]
