"""TIGER (Rajput et al., NeurIPS 2023): a generative retriever over semantic IDs (papers.md §6e).

Every item is a SID of L codes in 0..K-1. The encoder reads the user's history as SID tokens, the
decoder generates the next item's L codes one level at a time; at inference a trie-constrained
beam search (`semantic_ids.beam_search`) turns the decoder into a top-k retriever of real items.

Batch (right-padded, oldest item first):
  history_codes    int [B, H, L]  the SIDs of the history items (rows at or past the length: any value)
  history_lengths  int [B]        valid history items, 1..H
  target_codes     int [B, L]     the next item's SID (training and teacher-forced scoring)
  user_ids         int [B]        only when `num_user_tokens > 0`

Vocabulary: one table [L·K + U + 1, D]: row l·K + c is code c at level l (so the level is part of
the token), then U hashed user tokens (`user_id mod U`, TIGER uses U = 2000) and the decoder's
start token. Encoder input: [user token] + the H·L history codes + a learned recency embedding
per history item (0 = most recent, so padding width never moves a position). Decoder input at
position t: start (t = 0) or the target code of level t-1; its output at t scores level t against
the level-t rows of the same table (tied, scaled by D^-1/2 as in T5).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.layers.dropout import Dropout
from recjax.layers.transformer import TransformerBlock


class TIGER(nn.Module):
  """T5-style encoder-decoder over SID tokens -> teacher-forced logits [B, L, K] (`__call__`)."""
  codebook_size: int             # K codes per level
  num_levels: int                # L levels per SID
  max_history: int = 20          # H at most (TIGER: 20)
  dim: int = 128
  num_heads: int = 6
  head_dim: int = 64
  ffn_dim: int = 1024
  num_encoder_layers: int = 4
  num_decoder_layers: int = 4
  dropout: float = 0.1
  num_user_tokens: int = 0       # U hashed user-id tokens (0: no user token)
  activation: str = "relu"
  backend: str = "xla"

  def setup(self):
    if self.codebook_size < 1 or self.num_levels < 1 or self.max_history < 1 or self.num_user_tokens < 0:
      raise ValueError(f"TIGER needs codebook_size, num_levels, max_history >= 1 and num_user_tokens >= 0, "
                       f"got {self.codebook_size}, {self.num_levels}, {self.max_history}, {self.num_user_tokens}")
    self.vocab_size = self.num_levels * self.codebook_size + self.num_user_tokens + 1
    self.start_token = self.vocab_size - 1
    self.tokens = self.param("tokens", nn.initializers.normal(1.0), (self.vocab_size, self.dim))
    self.recency = self.param("recency", nn.initializers.normal(1.0), (self.max_history, self.dim))
    self.input_dropout = Dropout(self.dropout)
    block = lambda decoder, i: TransformerBlock(
        self.num_heads, self.head_dim, self.ffn_dim, self.dropout, causal=decoder, cross_attention=decoder,
        activation=self.activation, backend=self.backend, name=f"{'decoder' if decoder else 'encoder'}_{i}")
    self.encoder = [block(False, i) for i in range(self.num_encoder_layers)]
    self.decoder = [block(True, i) for i in range(self.num_decoder_layers)]
    self.encoder_norm = nn.RMSNorm()
    self.decoder_norm = nn.RMSNorm()

  def __call__(self, batch, *, train: bool = False) -> jax.Array:
    """Teacher forcing: logits [B, L, K] of every target level given the levels before it."""
    target_BL = batch["target_codes"]
    if target_BL.ndim != 2 or target_BL.shape[1] != self.num_levels:
      raise ValueError(f"target_codes must be [B, L={self.num_levels}], got {target_BL.shape}")
    memory_BSD, memory_lengths_B = self.encode(batch, train=train)
    return self.decode(memory_BSD, memory_lengths_B, target_BL[:, :-1], train=train)

  def encode(self, batch, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """History -> (memory [B, S, D] with S = [1 +] H·L, valid memory positions [B]); padding rows are 0."""
    codes_BHL, lengths_B = batch["history_codes"], batch["history_lengths"]
    if codes_BHL.ndim != 3 or codes_BHL.shape[2] != self.num_levels:
      raise ValueError(f"history_codes must be [B, H, L={self.num_levels}], got {codes_BHL.shape}")
    b, h, l = codes_BHL.shape
    if h > self.max_history:
      raise ValueError(f"history_codes has H={h} items, more than TIGER.max_history={self.max_history}")
    if lengths_B.shape != (b,):
      raise ValueError(f"history_lengths must be [B={b}], got {lengths_B.shape}")
    k = self.codebook_size
    ids_BHL = codes_BHL + (jnp.arange(l) * k)[None, None, :]
    recency_BH = jnp.clip(lengths_B[:, None] - 1 - jnp.arange(h)[None, :], 0, self.max_history - 1)
    x_BHLD = self.tokens[ids_BHL] + self.recency[recency_BH][:, :, None, :]
    x_BSD = x_BHLD.reshape(b, h * l, self.dim)
    lengths_B = lengths_B.astype(jnp.int32) * l
    if self.num_user_tokens:
      if "user_ids" not in batch:
        raise ValueError("TIGER with num_user_tokens > 0 needs batch['user_ids'] [B]")
      user_B = self.num_levels * k + batch["user_ids"] % self.num_user_tokens
      x_BSD = jnp.concatenate([self.tokens[user_B][:, None, :], x_BSD], axis=1)
      lengths_B = lengths_B + 1
    valid_BS1 = (jnp.arange(x_BSD.shape[1])[None, :] < lengths_B[:, None])[..., None]
    x_BSD = self.input_dropout(x_BSD, deterministic=not train) * valid_BS1
    for block in self.encoder:
      x_BSD = block(x_BSD, lengths_B, train=train)
    return self.encoder_norm(x_BSD) * valid_BS1, lengths_B

  def decode(self, memory_BSD, memory_lengths_B, prefix_BT, *, train: bool = False, beams: int = 1) -> jax.Array:
    """Logits [B, T + 1, K] of levels 0..T given the first T <= L - 1 target codes `prefix_BT`.

    With `beams=W`, `prefix_BT` holds B·W rows (the W beams of query b are rows b·W .. b·W + W - 1)
    while the memory keeps one row per query, [B, S, D]: each memory row's cross-attention keys and
    values are projected once for its W beams (`TransformerBlock(beams=)`); logits are [B·W, T + 1, K].
    """
    b, t = prefix_BT.shape
    if t >= self.num_levels:
      raise ValueError(f"decode: prefix has {t} codes, at most L - 1 = {self.num_levels - 1}")
    k = self.codebook_size
    ids_BT = jnp.concatenate([jnp.full((b, 1), self.start_token, jnp.int32),
                              prefix_BT.astype(jnp.int32) + (jnp.arange(t, dtype=jnp.int32) * k)[None]], axis=1)
    x_BTD = self.input_dropout(self.tokens[ids_BT], deterministic=not train)
    for block in self.decoder:
      x_BTD = block(x_BTD, None, memory_BSD, memory_lengths_B, train=train, beams=beams)
    y_BTD = self.decoder_norm(x_BTD) / math.sqrt(self.dim)
    out_TKD = self.tokens[:(t + 1) * k].reshape(t + 1, k, self.dim)   # position t scores level t
    return jnp.einsum("btd,tkd->btk", y_BTD, out_TKD)


def decode_context(memory_BSD: jax.Array, memory_lengths_B: jax.Array) -> dict[str, jax.Array]:
  """The beam-search context: the encoder output, computed once per query and shared by its beams."""
  return {"memory": memory_BSD, "memory_lengths": memory_lengths_B}


@dataclasses.dataclass(frozen=True)
class BeamScorer:
  """`BeamScorer(model)(params)` is a `step_fn(state, tokens_BWL, level, context=) -> (logits_BWK,
  state)` for `semantic_ids.beam_search`: it runs the decoder on each beam's first `level` codes
  against the encoder output (the search's per-query `context`, from `decode_context`, never tiled
  over beams: `TIGER.decode(beams=W)` folds the beams into cross-attention's queries, so the memory's
  keys and values are projected once per query, not once per beam) and returns the level-`level`
  logits. No per-beam state: the decoder is re-run on the prefix (L is a handful of tokens, so no KV
  cache). Frozen, so it hashes by value and a jitted search compiles once per model, not per call.
  """
  model: TIGER

  def __call__(self, params):
    def step_fn(state, tokens_BWL, level: int, context):
      b, w = tokens_BWL.shape[:2]
      logits_NTK = self.model.apply(
          {"params": params}, context["memory"], context["memory_lengths"],
          tokens_BWL[:, :, :level].reshape(b * w, level), method=TIGER.decode, beams=w)
      return logits_NTK[:, level].reshape(b, w, -1), state
    return step_fn
