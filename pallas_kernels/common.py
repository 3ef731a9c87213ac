"""Pieces shared by the attention kernels: tiles, activations, bias helpers.

Everything here is plain jnp that runs both inside Pallas kernels (Triton
lowering and interpret mode) and in the XLA references, so the two paths
compute the activation, its derivative and the time buckets with the same ops.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plt

# Pointwise activations for "pointwise" scores: act(alpha * q.k + rab).
# GELU is the tanh approximation: the Triton lowering has no erf.
POINTWISE_ACTIVATIONS = ("silu", "gelu", "relu", "identity")
ACTIVATIONS = POINTWISE_ACTIVATIONS + ("softmax",)

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715

# HSTU buckets time gaps by ln(dt) / 0.301 (not log2): keep the constant as is.
TIME_BUCKET_DIVISOR = 0.301

MIN_BLOCK = 16  # Triton's tl.dot needs every tile dimension >= 16.


def _sigmoid(x: jax.Array) -> jax.Array:
  # Spelled out: jax.nn.sigmoid lowers to logistic, which the Triton lowering
  # rewrites to the same expression anyway; this keeps kernel == reference.
  return 1.0 / (1.0 + jnp.exp(-x))


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
  """act(s) for a pointwise activation name."""
  if name == "silu":
    return lambda s: s * _sigmoid(s)
  if name == "gelu":
    return lambda s: 0.5 * s * (1.0 + jnp.tanh(_GELU_C * (s + _GELU_A * s**3)))
  if name == "relu":
    return lambda s: jnp.maximum(s, 0.0)
  if name == "identity":
    return lambda s: s
  raise ValueError(
      f"activation must be one of {POINTWISE_ACTIVATIONS}, got {name!r}.")


def activation_grad(name: str) -> Callable[[jax.Array], jax.Array]:
  """d act(s) / ds, written out so the backward kernels need no autodiff."""
  if name == "silu":
    def silu_grad(s):
      sig = _sigmoid(s)
      return sig * (1.0 + s * (1.0 - sig))
    return silu_grad
  if name == "gelu":
    def gelu_grad(s):
      t = jnp.tanh(_GELU_C * (s + _GELU_A * s**3))
      dt = (1.0 - t * t) * _GELU_C * (1.0 + 3.0 * _GELU_A * s * s)
      return 0.5 * (1.0 + t) + 0.5 * s * dt
    return gelu_grad
  if name == "relu":
    return lambda s: (s > 0.0).astype(s.dtype)
  if name == "identity":
    return lambda s: jnp.ones_like(s)
  raise ValueError(
      f"activation must be one of {POINTWISE_ACTIVATIONS}, got {name!r}.")


def time_bucket(dt: jax.Array, num_buckets: int) -> jax.Array:
  """HSTU's log time bucket of integer gaps dt (any shape) -> int32.

  bucket = clamp(floor(ln(max(|dt|, 1)) / 0.301), 0, num_buckets - 1). The gap
  is taken in integers first (Unix seconds do not fit float32 exactly), then
  converted to float32.
  """
  gap = jnp.maximum(jnp.abs(dt), 1).astype(jnp.float32)
  log_gap = jnp.log(gap)
  # A true float32 division, as the reference's `log(dt) / 0.301`. XLA (the interpret path and any
  # XLA-compiled caller) rewrites division by a literal into a multiply by its rounded reciprocal,
  # which puts 13 of 450 gaps next to a bucket edge one bucket high. `optimization_barrier` (the
  # fix in recjax.layers.relative_bias) has no Triton lowering, so the divisor is made a runtime
  # value instead: log_gap is finite, and XLA keeps `0 * x` for floats (it is NaN for inf/NaN x),
  # so the divisor equals 0.301 exactly and is not a foldable constant. Costs one FMA beside a log.
  divisor = TIME_BUCKET_DIVISOR + 0.0 * log_gap
  bucket = jnp.floor(log_gap / divisor).astype(jnp.int32)
  return jnp.clip(bucket, 0, num_buckets - 1)


def pos_index(rows: jax.Array, cols: jax.Array, num_pos: int) -> jax.Array:
  """Index into a [2P - 1] positional table: (P - 1) + j - i, clamped."""
  center = (num_pos - 1) // 2
  return jnp.clip(center + cols - rows, 0, num_pos - 1)


def _is_pow2(n: int) -> bool:
  return n > 0 and (n & (n - 1)) == 0


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes and Triton launch parameters of the attention kernels.

  Block sizes are upper bounds: a kernel shrinks a block to the (power of two
  rounded) sequence length when the sequence is shorter, e.g. GDPA's 32 keys.

  Attributes:
    block_q: query rows per program in the forward kernel.
    block_k: keys per inner-loop step in the forward kernel.
    block_q_dkv: query rows per inner-loop step in the dK/dV kernel.
    block_k_dkv: keys per program in the dK/dV kernel.
    block_q_dq: query rows per program in the dQ kernel.
    block_k_dq: keys per inner-loop step in the dQ kernel.
    num_warps: Triton warps per program; None picks 4 for head dims <= 64,
      else 8.
    num_stages: Triton software-pipelining stages.
  """
  block_q: int = 64
  block_k: int = 64
  block_q_dkv: int = 32
  block_k_dkv: int = 64
  block_q_dq: int = 64
  block_k_dq: int = 32
  num_warps: int | None = None
  num_stages: int = 2

  def __post_init__(self):
    for f in ("block_q", "block_k", "block_q_dkv", "block_k_dkv",
              "block_q_dq", "block_k_dq"):
      b = getattr(self, f)
      if not _is_pow2(b) or b < MIN_BLOCK:
        raise ValueError(
            f"BlockSizes.{f} must be a power of two >= {MIN_BLOCK}, got {b}.")
    if self.num_warps is not None and not _is_pow2(self.num_warps):
      raise ValueError(
          f"BlockSizes.num_warps must be a power of two, got {self.num_warps}.")
    if self.num_stages < 1:
      raise ValueError(
          f"BlockSizes.num_stages must be >= 1, got {self.num_stages}.")

  def fit(self, Lq: int, Lk: int) -> "BlockSizes":
    """Shrinks blocks that exceed the (power-of-two rounded) lengths."""
    cap_q = max(MIN_BLOCK, pl.next_power_of_2(Lq))
    cap_k = max(MIN_BLOCK, pl.next_power_of_2(Lk))
    return dataclasses.replace(
        self,
        block_q=min(self.block_q, cap_q), block_k=min(self.block_k, cap_k),
        block_q_dkv=min(self.block_q_dkv, cap_q),
        block_k_dkv=min(self.block_k_dkv, cap_k),
        block_q_dq=min(self.block_q_dq, cap_q),
        block_k_dq=min(self.block_k_dq, cap_k))

  def compiler_params(self, head_dim: int) -> plt.CompilerParams:
    """Explicit Triton params: without them jax 0.10 picks Mosaic GPU."""
    num_warps = self.num_warps
    if num_warps is None:
      num_warps = 4 if head_dim <= 64 else 8
    return plt.CompilerParams(num_warps=num_warps, num_stages=self.num_stages)


def pad_axis(x: jax.Array, axis: int, size: int, value=0) -> jax.Array:
  """Pads `axis` of x at the end up to `size` (no-op when already there)."""
  extra = size - x.shape[axis]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def padded_head_dim(d: int) -> int:
  """Head dims are padded to a power of two >= 16 (Triton tile rule)."""
  return max(MIN_BLOCK, pl.next_power_of_2(d))
