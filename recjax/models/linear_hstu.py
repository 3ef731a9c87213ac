"""Linear HSTU: HSTU's block with the pointwise attention replaced by a causal running state.

QGS's "Linear HSTU" (papers.md §6b) keeps HSTU's softmax-free, U-gated block and swaps the
O(L²) attention for an O(L) running sum. Per block, with X [B, L, D] and per head h:

    U, V, Q, K = split(SiLU(LN(X) · W_uvqk))                     (as HSTU)
    S_t        = S_{t-1} + K_t V_tᵀ          ("outer": S [Dqk, Dv], the linear-attention state)
               = S_{t-1} + K_t ⊙ V_t          ("diagonal": S [D], QGS's element-wise RWKV-style state)
    O_t        = Q_t · S_t                    (or Q_t ⊙ S_t)
    Y_t        = W_o · Dropout(U_t ⊙ LN(O_t)) + b_o + X_t

Choices, and why:
  * φ = SiLU, the activation HSTU already applies to the U, V, Q, K projection (papers.md §6b: "SiLU
    projections give Q, K, V, U"); no second feature map, so the block keeps HSTU's parameters.
  * The normalisation is HSTU's LN(O_t) (no affine) over the heads' concatenation, not a
    denominator φ(q)·Σφ(k): LN is scale-invariant, so the growth of S_t with t needs no 1/N (HSTU's
    1/N constant cannot follow a running sum), and it is per token, so a decode step equals the
    full pass. QGS writes "Norm(o_t)" at the same place.
  * The default state is "outer" (rank-1 updates, the usual linear attention); "diagonal" is the
    element-wise form QGS describes (needs Dqk == Dv), cheaper and less expressive.
  * No relative attention bias: it has no running-state form; order comes from the absolute
    position embedding and causality.
Padding tokens add nothing to the state (their K is zeroed), so they never affect real tokens and
the state after a padded sequence equals the state after its real tokens.

The full pass is a chunked scan (`linear_attention`): inside a chunk of `chunk` tokens the causal
[chunk, chunk] scores, across chunks the carried state, so time is O(L·chunk·d + L·d²) and memory
O(L·d + d²) per head. `decode` runs one token per call and carries the states.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.layers.dropout import Dropout
from recjax.layers.embeddings import ItemEmbedding, sequence_inputs
from recjax.layers.norms import layer_norm_no_affine
from recjax.models.hstu import _torch_linear_bias_init   # the same output-layer init as HSTU

STATE_KINDS = ("outer", "diagonal")


def init_state(kind: str, b: int, h: int, dqk: int, dv: int, dtype=jnp.float32) -> jax.Array:
  """The empty running state: [B, H, Dqk, Dv] ("outer") or [B, H, Dv] ("diagonal")."""
  if kind == "outer":
    return jnp.zeros((b, h, dqk, dv), dtype)
  if kind == "diagonal":
    if dqk != dv:
      raise ValueError(f"the diagonal state needs dqk == dv, got dqk={dqk}, dv={dv}")
    return jnp.zeros((b, h, dv), dtype)
  raise ValueError(f"state kind must be one of {STATE_KINDS}, got {kind!r}")


def linear_attention(q_BLHK: jax.Array, k_BLHK: jax.Array, v_BLHE: jax.Array, valid_BL: jax.Array,
                     state: jax.Array, *, kind: str = "outer", chunk: int = 64) -> tuple[jax.Array, jax.Array]:
  """Causal running-state attention over a whole sequence -> (O [B, L, H, E], final state).

  O_t = Q_t · S_t with S_t = state + Σ_{s ≤ t, valid} K_s V_sᵀ ("outer"), or the element-wise
  analogue ("diagonal"). `state` is the state before the first token (zeros for a fresh sequence).
  """
  b, l, h, dk = q_BLHK.shape
  if k_BLHK.shape != q_BLHK.shape or v_BLHE.shape[:3] != (b, l, h) or valid_BL.shape != (b, l):
    raise ValueError(f"linear_attention shapes disagree: q {q_BLHK.shape}, k {k_BLHK.shape}, "
                     f"v {v_BLHE.shape}, valid {valid_BL.shape}")
  if chunk < 1:
    raise ValueError(f"chunk must be >= 1, got {chunk}")
  k_BLHK = k_BLHK * valid_BL[:, :, None, None].astype(k_BLHK.dtype)
  if kind == "diagonal":
    if state.shape != (b, h, v_BLHE.shape[-1]) or dk != v_BLHE.shape[-1]:
      raise ValueError(f"diagonal state needs dqk == dv and state [B, H, Dv], got q {q_BLHK.shape}, "
                       f"v {v_BLHE.shape}, state {state.shape}")
    s_BLHE = state[:, None] + jnp.cumsum(k_BLHK * v_BLHE, axis=1)
    return q_BLHK * s_BLHE, s_BLHE[:, -1] if l else state
  if kind != "outer":
    raise ValueError(f"state kind must be one of {STATE_KINDS}, got {kind!r}")
  c = min(chunk, max(l, 1))
  nc = -(-l // c)

  def chunks(x):   # [B, L, H, F] -> [nc, B, c, H, F] (zero padding at the end adds nothing)
    x = jnp.pad(x, ((0, 0), (0, nc * c - l), (0, 0), (0, 0)))
    return jnp.moveaxis(x.reshape(b, nc, c, h, x.shape[-1]), 1, 0)

  causal_QS = jnp.tril(jnp.ones((c, c), q_BLHK.dtype))

  def body(s_BHKE, qkv):
    q, k, v = qkv
    scores = jnp.einsum("bqhk,bshk->bhqs", q, k) * causal_QS
    o = jnp.einsum("bhqs,bshe->bqhe", scores, v) + jnp.einsum("bqhk,bhke->bqhe", q, s_BHKE)
    return s_BHKE + jnp.einsum("bshk,bshe->bhke", k, v), o

  state, o = jax.lax.scan(body, state, (chunks(q_BLHK), chunks(k_BLHK), chunks(v_BLHE)))
  return jnp.moveaxis(o, 0, 1).reshape(b, nc * c, h, -1)[:, :l], state


def linear_attention_step(q_BHK: jax.Array, k_BHK: jax.Array, v_BHE: jax.Array, valid_B: jax.Array,
                          state: jax.Array, *, kind: str = "outer") -> tuple[jax.Array, jax.Array]:
  """One token: S ← S + valid·K Vᵀ, O = Q · S -> (O [B, H, E], new state)."""
  k_BHK = k_BHK * valid_B[:, None, None].astype(k_BHK.dtype)
  if kind == "diagonal":
    state = state + k_BHK * v_BHE
    return q_BHK * state, state
  state = state + k_BHK[..., :, None] * v_BHE[..., None, :]
  return jnp.einsum("bhk,bhke->bhe", q_BHK, state), state


class LinearHSTUBlock(nn.Module):
  """One Linear HSTU block; `x_BLD` [B, L, D] (L = 1 with `decode`) -> (x_BLD, state)."""
  dim: int
  num_heads: int
  dqk: int
  dv: int
  dropout: float
  state_kind: str
  chunk: int

  @nn.compact
  def __call__(self, x_BLD, valid_BL, state, *, train: bool, decode: bool = False):
    b, l, _ = x_BLD.shape
    h, dqk, dv = self.num_heads, self.dqk, self.dv
    uvqk = nn.Dense(h * (2 * dv + 2 * dqk), use_bias=False, kernel_init=nn.initializers.normal(0.02),
                    name="uvqk")(layer_norm_no_affine(x_BLD))
    u_BLF, v_BLF, q_BLF, k_BLF = jnp.split(jax.nn.silu(uvqk), [h * dv, 2 * h * dv, 2 * h * dv + h * dqk], -1)
    q, k, v = q_BLF.reshape(b, l, h, dqk), k_BLF.reshape(b, l, h, dqk), v_BLF.reshape(b, l, h, dv)
    if decode:
      if l != 1:
        raise ValueError(f"decode takes one token per call, got L={l}")
      o, state = linear_attention_step(q[:, 0], k[:, 0], v[:, 0], valid_BL[:, 0], state, kind=self.state_kind)
      o_BLHE = o[:, None]
    else:
      o_BLHE, state = linear_attention(q, k, v, valid_BL, state, kind=self.state_kind, chunk=self.chunk)
    y = u_BLF * layer_norm_no_affine(o_BLHE.reshape(b, l, h * dv))
    y = Dropout(self.dropout, deterministic=not train)(y)
    y = nn.Dense(self.dim, kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=_torch_linear_bias_init(h * dv), name="out")(y)
    return x_BLD + y, state


class LinearHSTU(nn.Module):
  """Linear HSTU encoder over item-id sequences (same batch and outputs as `HSTU`).

  Input batch fields: `ids` [B, L] (0 = padding, oldest first) and `lengths` [B].
  Returns (outputs [B, L, D], item table [V, D]). `encode` also returns the per-block states after
  the last real token; `decode` continues from them one token at a time.
  """
  num_items: int
  dim: int = 50
  num_blocks: int = 2
  num_heads: int = 1
  dqk: int = 50
  dv: int = 50
  max_len: int = 200
  dropout: float = 0.2
  state_kind: str = "outer"
  chunk: int = 64

  def setup(self):
    init_state(self.state_kind, 1, self.num_heads, self.dqk, self.dv)   # validates the settings
    self.item_embedding = ItemEmbedding(self.num_items, self.dim)
    self.position_embedding = self.param(
        "position_embedding", nn.initializers.normal(math.sqrt(2.0 / (self.max_len + self.dim))),
        (self.max_len, self.dim))
    self.input_dropout = Dropout(self.dropout)
    self.blocks = [LinearHSTUBlock(self.dim, self.num_heads, self.dqk, self.dv, self.dropout,
                                   self.state_kind, self.chunk, name=f"block_{i}")
                   for i in range(self.num_blocks)]

  def initial_states(self, batch_size: int) -> tuple[jax.Array, ...]:
    return tuple(init_state(self.state_kind, batch_size, self.num_heads, self.dqk, self.dv)
                 for _ in range(self.num_blocks))

  def encode(self, ids_BL, lengths_B, *, train: bool = False):
    """-> (x [B, L, D], per-block states after each row's last real token)."""
    b, l = ids_BL.shape
    valid_BL = (jnp.arange(l)[None, :] < lengths_B[:, None]) & (ids_BL != 0)
    x, _ = sequence_inputs(self.item_embedding, self.position_embedding, ids_BL * valid_BL,
                           self.input_dropout, train=train)
    states = []
    for block, state in zip(self.blocks, self.initial_states(b)):
      x, state = block(x, valid_BL, state, train=train)
      states.append(state)
    return x, tuple(states)

  def decode(self, ids_B, positions_B, states):
    """One token per row at `positions_B` (its index in the sequence) -> (x [B, D], new states).
    A row with id 0 (padding) leaves its states unchanged. Positions past `max_len` reuse the last
    position-embedding row (the state itself has no length limit)."""
    valid_B1 = (ids_B != 0)[:, None]
    pos_B = jnp.minimum(positions_B, self.max_len - 1)
    x = (self.item_embedding(ids_B) * math.sqrt(self.dim) + self.position_embedding[pos_B]) * valid_B1
    x = x[:, None]
    new_states = []
    for block, state in zip(self.blocks, states):
      x, state = block(x, valid_B1, state, train=False, decode=True)
      new_states.append(state)
    return x[:, 0], tuple(new_states)

  def __call__(self, batch, *, train: bool = False):
    x, _ = self.encode(batch["ids"], batch["lengths"], train=train)
    return x, self.item_embedding.table
