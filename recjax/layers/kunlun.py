"""Kunlun's sequence-path layers (papers.md §1.3-1.6): GDPA, hierarchical seed pooling, windows.

    WeightGeneration   X [B, F, D] -> X_sum [B, n_sum, D]: a learned [F, n_sum] map over the
                       token (field) axis, then a residual two-layer MLP over D.
    GDPA               S + concat_h act(norm(S)_h · K_hᵀ / τ) · V_h, with K = X_sum W_k and
                       V = X_sum W_v: InterFormer's personalised FFN act(S W1ᵀ) W2 with the two
                       per-sample weight matrices W1 = K, W2 = V generated from the context.
    SumKronLinear      Y_b = Σ_i Z_iᵀ X_b W_i: [S, D] -> [T, D] with k·(S·T + D²) parameters
                       (the dense map on vec(X) is Σ_i kron(Z_i, W_i)).
    HierarchicalSeedPooling
                       over-complete learned seeds [S, D] attend over the jagged sequence, then
                       SumKronLinear compresses S seeds to T summary tokens.
    WindowAttention    LN(S + attention over |i - j| < w) (bidirectional band).

All attention goes through `recjax.layers.attention.attention` with a `MaskSpec`, so the XLA
path computes what `pallas_kernels.gdpa.{gdpa,seed_pooling_attention,sliding_window_attention}
_reference` compute (tests check it) and `backend="pallas"` runs the kernels.

Choices where the paper is silent (papers.md §1 marks them UNKNOWN):
  * GDPA's queries are the layer-normed tokens themselves, split into heads, with no query or
    output projection: that keeps GDPA exactly the personalised FFN it replaces (the test checks
    the identity against a per-sample FFN built from the generated weights). τ defaults to the
    padded sequence length (the paper's "max sequence length"); activation GELU.
  * Seed attention is softmax attention (PMA, which HSP replaces) with 1/sqrt(d_head) scores and
    key/value projections of the tokens; queries are the layer-normed seeds. A sequence with no
    valid event pools to zeros.
  * The window is bidirectional, |i - j| < w (`MaskSpec.local_window`; the paper's |t - s| ≤ w
    is our w + 1): the sequence is all history before the request, so there is nothing to leak.
    Softmax with 1/sqrt(d_head), pre-projection Q, K, V and an output projection, post-LN.
Padded rows of every output are exactly zero, so padding never reaches a summary.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import ACTIVATIONS, attention
from recjax.layers.norms import layer_norm_no_affine

CROSS = MaskSpec(causal=False)


def valid_mask(lengths_B: jax.Array, length: int) -> jax.Array:
  """[B, L, 1] float: 1 on the first lengths[b] rows."""
  return (jnp.arange(length)[None, :] < lengths_B[:, None])[..., None].astype(jnp.float32)


def _split_heads(x_BLD: jax.Array, heads: int) -> jax.Array:
  b, l, d = x_BLD.shape
  if d % heads:
    raise ValueError(f"width {d} is not divisible by heads={heads}")
  return x_BLD.reshape(b, l, heads, d // heads)


class WeightGeneration(nn.Module):
  """Context tokens X [B, F, D] -> summary X_sum [B, n_summary, D] (token compression + MLP)."""
  n_summary: int
  hidden: int

  @nn.compact
  def __call__(self, x_BFD: jax.Array) -> jax.Array:
    _, f, d = x_BFD.shape
    w_FS = self.param("compress_FS", nn.initializers.normal(1.0 / math.sqrt(f)), (f, self.n_summary))
    s_BSD = jnp.einsum("bfd,fs->bsd", x_BFD, w_FS)
    h_BSH = nn.gelu(nn.Dense(self.hidden, name="mlp_in")(s_BSD))
    return s_BSD + nn.Dense(d, name="mlp_out")(h_BSH)


class GDPA(nn.Module):
  """S + GDPA(norm(S), K(X_sum), V(X_sum)): the personalised FFN as short-KV attention.

  form="pffn" is the ablation "−GDPA" (issue 20): the same function computed as InterFormer ran it,
  a per-sample FFN with the two generated weight tensors W1 = K, W2 = V materialised per head and
  applied by batched matmuls, outside the attention entry point. Same parameters, same numbers
  (tests check it); what differs is the computation: on a GPU, the memory-bound per-sample matmul
  the GDPA kernel replaces."""
  heads: int
  tau: float
  activation: str = "gelu"
  backend: str = "xla"
  form: str = "gdpa"

  @nn.compact
  def __call__(self, s_BLD: jax.Array, lengths_B: jax.Array, xsum_BND: jax.Array) -> jax.Array:
    b, l, d = s_BLD.shape
    if xsum_BND.shape[0] != b:
      raise ValueError(f"GDPA: context summary batch {xsum_BND.shape} != sequence batch {s_BLD.shape}")
    if not self.tau > 0:
      raise ValueError(f"GDPA: tau must be > 0, got {self.tau}")
    if self.form not in ("gdpa", "pffn"):
      raise ValueError(f"GDPA: form must be 'gdpa' or 'pffn', got {self.form!r}")
    q_BLHK = _split_heads(layer_norm_no_affine(s_BLD), self.heads)
    k_BNHK = _split_heads(nn.Dense(d, name="key")(xsum_BND), self.heads)
    v_BNHK = _split_heads(nn.Dense(d, name="value")(xsum_BND), self.heads)
    n = xsum_BND.shape[1]
    if self.form == "pffn":
      w1_BHKN = jnp.einsum("bnhk->bhkn", k_BNHK)   # per-sample first-layer weights [K -> N hidden]
      w2_BHNK = jnp.einsum("bnhk->bhnk", v_BNHK)   # per-sample second-layer weights [N -> K]
      h_BHLN = jnp.einsum("blhk,bhkn->bhln", q_BLHK, w1_BHKN) / self.tau
      h_BHLN = ACTIVATIONS[self.activation](h_BHLN)
      o_BLHK = jnp.einsum("bhln,bhnk->blhk", h_BHLN, w2_BHNK)
      return (s_BLD + o_BLHK.reshape(b, l, d)) * valid_mask(lengths_B, l)
    o_BLHK = attention(q_BLHK, k_BNHK, v_BNHK, lengths_B=lengths_B,
                       kv_lengths_B=jnp.full((b,), n, jnp.int32), mask=CROSS, kind="pointwise",
                       activation=self.activation, alpha=1.0 / self.tau, backend=self.backend)
    return (s_BLD + o_BLHK.reshape(b, l, d)) * valid_mask(lengths_B, l)


class SumKronLinear(nn.Module):
  """[B, S, D] -> [B, T, D]: Y_b = Σ_{i<rank} Z_iᵀ X_b W_i (Z_i [S, T], W_i [D, D])."""
  n_out: int
  rank: int

  @nn.compact
  def __call__(self, x_BSD: jax.Array) -> jax.Array:
    _, s, d = x_BSD.shape
    z_RST = self.param("z_RST", nn.initializers.normal(1.0 / math.sqrt(s * self.rank)),
                       (self.rank, s, self.n_out))
    w_RDE = self.param("w_RDE", nn.initializers.normal(1.0 / math.sqrt(d)), (self.rank, d, d))
    # Compress the token axis first (T < S), then mix features: r·T·D² instead of r·S·D².
    y_BRTD = jnp.einsum("bsd,rst->brtd", x_BSD, z_RST)
    return jnp.einsum("brtd,rde->bte", y_BRTD, w_RDE)


def sum_kron_dense(z_RST: jax.Array, w_RDE: jax.Array) -> jax.Array:
  """The dense [S·D, T·D] matrix of SumKronLinear on row-major vec(X): Σ_i kron(Z_i, W_i)."""
  r, s, t = z_RST.shape
  d = w_RDE.shape[1]
  return jnp.einsum("rst,rde->sdte", z_RST, w_RDE).reshape(s * d, t * d)


class HierarchicalSeedPooling(nn.Module):
  """Jagged sequence [B, L, D] -> summary [B, n_tokens, D]: seed attention + SumKronLinear.

  compress=False is PMA (the pooling HSP replaces): n_tokens seeds, their attention output is the
  summary, no SumKronLinear."""
  n_seeds: int
  n_tokens: int
  heads: int
  kron_rank: int
  backend: str = "xla"
  compress: bool = True
  compress_with: str = "sum_kron"   # or "token_linear": the ablation "−SumKronLinear"

  @nn.compact
  def __call__(self, s_BLD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    b, _, d = s_BLD.shape
    if self.n_seeds < self.n_tokens:
      raise ValueError(f"HSP seeds must be over-complete: n_seeds={self.n_seeds} < n_tokens={self.n_tokens}")
    if self.compress_with not in ("sum_kron", "token_linear"):
      raise ValueError(f"HSP: compress_with must be 'sum_kron' or 'token_linear', got {self.compress_with!r}")
    if not self.compress and self.n_seeds != self.n_tokens:
      raise ValueError(f"PMA (compress=False) needs n_seeds == n_tokens, got {self.n_seeds} != {self.n_tokens}")
    seeds_SD = self.param("seeds_SD", nn.initializers.normal(1.0), (self.n_seeds, d))
    q_BSD = jnp.broadcast_to(layer_norm_no_affine(seeds_SD)[None], (b, self.n_seeds, d))
    dh = d // self.heads
    pooled_BSHK = attention(
        _split_heads(q_BSD, self.heads), _split_heads(nn.Dense(d, name="key")(s_BLD), self.heads),
        _split_heads(nn.Dense(d, name="value")(s_BLD), self.heads), lengths_B=None,
        kv_lengths_B=lengths_B, mask=CROSS, kind="softmax", alpha=1.0 / math.sqrt(dh),
        backend=self.backend)
    pooled_BSD = pooled_BSHK.reshape(b, self.n_seeds, d)
    if not self.compress:
      return pooled_BSD
    if self.compress_with == "token_linear":
      # −SumKronLinear: one learned [S, T] map over the seed axis and no feature mixing (the
      # rank-1, W = I member of the family): the simplest compression of S seeds to T tokens.
      z_ST = self.param("compress_ST", nn.initializers.normal(1.0 / math.sqrt(self.n_seeds)),
                        (self.n_seeds, self.n_tokens))
      return jnp.einsum("bsd,st->btd", pooled_BSD, z_ST)
    return SumKronLinear(self.n_tokens, self.kron_rank, name="compress")(pooled_BSD)


class WindowAttention(nn.Module):
  """LN(S + softmax attention over |i - j| < window); window None = full self-attention."""
  heads: int
  window: int | None
  backend: str = "xla"

  @nn.compact
  def __call__(self, s_BLD: jax.Array, lengths_B: jax.Array) -> jax.Array:
    b, l, d = s_BLD.shape
    qkv = [_split_heads(nn.Dense(d, name=n)(s_BLD), self.heads) for n in ("query", "key", "value")]
    o_BLHK = attention(*qkv, lengths_B=lengths_B, mask=MaskSpec(causal=False, local_window=self.window),
                       kind="softmax", alpha=1.0 / math.sqrt(d // self.heads), backend=self.backend)
    out_BLD = nn.Dense(d, name="out")(o_BLHK.reshape(b, l, d))
    return layer_norm_no_affine(s_BLD + out_BLD) * valid_mask(lengths_B, l)


__all__ = ["GDPA", "HierarchicalSeedPooling", "SumKronLinear", "WeightGeneration",
           "WindowAttention", "sum_kron_dense", "valid_mask"]
