"""The sampled softmax over a row-sharded item table, each negative scored where its row lives.

The item table `[V, D]` is split by rows over mesh axes `axes` (shard s holds rows
[s * R, (s + 1) * R), R = V / S, `layers/sharded_embedding.row_axes`). The SPMD path
(`losses.sampled_softmax_loss(impl="xla")` under a sharded jit) gathers the rows of every
candidate id onto every device: GSPMD partitions `table[ids]` as a masked local gather plus an
all-reduce of the gathered `[T, K, D]` rows, forward and backward. Here, inside one `shard_map`:

- every device sees all T tokens' user vectors and candidate ids (replicated: `[T, D]` and
  `[T, K]`, far smaller than `[T, K, D]`) and keeps the entries (t, k) whose id is in its rows,
  compacted (`jnp.nonzero`) so that its work is proportional to the entries it owns, not to T x K;
- it scores them against its own rows (L2-normalising only the rows it reads, not the whole
  table), in steps of `chunk` x K entries (a loop whose trip count is the device's own count);
- the per-token softmax denominators combine across devices as a logsumexp of per-device parts:
  M = pmax(m_s), L = psum(l_s * exp(m_s - M)), lse = M + log L, where device s holds the max m_s
  and the sum l_s = sum exp(logit - m_s) over the entries it owns (kept online over its loop
  steps); the positive's logit comes from its owner by a psum of [T];
- backward (`jax.custom_vjp`), each device reuses its compacted entries (a forward residual),
  recomputes their logits, turns them into
  d logit = softmax - onehot(positive), scatters the table gradient into its own rows (no
  communication) and psums the users' gradient `[T, D]`.

So nothing of size `[T, K, D]` crosses devices: per step, psums of `[T]` and `[T, D]`. The
entries are exact (no capacity, nothing dropped). Same conventions as `losses.py`: cosine logits /
temperature, the positive in the denominator, a negative equal to the positive removed (logit
-5e4), weighted token mean; tests check loss and gradients against the SPMD path.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

NORM_EPS = 1e-6          # losses.NORM_EPS (HSTU's L2NormEmbeddingPostprocessor)
REMOVED_LOGIT = -5e4     # losses.REMOVED_LOGIT: a negative equal to the positive


def _spec(axes: tuple[str, ...]):
  return axes if len(axes) != 1 else axes[0]


def _owned_entries(ids_TK: jax.Array, rows_per_shard: int, axes: tuple[str, ...], step: int):
  """This device's entries of the flattened [T * K] candidate grid, compacted to the front.

  -> (entry_E [E] flat indices t * K + k, count [1] (the first `count` are real)), with E = T * K
  rounded up to a multiple of `step`, so that every loop step reads a full slice."""
  flat_n = ids_TK.reshape(-1)
  shard = jax.lax.axis_index(axes)
  owned_n = (flat_n // rows_per_shard) == shard
  size = -(-flat_n.shape[0] // step) * step
  # jnp.nonzero with a static size: ascending indices, so entries stay grouped by token.
  (entry_E,) = jnp.nonzero(owned_n, size=size, fill_value=0)
  return entry_E.astype(jnp.int32), jnp.sum(owned_n, dtype=jnp.int32, keepdims=True)


def _score(user_TD, table_RD, ids_TK, entry_C, valid_C, shard, rows_per_shard, temperature, normalize):
  """Logits of `entry_C` (flat indices into [T, K], all owned by this device) -> pieces for both
  passes: (logit_C, token_C, row_C, item_CD (normalised), norm_C (max(|row|, eps)), is_pos_C)."""
  k = ids_TK.shape[1]
  token_C, col_C = entry_C // k, entry_C % k
  id_C = ids_TK.reshape(-1)[entry_C]
  # Invalid (padding) entries point at entry 0, whose row may be another device's: clip to a row
  # of this shard; they are masked out of every sum below.
  row_C = jnp.clip(id_C - shard * rows_per_shard, 0, rows_per_shard - 1)
  raw_CD = table_RD[row_C]
  norm_C = jnp.maximum(jnp.linalg.norm(raw_CD, axis=-1), NORM_EPS) if normalize else jnp.ones_like(id_C, raw_CD.dtype)
  item_CD = raw_CD / norm_C[:, None]
  logit_C = jnp.sum(user_TD[token_C] * item_CD, axis=-1) / temperature
  is_pos_C = col_C == 0
  is_dup_C = jnp.logical_and(~is_pos_C, id_C == ids_TK[token_C, 0])
  logit_C = jnp.where(is_dup_C, REMOVED_LOGIT, logit_C)
  return jnp.where(valid_C, logit_C, -jnp.inf), token_C, row_C, item_CD, norm_C, is_pos_C


def _forward_local(user_TD, table_RD, ids_TK, weights_T, *, axes, temperature, chunk, normalize):
  """One device: (loss sum, lse [T]), the same on every device, and this device's owned entries
  (entry_E, count [1]), kept for the backward pass."""
  t, k = ids_TK.shape
  rows = table_RD.shape[0]
  shard = jax.lax.axis_index(axes)
  step = chunk * k
  entry_E, count_1 = _owned_entries(ids_TK, rows, axes, step)
  count = count_1[0]

  def body(i, carry):
    # An online logsumexp over this device's entries, a step at a time (work in proportion to the
    # entries it owns, not to T x K): the running max and the sum rescaled to it, per token.
    max_T, sum_T, pos_T = carry
    entry_C = jax.lax.dynamic_slice_in_dim(entry_E, i * step, step)
    valid_C = i * step + jnp.arange(step) < count
    logit_C, token_C, _, _, _, is_pos_C = _score(user_TD, table_RD, ids_TK, entry_C, valid_C, shard, rows,
                                                 temperature, normalize)
    token_C = jnp.where(valid_C, token_C, t)             # t: dropped by the segment ops
    new_max_T = jnp.maximum(max_T, jax.ops.segment_max(logit_C, token_C, t, indices_are_sorted=True))
    safe_T = jnp.where(jnp.isfinite(new_max_T), new_max_T, 0.0)   # -inf: no entry of the token yet
    part_T = jax.ops.segment_sum(jnp.exp(logit_C - safe_T[jnp.minimum(token_C, t - 1)]), token_C, t,
                                 indices_are_sorted=True)
    sum_T = sum_T * jnp.exp(max_T - safe_T) + part_T
    pos_T = pos_T + jax.ops.segment_sum(jnp.where(is_pos_C, logit_C, 0.0), token_C, t, indices_are_sorted=True)
    return new_max_T, sum_T, pos_T

  # The loop's carry differs between devices (it holds their own entries): say so to shard_map.
  zeros_T = jnp.zeros((t,), user_TD.dtype)
  init = jax.lax.pcast((jnp.full((t,), -jnp.inf, user_TD.dtype), zeros_T, zeros_T), axes, to="varying")
  max_T, sum_T, pos_T = jax.lax.fori_loop(0, (count + step - 1) // step, body, init)
  safe_max_T = jnp.where(jnp.isfinite(max_T), max_T, 0.0)
  # The logsumexp of the parts: every device rescales its sum to the global max.
  global_max_T = jax.lax.pmax(max_T, axes)
  total_T = jax.lax.psum(jnp.where(sum_T > 0, sum_T * jnp.exp(safe_max_T - global_max_T), 0.0), axes)
  lse_T = global_max_T + jnp.log(total_T)
  pos_T = jax.lax.psum(pos_T, axes)
  return jnp.sum((lse_T - pos_T) * weights_T), lse_T, entry_E, count_1


def _backward_local(user_TD, table_RD, ids_TK, weights_T, lse_T, entry_E, count_1, g, *, axes, temperature,
                    chunk, normalize):
  """One device: (d user [T, D] summed over devices, d table [R, D] of its own rows)."""
  k = ids_TK.shape[1]
  rows, dim = table_RD.shape
  shard = jax.lax.axis_index(axes)
  step = chunk * k
  count = count_1[0]
  scale_T = weights_T * g / temperature

  def body(i, carry):
    d_user_TD, d_table_RD = carry
    entry_C = jax.lax.dynamic_slice_in_dim(entry_E, i * step, step)
    valid_C = i * step + jnp.arange(step) < count
    logit_C, token_C, row_C, item_CD, norm_C, is_pos_C = _score(
        user_TD, table_RD, ids_TK, entry_C, valid_C, shard, rows, temperature, normalize)
    # d loss / d logit = softmax - onehot(positive), through the token weight and 1/temperature.
    d_logit_C = jnp.where(valid_C, (jnp.exp(logit_C - lse_T[token_C]) - is_pos_C) * scale_T[token_C], 0.0)
    d_user_TD = d_user_TD + jax.ops.segment_sum(d_logit_C[:, None] * item_CD, token_C, user_TD.shape[0],
                                                indices_are_sorted=True)
    d_item_CD = d_logit_C[:, None] * user_TD[token_C]
    if normalize:   # through item = raw / max(|raw|, eps): (d - item (item . d)) / |raw|, or d / eps
      along_CD = item_CD * jnp.sum(item_CD * d_item_CD, axis=-1, keepdims=True)
      d_item_CD = jnp.where((norm_C > NORM_EPS)[:, None], d_item_CD - along_CD, d_item_CD) / norm_C[:, None]
    return d_user_TD, d_table_RD + jax.ops.segment_sum(d_item_CD, row_C, rows)

  init = jax.lax.pcast((jnp.zeros_like(user_TD), jnp.zeros((rows, dim), table_RD.dtype)), axes, to="varying")
  d_user_TD, d_table_RD = jax.lax.fori_loop(0, (count + step - 1) // step, body, init)
  return jax.lax.psum(d_user_TD, axes), d_table_RD


@functools.lru_cache(maxsize=None)
def _sharded_sum(mesh: Mesh, axes: tuple[str, ...], temperature: float, chunk: int, normalize: bool):
  """sum_t w_t * loss_t as a custom_vjp over two shard_maps (forward, backward) for this layout."""
  spec = _spec(axes)
  kw = dict(axes=axes, temperature=temperature, chunk=chunk, normalize=normalize)
  table_spec = P(spec, None)
  per_device = P(spec)   # each device's own entries, stacked: [S * E] and [S]
  fwd_map = jax.shard_map(functools.partial(_forward_local, **kw), mesh=mesh,
                          in_specs=(P(), table_spec, P(), P()), out_specs=(P(), P(), per_device, per_device))
  bwd_map = jax.shard_map(functools.partial(_backward_local, **kw), mesh=mesh,
                          in_specs=(P(), table_spec, P(), P(), P(), per_device, per_device, P()),
                          out_specs=(P(), table_spec))

  @jax.custom_vjp
  def total(user_TD, table_VD, ids_TK, weights_T):
    return fwd_map(user_TD, table_VD, ids_TK, weights_T)[0]

  def fwd(user_TD, table_VD, ids_TK, weights_T):
    value, lse_T, entry, count = fwd_map(user_TD, table_VD, ids_TK, weights_T)
    return value, (user_TD, table_VD, ids_TK, weights_T, lse_T, entry, count)

  def bwd(residuals, g):
    d_user_TD, d_table_VD = bwd_map(*residuals, g)
    return d_user_TD, d_table_VD, None, None

  total.defvjp(fwd, bwd)
  return total


def sampled_softmax_loss_sharded(user_emb_TD: jax.Array, item_table_VD: jax.Array, ids_TK: jax.Array,
                                 weights_T: jax.Array, *, mesh: Mesh, axes: tuple[str, ...], temperature: float,
                                 chunk: int = 128, normalize: bool = True) -> jax.Array:
  """Weighted mean sampled-softmax loss with the table row-sharded over `axes` of `mesh`.

  Args:
    user_emb_TD: [T, D] user vectors (replicated into the shard_map; normalised here if `normalize`).
    item_table_VD: [V, D] the item table, rows split over `axes` (V divisible by their size).
    ids_TK: [T, K] candidate ids, column 0 the positive, then the negatives.
    weights_T: [T] token weights.
    chunk: tokens' worth of entries (chunk * K) scored per loop step on a device.
    normalize: cosine logits (users and the rows read L2-normalised).
  Returns:
    scalar: sum_t w_t * loss_t / max(sum_t w_t, 1), replicated. Call under `jax.jit`.
  """
  if user_emb_TD.ndim != 2 or ids_TK.ndim != 2 or ids_TK.shape[0] != user_emb_TD.shape[0]:
    raise ValueError(f"expected user_emb [T, D] and ids [T, K], got {user_emb_TD.shape} and {ids_TK.shape}")
  if item_table_VD.ndim != 2 or item_table_VD.shape[1] != user_emb_TD.shape[1]:
    raise ValueError(f"item table must be [V, {user_emb_TD.shape[1]}], got {item_table_VD.shape}")
  unknown = [a for a in axes if a not in mesh.shape]
  if not axes or unknown:
    raise ValueError(f"axes {tuple(axes)} must name mesh axes {tuple(mesh.shape)}")
  shards = math.prod(mesh.shape[a] for a in axes)
  if item_table_VD.shape[0] % shards:
    raise ValueError(f"item table rows {item_table_VD.shape[0]} do not divide over axes {tuple(axes)} "
                     f"({shards} shards)")
  if normalize:
    user_emb_TD = user_emb_TD / jnp.maximum(jnp.linalg.norm(user_emb_TD, axis=-1, keepdims=True), NORM_EPS)
  ids_TK = jnp.clip(ids_TK.astype(jnp.int32), 0, item_table_VD.shape[0] - 1)
  weights_T = weights_T.astype(user_emb_TD.dtype)
  total = _sharded_sum(mesh, tuple(axes), float(temperature), max(1, int(chunk)), bool(normalize))(
      user_emb_TD, item_table_VD, ids_TK, weights_T)
  return total / jnp.maximum(jnp.sum(weights_T), 1.0)
