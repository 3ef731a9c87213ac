"""Residual k-means (RQ-KMeans): k-means on the vectors, then on what the first codebook leaves
over, and so on for L levels. Also the k-means pieces RQ-VAE reuses (its codebook initialisation)
and the shared residual encoder.

  level l:  c_l(n) = argmin_k ||r_l(n) - e_{l,k}||²,   r_0 = x,   r_{l+1} = r_l - e_{l, c_l(n)}

Initialisation is greedy k-means++ (D² sampling, best of a few candidates), deterministic in the PRNG key; Lloyd steps run inside
one jitted `lax.while_loop` until no centre moves more than `tol` (relative) or `max_iters`.
An emptied cluster keeps its previous centre (k-means++ seeds rarely empty; RQ-VAE resets dead
codes itself).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class RQKMeansConfig:
  num_levels: int = 3          # L
  codebook_size: int = 256     # K codes per level
  max_iters: int = 100         # Lloyd steps per level at most
  tol: float = 1e-6            # stop when the largest squared centre shift < tol * mean ||x||²
  seed: int = 0
  restarts: int = 1            # k-means runs per level from different seedings; the lowest Σ D² is kept

  def __post_init__(self):
    if self.num_levels < 1 or self.codebook_size < 1 or self.max_iters < 0 or self.restarts < 1:
      raise ValueError(f"RQKMeansConfig: need num_levels >= 1, codebook_size >= 1, max_iters >= 0, "
                       f"restarts >= 1, got {self}")


def sq_distances(x_ND: jax.Array, c_KD: jax.Array) -> jax.Array:
  """||x - c||² for every pair -> [N, K] (expanded form, clipped at 0 against round-off)."""
  d = (jnp.sum(x_ND * x_ND, 1, keepdims=True) - 2.0 * x_ND @ c_KD.T + jnp.sum(c_KD * c_KD, 1)[None, :])
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("k", "trials"))
def kmeans_plus_plus(key: jax.Array, x_ND: jax.Array, k: int, trials: int = 0) -> jax.Array:
  """Greedy k-means++ seeds -> [k, D]: the first uniformly; for each next one, `trials`
  candidates drawn with probability ∝ D²(x), keeping the one that lowers Σ D² most (as
  scikit-learn; trials = 0 means 2 + ⌊ln k⌋). Plain k-means++ (trials = 1) often seeds two
  centres inside one planted cluster and none in another, a local optimum Lloyd cannot leave.

  When every remaining D² is 0 (fewer distinct points than k) the draw falls back to uniform, so
  duplicates of existing centres appear instead of NaNs.
  """
  n = x_ND.shape[0]
  trials = trials or 2 + int(np.log(k))
  keys = jax.random.split(key, k)
  first = jax.random.randint(keys[0], (), 0, n)
  centres = jnp.zeros((k, x_ND.shape[1]), x_ND.dtype).at[0].set(x_ND[first])
  d2 = jnp.sum((x_ND - x_ND[first]) ** 2, axis=1)

  def body(i, carry):
    centres, d2 = carry
    total = jnp.sum(d2)
    p = jnp.where(total > 0, d2 / jnp.maximum(total, 1e-30), 1.0 / n)
    cand = jax.random.choice(keys[i], n, (trials,), p=p)                   # [T]
    new_d2 = jnp.minimum(d2[None, :], sq_distances(x_ND[cand], x_ND))      # [T, N]
    best = jnp.argmin(jnp.sum(new_d2, axis=1))
    return centres.at[i].set(x_ND[cand[best]]), new_d2[best]

  centres, _ = jax.lax.fori_loop(1, k, body, (centres, d2))
  return centres


@functools.partial(jax.jit, static_argnames=("max_iters",))
def lloyd(x_ND: jax.Array, centres_KD: jax.Array, max_iters: int, tol: float) -> tuple[jax.Array, jax.Array]:
  """Lloyd iterations from `centres_KD` -> (centres [K, D], assignment [N] int32)."""
  k = centres_KD.shape[0]
  scale = jnp.maximum(jnp.mean(jnp.sum(x_ND * x_ND, 1)), 1e-30)

  def step(c):
    a = jnp.argmin(sq_distances(x_ND, c), axis=1)
    sums = jax.ops.segment_sum(x_ND, a, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones_like(a, x_ND.dtype), a, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], c)

  def cond(carry):
    it, _, shift = carry
    return (it < max_iters) & (shift > tol * scale)

  def body(carry):
    it, c, _ = carry
    new = step(c)
    return it + 1, new, jnp.max(jnp.sum((new - c) ** 2, 1))

  _, centres, _ = jax.lax.while_loop(cond, body, (0, centres_KD, jnp.asarray(jnp.inf, x_ND.dtype)))
  return centres, jnp.argmin(sq_distances(x_ND, centres), axis=1).astype(jnp.int32)


def kmeans(key: jax.Array, x_ND, k: int, max_iters: int = 100, tol: float = 1e-6):
  """k-means++ then Lloyd -> (centres [k, D], assignment [N] int32)."""
  x = jnp.asarray(x_ND, jnp.float32)
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"kmeans: expected non-empty [N, D] vectors, got shape {x.shape}")
  if not 1 <= k:
    raise ValueError(f"kmeans: k must be >= 1, got {k}")
  return lloyd(x, kmeans_plus_plus(key, x, k), max_iters, tol)


@jax.jit
def residual_encode(x_ND: jax.Array, codebooks_LKD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Greedy residual quantisation -> (codes [N, L] int32, residuals [N, L, D] before each level)."""
  def level(r, book_KD):
    c = jnp.argmin(sq_distances(r, book_KD), axis=1).astype(jnp.int32)
    return r - book_KD[c], (c, r)

  _, (codes_LN, res_LND) = jax.lax.scan(level, x_ND, codebooks_LKD)
  return codes_LN.T, jnp.swapaxes(res_LND, 0, 1)


