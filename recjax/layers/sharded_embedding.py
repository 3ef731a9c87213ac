"""Lookups in a row-sharded embedding table: the SPMD gather and a `shard_map` all-to-all.

The table `[V, D]` is split by rows over mesh axes `axes` (shard s holds rows
[s * V/S, (s + 1) * V/S)); the ids are split over the same axes. Two ways to fetch `table[ids]`:

- `lookup_spmd`: `jnp.take` with sharding constraints; GSPMD partitions the gather (each shard
  gathers the ids it owns, zeros elsewhere, and the partial rows are summed across shards). It is
  what the sharded train step runs when a model indexes its row-sharded table.
- `lookup_all_to_all`: each device sends every id to the shard that owns its row (one all-to-all
  of ids), the owners gather locally, and a second all-to-all returns the rows. The buckets have a
  fixed capacity of n (the local id count), so no id is ever dropped, at the price of S x the ideal
  traffic when ids are spread evenly.

`lookup_reference` is the plain `jnp.take`; tests check both against it, values and gradients.
`row_axes` is the rule that picks the mesh axes a table's rows are split over (the trainer's
placement, `train/mesh.py`, and the row-sharded sampled softmax, `recjax/sharded_losses.py`, both
read it, so a table is laid out where the loss expects it).
"""
from __future__ import annotations

import functools
import math
from typing import Mapping

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def row_axes(axis_sizes: Mapping[str, int], num_rows: int) -> tuple[str, ...] | None:
  """The mesh axes ({name: size}, in mesh order) a table of `num_rows` rows is split over: all
  axes, else `data`, else any other single axis, whichever first divides the rows (None: the
  table stays replicated)."""
  names = tuple(axis_sizes)
  candidates = [names] + [("data",)] * ("data" in names) + [(a,) for a in names if a != "data"]
  for axes in candidates:
    size = math.prod(axis_sizes[a] for a in axes)
    if size > 1 and num_rows % size == 0:
      return axes
  return None


def _axes_size(mesh: Mesh, axes: tuple[str, ...]) -> int:
  return math.prod(mesh.shape[a] for a in axes)


def _check(table_VD: jax.Array, ids: jax.Array, mesh: Mesh, axes: tuple[str, ...]) -> int:
  if table_VD.ndim != 2:
    raise ValueError(f"table must be [V, D], got shape {table_VD.shape}")
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"ids must be integers, got {ids.dtype}")
  unknown = [a for a in axes if a not in mesh.shape]
  if unknown:
    raise ValueError(f"axes {unknown} are not mesh axes {tuple(mesh.shape)}")
  s = _axes_size(mesh, axes)
  if table_VD.shape[0] % s:
    raise ValueError(f"table rows {table_VD.shape[0]} do not divide over axes {axes} ({s} shards)")
  return s


def _spec(axes: tuple[str, ...]):
  return axes if len(axes) != 1 else axes[0]


def lookup_reference(table_VD: jax.Array, ids: jax.Array) -> jax.Array:
  """table[ids] -> [*ids.shape, D]."""
  return jnp.take(table_VD, ids, axis=0)


def lookup_spmd(table_VD: jax.Array, ids: jax.Array, mesh: Mesh, axes: tuple[str, ...] = ("data",)
                ) -> jax.Array:
  """table[ids] with the table row-sharded and the ids' leading axis sharded over `axes`; GSPMD
  partitions the gather. Call under `jax.jit`."""
  _check(table_VD, ids, mesh, axes)
  table_VD = jax.lax.with_sharding_constraint(table_VD, NamedSharding(mesh, P(_spec(axes), None)))
  lead = P(_spec(axes)) if ids.ndim and ids.shape[0] % _axes_size(mesh, axes) == 0 else P()
  ids = jax.lax.with_sharding_constraint(ids, NamedSharding(mesh, lead))
  out = jnp.take(table_VD, ids, axis=0)
  return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P(*lead, *([None] * (out.ndim - len(lead))))))


def lookup_all_to_all(table_VD: jax.Array, ids: jax.Array, mesh: Mesh, axes: tuple[str, ...] = ("data",)
                      ) -> jax.Array:
  """table[ids] by two all-to-alls over `axes` (ids to their rows' owners, rows back).

  The ids are flattened and padded (with id 0) to a multiple of the shard count, so any shape
  works; ids outside [0, V) are clamped like `jnp.take`'s default for gathers under jit."""
  num_shards = _check(table_VD, ids, mesh, axes)
  shape = ids.shape
  flat = jnp.clip(ids.reshape(-1).astype(jnp.int32), 0, table_VD.shape[0] - 1)
  pad = (-flat.shape[0]) % num_shards
  flat = jnp.pad(flat, (0, pad))
  rows_per_shard = table_VD.shape[0] // num_shards
  spec = _spec(axes)

  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P(spec, None), P(spec)), out_specs=P(spec, None))
  def local(table_RD, ids_n):
    n = ids_n.shape[0]
    owner_n = ids_n // rows_per_shard
    # Slot of each id in its owner's bucket: its rank among the local ids with the same owner
    # (a stable sort by owner; O(n log n), no [n, n] comparison).
    order_n = jnp.argsort(owner_n, stable=True)
    counts_S = jnp.bincount(owner_n, length=num_shards)
    starts_S = jnp.cumsum(counts_S) - counts_S
    slot_n = jnp.zeros_like(ids_n).at[order_n].set(jnp.arange(n, dtype=jnp.int32) - starts_S[owner_n[order_n]])
    send_Sn = jnp.full((num_shards, n), -1, jnp.int32).at[owner_n, slot_n].set(ids_n % rows_per_shard)
    recv_Sn = jax.lax.all_to_all(send_Sn, axes, 0, 0, tiled=True)         # requests from each shard
    rows_SnD = jnp.where((recv_Sn >= 0)[..., None], table_RD[jnp.maximum(recv_Sn, 0)], 0)
    back_SnD = jax.lax.all_to_all(rows_SnD, axes, 0, 0, tiled=True)       # answers, by owner
    return back_SnD[owner_n, slot_n]

  out = local(table_VD, flat)
  return out[:flat.shape[0] - pad].reshape(*shape, table_VD.shape[1])
