"""Counter-based random numbers: a stateless integer hash of each element's index.

On CPU, the JAX PRNG (threefry or rbg) costs ≈ 5–10 ns per 32-bit word, and `jax.random.randint`
draws two words per integer: sampling the [14k tokens, 128] negatives of one ML-1M HSTU step took
≈ 37 ms of a ≈ 600 ms step, and dropout masks ≈ 20% of it. Here one PRNG word per call seeds a
stateless hash of the element index (the `lowbias32` mixer: two multiply-xorshift rounds, a
full-avalanche 32-bit permutation), which XLA fuses into the surrounding elementwise work.

Draws are deterministic given the seed (a resumed run draws the same numbers), independent across
calls (fresh seed each time), and uniform to within 2^-32 per element (`uniform_ints` to within
n / 2^32 per value). Tests check uniformity and the absence of correlation between neighbours.

Element indices are 64-bit (`bits_at_rows`): an [n, L, L] attention-weight mask passes 2^32
elements at L = 8k with 64 rows, and a 32-bit index would wrap there and repeat the mask. JAX runs
without 64-bit types by default, so the index is a (hi, lo) pair of uint32 words: lo is hashed as
before, under a key that mixes the seed with hi. Page hi = 0 (the first 2^32 elements) gets the key
of the 32-bit scheme, so every mask that fits in 2^32 elements is unchanged.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_GOLDEN = 0x9E3779B9


def lowbias32(x: jax.Array) -> jax.Array:
  """A full-avalanche permutation of uint32 (Wellons' lowbias32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def seed_from(rng: jax.Array) -> jax.Array:
  """One uint32 draw from a JAX key: the seed of a counter-based stream."""
  return jax.random.bits(rng, (), jnp.uint32)


def _page_key(seed: jax.Array, hi: jax.Array) -> jax.Array:
  """The hash key of the 2^32-element page `hi`: lowbias32(seed) for page 0 (lowbias32(0) = 0)."""
  return lowbias32(seed.astype(jnp.uint32) + lowbias32(hi * jnp.uint32(_GOLDEN)))


def bits_at(seed: jax.Array, index: jax.Array) -> jax.Array:
  """uint32 bits of 32-bit element indices `index` (any shape): hash(index, seed).

  Distinct indices get independent bits only below 2^32; `bits_at_rows` takes 64-bit indices.
  """
  return lowbias32(index.astype(jnp.uint32) * jnp.uint32(_GOLDEN) + lowbias32(seed.astype(jnp.uint32)))


def bits_at_rows(seed: jax.Array, row: jax.Array, width: int, col: jax.Array) -> jax.Array:
  """uint32 bits of elements with 64-bit index row * width + col; row and col broadcast.

  Equal to `bits_at(seed, row * width + col)` while that index is below 2^32. The page keys are
  computed at the shape of `row` (e.g. [n, L, 1]), so each element costs what `bits_at` costs plus
  an add, a compare and a select: a row of `width` < 2^32 elements spans at most two pages.
  """
  if not 0 < width < 2 ** 32:
    raise ValueError(f"bits_at_rows needs 0 < width < 2^32, got {width}")
  row = row.astype(jnp.uint32)
  hi0 = _mulhi32(row, width)
  key0, key1 = _page_key(seed, hi0), _page_key(seed, hi0 + jnp.uint32(1))
  lo0 = row * jnp.uint32(width)
  lo = lo0 + col.astype(jnp.uint32)
  return lowbias32(lo * jnp.uint32(_GOLDEN) + jnp.where(lo < lo0, key1, key0))


def random_bits(seed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 bits of `shape`, element e (row-major, 64-bit) = hash(e, seed)."""
  row, col = _rows_and_cols(shape)
  return bits_at_rows(seed, row, col.shape[1], col).reshape(shape)


def _rows_and_cols(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Row index [R, 1] and column index [1, C] of `shape` seen as R = prod(shape[:-1]) rows of C."""
  shape = tuple(shape) or (1,)
  rows, width = math.prod(shape[:-1]), shape[-1]
  if rows >= 2 ** 32 or width >= 2 ** 32:
    raise ValueError(f"counter_rng: shape {shape} needs fewer than 2^32 rows and columns")
  return (jax.lax.iota(jnp.uint32, rows).reshape(rows, 1), jax.lax.iota(jnp.uint32, width).reshape(1, width))


def keep_threshold(rate: float) -> jax.Array:
  """Bits at or above this are kept: P(keep) = 1 - rate to within 2^-32."""
  return jnp.uint32(min(int(rate * 2.0 ** 32), 2 ** 32 - 1))


def keep_at_rows(seed: jax.Array, row: jax.Array, width: int, col: jax.Array, rate: float) -> jax.Array:
  """Dropout keep decisions for elements with 64-bit index row * width + col (see `bits_at_rows`)."""
  return bits_at_rows(seed, row, width, col) >= keep_threshold(rate)


def _mulhi32(a: jax.Array, n: int) -> jax.Array:
  """floor(a * n / 2^32) for uint32 a and 0 < n < 2^32, exactly, in 32-bit arithmetic."""
  a1, a0 = a >> 16, a & jnp.uint32(0xFFFF)
  n1, n0 = jnp.uint32(n >> 16), jnp.uint32(n & 0xFFFF)
  mid = a1 * n0 + ((a0 * n0) >> 16)           # < 2^32: (2^16-1)^2 + 2^16
  mid2 = (mid & jnp.uint32(0xFFFF)) + a0 * n1  # < 2^32 likewise
  return a1 * n1 + (mid >> 16) + (mid2 >> 16)


def uniform_ints(seed: jax.Array, shape: tuple[int, ...], n: int) -> jax.Array:
  """int32 draws uniform on [0, n) of `shape` (Lemire's multiply-shift of the hash bits)."""
  if not 0 < n < 2 ** 31:
    raise ValueError(f"uniform_ints needs 0 < n < 2^31, got {n}")
  return _mulhi32(random_bits(seed, shape), n).astype(jnp.int32)