def decode(codes_NL, codebooks_LKD) -> jax.Array:
  """Sum of the chosen code vectors -> [N, D]."""
  codes = jnp.asarray(codes_NL)
  books = jnp.asarray(codebooks_LKD)
  return jnp.sum(books[jnp.arange(books.shape[0])[None, :], codes], axis=1)


def last_level_costs(residuals_NLD, codebooks_LKD) -> np.ndarray:
  """||r_{L-1}(n) - e_{L-1,k}||² for every item and last-level code -> [N, K]: the quantisation
  cost collision repair minimises when it moves an item to another last-level code."""
  r = jnp.asarray(residuals_NLD)[:, -1]
  return np.asarray(sq_distances(r, jnp.asarray(codebooks_LKD)[-1]))


@dataclasses.dataclass(frozen=True)
class RQKMeans:
  """A fitted residual k-means tokenizer."""
  config: RQKMeansConfig
  codebooks_LKD: np.ndarray     # float32 [L, K, D]

  def encode(self, x_ND) -> np.ndarray:
    """Codes [N, L] (int32) of new vectors."""
    codes, _ = residual_encode(as_vectors(x_ND, self.codebooks_LKD.shape[2]), jnp.asarray(self.codebooks_LKD))
    return np.asarray(codes)

  def residuals(self, x_ND) -> np.ndarray:
    """Residual before each level -> [N, L, D] (the input of `last_level_costs`)."""
    _, res = residual_encode(as_vectors(x_ND, self.codebooks_LKD.shape[2]), jnp.asarray(self.codebooks_LKD))
    return np.asarray(res)

  def decode(self, codes_NL) -> np.ndarray:
    return np.asarray(decode(codes_NL, self.codebooks_LKD))


def as_vectors(x_ND, dim: int | None = None) -> jax.Array:
  """Item vectors as float32 [N, D] after checking shape, width and finiteness."""
  x = np.asarray(x_ND, np.float32)
  if x.ndim != 2 or x.shape[0] < 1:
    raise ValueError(f"expected non-empty item vectors [N, D], got shape {x.shape}")
  if dim is not None and x.shape[1] != dim:
    raise ValueError(f"item vectors have D={x.shape[1]}, the codebooks D={dim}")
  if not np.all(np.isfinite(x)):
    row = int(np.argwhere(~np.isfinite(x))[0, 0])
    raise ValueError(f"item vectors: row {row} is not finite")
  return jnp.asarray(x)


def fit_rq_kmeans(x_ND, config: RQKMeansConfig = RQKMeansConfig()) -> RQKMeans:
  """Fits L codebooks level by level on the residuals of the previous ones."""
  x = as_vectors(x_ND)
  if x.shape[0] < config.codebook_size:
    raise ValueError(f"fit_rq_kmeans: {x.shape[0]} items cannot seed {config.codebook_size} codes")
  keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_levels)
  books, r = [], x
  for l in range(config.num_levels):
    # Restart 0 uses the level's own key, so restarts = 1 gives the codebooks it always gave. Even
    # greedy k-means++ sometimes seeds two centres in one planted cluster and none in another (a
    # local optimum Lloyd cannot leave); restarts keep the seeding with the lowest Σ D².
    seeds = [keys[l]] + list(jax.random.split(keys[l], config.restarts)[1:])
    best = None
    for key in seeds:
      centres, assign = kmeans(key, r, config.codebook_size, config.max_iters, config.tol)
      inertia = jnp.sum((r - centres[assign]) ** 2)
      if best is None:
        best = (inertia, centres, assign)
      else:
        better = inertia < best[0]
        best = (jnp.where(better, inertia, best[0]), jnp.where(better, centres, best[1]),
                jnp.where(better, assign, best[2]))
    _, centres, assign = best
    books.append(centres)
    r = r - centres[assign]
  return RQKMeans(config, np.asarray(jnp.stack(books)))
