"""Pre-norm Transformer blocks (T5 style) for encoder-decoder models, on the one attention entry point.

    encoder block:  x += Drop(SelfAttn(RMS(x)));                       x += Drop(FFN(RMS(x)))
    decoder block:  x += Drop(CausalSelfAttn(RMS(x)));  x += Drop(CrossAttn(RMS(x), memory));
                    x += Drop(FFN(RMS(x)))

Attention is softmax attention with q·k / sqrt(head_dim) through `layers.attention.attention`;
FFN(x) = W2 act(W1 x) with no biases (T5). Padding: self-attention masks keys at or past
`lengths_B`; cross-attention masks memory positions at or past `memory_lengths_B`.
"""
from __future__ import annotations

import math

import flax.linen as nn

from pallas_kernels.mask import MaskSpec
from recjax.layers.attention import ACTIVATIONS, attention
from recjax.layers.dropout import Dropout

BIDIRECTIONAL = MaskSpec(causal=False)
CAUSAL = MaskSpec(causal=True)


class MultiHeadAttention(nn.Module):
  """q from `x_BQD`, k and v from `kv_BKD`, softmax attention, output projection -> [B, Lq, D]."""
  num_heads: int
  head_dim: int
  backend: str = "xla"

  @nn.compact
  def __call__(self, x_BQD, kv_BKD, *, mask: MaskSpec, lengths_B, kv_lengths_B=None):
    b, lq, d = x_BQD.shape
    h, dh = self.num_heads, self.head_dim
    dense = lambda name: nn.DenseGeneral((h, dh), use_bias=False, name=name)
    q_BQHD, k_BKHD, v_BKHD = dense("query")(x_BQD), dense("key")(kv_BKD), dense("value")(kv_BKD)
    # Decoder lengths are a handful of tokens: nothing for the causal tiling to skip.
    o_BQHD = attention(q_BQHD, k_BKHD, v_BKHD, lengths_B=lengths_B, kv_lengths_B=kv_lengths_B, mask=mask,
                       kind="softmax", alpha=1.0 / math.sqrt(dh), backend=self.backend, tiling=False)
    return nn.DenseGeneral(d, axis=(-2, -1), use_bias=False, name="out")(o_BQHD.reshape(b, lq, h, dh))


class FeedForward(nn.Module):
  hidden_dim: int
  activation: str = "relu"

  @nn.compact
  def __call__(self, x_BLD):
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
    f = nn.Dense(self.hidden_dim, use_bias=False, name="ffn_in")(x_BLD)
    return nn.Dense(x_BLD.shape[-1], use_bias=False, name="ffn_out")(ACTIVATIONS[self.activation](f))


class TransformerBlock(nn.Module):
  """One encoder block (`cross_attention=False`) or decoder block (`True`).

  Args of __call__:
    x_BLD: [B, L, D] the stream.
    lengths_B: [B] valid positions of x (None: all valid).
    memory_BSD, memory_lengths_B: the encoder output [B, S, D] and its valid positions [B]
      (decoder blocks only).
    mask: the self-attention mask for this call (e.g. GACT's context prefix and global tokens);
      None: causal or bidirectional as the block's `causal` field says.
    beams: W streams per memory row: x_BLD holds [B·W, L, D] (memory row b serves streams
      b·W .. b·W + W - 1, as in a beam search), memory stays [B, S, D]. Cross-attention folds the
      W streams into the query axis, [B, W·L, D], which is exact (each query attends to its memory
      independently) and projects each memory row's keys and values once instead of W times.
  """
  num_heads: int
  head_dim: int
  ffn_dim: int
  dropout: float = 0.0
  causal: bool = False
  cross_attention: bool = False
  activation: str = "relu"
  backend: str = "xla"

  @nn.compact
  def __call__(self, x_BLD, lengths_B=None, memory_BSD=None, memory_lengths_B=None, *, train: bool = False,
               mask: MaskSpec | None = None, beams: int = 1):
    if self.cross_attention and (memory_BSD is None or memory_lengths_B is None):
      raise ValueError("a decoder block (cross_attention=True) needs memory_BSD and memory_lengths_B")
    if beams != 1:
      if not self.cross_attention or lengths_B is not None:
        raise ValueError(f"beams={beams} needs a decoder block with every stream position valid (lengths_B=None)")
      if x_BLD.shape[0] != memory_BSD.shape[0] * beams:
        raise ValueError(f"beams={beams}: x has {x_BLD.shape[0]} streams, expected memory rows "
                         f"{memory_BSD.shape[0]} x {beams}")
    drop = Dropout(self.dropout, deterministic=not train)
    mha = lambda name: MultiHeadAttention(self.num_heads, self.head_dim, self.backend, name=name)
    y = nn.RMSNorm(name="self_attention_norm")(x_BLD)
    if mask is None:
      mask = CAUSAL if self.causal else BIDIRECTIONAL
    x_BLD = x_BLD + drop(mha("self_attention")(y, y, mask=mask, lengths_B=lengths_B))
    if self.cross_attention:
      y = nn.RMSNorm(name="cross_attention_norm")(x_BLD)
      n, l, d = y.shape
      y = y.reshape(n // beams, beams * l, d)               # [B, W·L, D]: beams share their memory row
      cross = mha("cross_attention")(y, memory_BSD, mask=BIDIRECTIONAL, lengths_B=lengths_B,
                                     kv_lengths_B=memory_lengths_B)
      x_BLD = x_BLD + drop(cross.reshape(n, l, d))
    y = nn.RMSNorm(name="ffn_norm")(x_BLD)
    return x_BLD + drop(FeedForward(self.ffn_dim, self.activation, name="ffn")(y))

