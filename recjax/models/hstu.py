"""HSTU: Hierarchical Sequential Transduction Units (Zhai et al., ICML 2024; papers.md §3.1, §3.5).

Per block, with X [B, L, D]:
    X̃          = LN(X)                                  (no affine, eps 1e-6)
    U, V, Q, K = split(SiLU(X̃ · W_uvqk))                (one bias-free matrix, order U, V, Q, K)
    A[i, j]    = SiLU(Q_i·K_j + rab_ij) / N · 1[j ≤ i]    (N = padded width, a constant)
    Y          = W_o · Dropout(U ⊙ LN(A·V)) + b_o + X
The item table is tied: the same rows embed the inputs and score the outputs.

ULTRA-HSTU's semi-local attention (papers.md §2.2) in the retrieval model: `local_window` K1 > 0
replaces 1[j ≤ i] by 1[i − K1 < j ≤ i or j < K2] (K2 = `global_window`, the oldest K2 positions
seen by every query); `sla_block` > 0 evaluates it blockwise (`layers/sla.py`, O(L·(K1 + K2)),
no relative bias), 0 as a dense masked product (the relative bias allowed). The rest of ULTRA-HSTU
(summed action tokens, truncation, mixture of transducers) is the ranker's (`models/ultra_hstu.py`):
retrieval on item-only sequences has no actions, and truncation would drop the outputs of the
older positions that the every-position loss trains.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax.layers import packing
from recjax.layers.attention import attention
from recjax.layers.dropout import Dropout
from recjax.layers.embeddings import sequence_inputs
from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.relative_bias import RelativeBucketedTimeAndPositionBias
from recjax.layers.sid_embedding import item_embedding_layer
from recjax.layers.sla import SLABlocking


def _torch_linear_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class HSTUBlock(nn.Module):
  dim: int
  num_heads: int
  dqk: int
  dv: int
  attn_norm_len: int          # N: attention weights are divided by it, and rab covers 2N-1 offsets
  dropout: float
  use_position_bias: bool
  use_time_bias: bool
  num_time_buckets: int
  backend: str
  attention_tiling: bool | str
  mask: MaskSpec = MaskSpec(causal=True)   # the ranker adds target isolation (num_targets)
  sla: SLABlocking | None = None            # semi-local mask on the XLA path: blockwise, O(L·(K1+K2))
  attention_impl: str = "xla"               # attention(impl=...): "auto" | "xla" | "native"

  @nn.compact
  def __call__(self, x, lengths_B, key_times_BL, query_times_BL, *, train: bool,
               layout: packing.TokenLayout | None = None):
    """x: the residual stream, [B, L, D] padded, or [T, D] packed by `layout`; returns the same shape.

    Packed, every token-wise op runs on the T real tokens and only the attention sees the [B, L]
    grid (its inputs are unpacked, its output packed again). Dropout draws the mask of the padded
    layout (same element counters), so both give the same result at the real positions.
    """
    b, l = lengths_B.shape[0], (x.shape[1] if layout is None else layout.slot_token_BL.shape[1])
    h, dqk, dv = self.num_heads, self.dqk, self.dv
    uvqk = nn.Dense(h * (2 * dv + 2 * dqk), use_bias=False, kernel_init=nn.initializers.normal(0.02),
                    name="uvqk")(layer_norm_no_affine(x))
    uvqk = jax.nn.silu(uvqk)
    u, vqk = uvqk[..., :h * dv], uvqk[..., h * dv:]
    if layout is not None:
      vqk = packing.unpack(vqk, layout)        # one gather for all three attention inputs
    v_BLF, q_BLF, k_BLF = jnp.split(vqk, [h * dv, h * dv + h * dqk], -1)
    bias = None
    if self.use_position_bias or self.use_time_bias:
      bias = RelativeBucketedTimeAndPositionBias(
          self.attn_norm_len, self.num_time_buckets, self.use_position_bias, self.use_time_bias,
          name="rab")(query_times_BL, key_times_BL)
    o_BLHD = attention(q_BLF.reshape(b, l, h, dqk), k_BLF.reshape(b, l, h, dqk),
                       v_BLF.reshape(b, l, h, dv), lengths_B=lengths_B, mask=self.mask,
                       kind="pointwise", activation="silu", alpha=1.0, scale=1.0 / self.attn_norm_len,
                       bias=bias, backend=self.backend,
                       tiling=self.attention_tiling, sla=self.sla, impl=self.attention_impl)
    o = o_BLHD.reshape(b, l, h * dv)
    if layout is not None:
      o = packing.pack(o, layout)
    y = u * layer_norm_no_affine(o)
    y = Dropout(self.dropout, deterministic=not train)(
        y, rows=None if layout is None else layout.token_slot_T)
    y = nn.Dense(self.dim, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=_torch_linear_bias_init(h * dv), name="out")(y)
    return x + y


class HSTU(nn.Module):
  """HSTU encoder over item-id sequences.

  Input batch fields: `ids` [B, L] (0 = padding, oldest first), `lengths` [B], and, when the time
  bias is on, `times` [B, L] (each item's timestamp) and `next_times` [B, L] (the timestamp of the
  item each position predicts).
  Returns (outputs [B, L, D], item table [V, D]).

  With `token_packing` and a batch that carries `token_index` [T] (training batches of
  `data.pipeline`), the residual stream is packed to its real tokens [T, D] (`layers/packing.py`)
  and only the attention runs on the padded grid. T is the static capacity: it must cover
  sum(lengths) (in a pipeline batch every real input position is supervised, so it does; a batch
  that overflows raises when the step runs). Outputs at real positions equal the padded path's
  (dropout too); padding positions are 0 instead of the padded path's unused values. Batches
  without `token_index` (evaluation) run padded.
  """
  num_items: int
  dim: int = 50
  num_blocks: int = 2
  num_heads: int = 1
  dqk: int = 50
  dv: int = 50
  max_len: int = 200
  attn_norm_len: int = 211     # HSTU reference: max_len + gr_output_length (10) + 1
  dropout: float = 0.2
  use_position_bias: bool = True
  use_time_bias: bool = True
  num_time_buckets: int = 129
  backend: str = "xla"
  attention_tiling: bool | str = "auto"   # XLA path: skip hidden tiles; "auto": on the CPU backend
  token_packing: bool = True      # token-wise ops on the real tokens only (same result at real positions)
  attention_impl: str = "auto"    # "auto": the C++ causal-attention kernel on CPU where it applies | "xla" | "native"
  item_table: str = "id"          # "id": a [V, D] row per item | "sid": Semantic-ID token tables
  sid_combine: str = "sum"        # "sid": sum of the level rows | "concat" then project
  sid_residual_size: int = 0      # "sid": rows of a hashed-id residual table (0 = none)
  sid_tokens: Any = None          # "sid": a layers.sid_embedding.SIDTokens (the task builds it)
  local_window: int = 0           # SLA K1 (module docstring); 0 = plain causal attention
  global_window: int = 0          # SLA K2: the oldest positions every query sees (with local_window)
  sla_block: int = 0              # > 0: SLA evaluated blockwise with query blocks of this size

  def attention_mask(self) -> tuple[MaskSpec, SLABlocking | None]:
    """The blocks' mask and SLA blocking from the fields (ValueError on an impossible mix)."""
    if self.local_window < 0 or self.global_window < 0 or self.sla_block < 0:
      raise ValueError(f"HSTU: model.local_window, global_window and sla_block must be >= 0, got "
                       f"{self.local_window}, {self.global_window}, {self.sla_block}")
    if self.local_window == 0:
      if self.global_window or self.sla_block:
        raise ValueError("HSTU: model.global_window and model.sla_block need local_window > 0 (model.local_window: semi-local attention)")
      return MaskSpec(causal=True), None
    if self.sla_block and (self.use_position_bias or self.use_time_bias):
      raise ValueError("HSTU: blockwise SLA (model.sla_block > 0) takes no relative bias: set model."
                       "use_position_bias=False and use_time_bias='off', or sla_block=0 (dense masked)")
    mask = MaskSpec(causal=True, local_window=self.local_window, global_prefix=self.global_window)
    return mask, (SLABlocking(self.sla_block) if self.sla_block else None)

  def setup(self):
    self.item_embedding = item_embedding_layer(self.item_table, self.num_items, self.dim, self.sid_tokens,
                                               self.sid_combine, self.sid_residual_size)
    # The reference re-initialises its [N, D] position table with xavier_normal.
    self.position_embedding = self.param(
        "position_embedding", nn.initializers.normal(math.sqrt(2.0 / (self.attn_norm_len + self.dim))),
        (self.max_len, self.dim))
    self.input_dropout = Dropout(self.dropout)
    mask, sla = self.attention_mask()
    self.blocks = [
        HSTUBlock(self.dim, self.num_heads, self.dqk, self.dv, self.attn_norm_len, self.dropout,
                  self.use_position_bias, self.use_time_bias, self.num_time_buckets, self.backend,
                  self.attention_tiling, mask=mask, sla=sla, attention_impl=self.attention_impl,
                  name=f"block_{i}") for i in range(self.num_blocks)]

  def __call__(self, batch, *, train: bool = False):
    x, _ = sequence_inputs(self.item_embedding, self.position_embedding, batch["ids"],
                           self.input_dropout, train=train)
    times, next_times = batch.get("times"), batch.get("next_times")
    lengths = batch["lengths"]
    layout = None
    if self.token_packing and "token_index" in batch:
      layout = packing.token_layout(lengths, x.shape[1], batch["token_index"].shape[0])
      x = packing.pack(x, layout)
    for block in self.blocks:
      x = block(x, lengths, times, next_times, train=train, layout=layout)
    if layout is not None:
      x = packing.unpack(x, layout)
    return x, self.item_embedding.item_table()

  @staticmethod
  def resolve_config(model_cfg: dict, seqs) -> tuple[dict, list[str]]:
    """Data-dependent settings (the trainer's hook, see models.model_class): `use_time_bias`
    "auto" (on iff `seqs.has_timestamps`) | "on" | "off" (or a bool) -> a bool, with notes for the
    results file. "on" without timestamps is an error."""
    cfg = dict(model_cfg)
    want = cfg.get("use_time_bias", "auto")
    want = {"on": True, "off": False}.get(want, want)   # configs may spell it "auto" | "on" | "off"
    if want not in ("auto", True, False):
      raise ValueError(f"model.use_time_bias must be 'auto', 'on' or 'off', got {model_cfg['use_time_bias']!r}")
    notes = []
    if want == "auto":
      want = bool(seqs.has_timestamps)
      if not want:
        notes.append("time bias off: the dataset has no timestamps (position bias only)")
    elif not want:
      notes.append("time bias off (model.use_time_bias='off')")
    elif not seqs.has_timestamps:
      raise ValueError(f"model.use_time_bias={model_cfg['use_time_bias']!r} but {seqs.source} has no timestamps")
    cfg["use_time_bias"] = want
    return cfg, notes
