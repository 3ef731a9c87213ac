"""The catalogue's SIDs as a prefix trie in dense arrays, for constrained decoding.

Nodes at depth l are the distinct SID prefixes of length l, numbered in lexicographic order
(depth 0: the root, node 0). `next_node[l]` is int32 [nodes at depth l, K]: the child reached by
code k, or -1 when no catalogue item lies below (so `next_node[l] >= 0` is the allowed-next-code
mask). Depth-L nodes (leaves) are the distinct full SIDs, numbered as the collision groups of
`collisions.collision_groups`, and each leaf lists its items (CSR), so a decoded leaf always maps
to real catalogue items.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from recjax.semantic_ids.codes import group_ids, validate_codes


@dataclasses.dataclass(frozen=True)
class SIDTrie:
  codebook_size: int                 # K
  next_node: tuple[np.ndarray, ...]  # L arrays, int32 [nodes_l, K]; -1 = no item below
  sids: np.ndarray                   # int64 [G, L] the SID of each leaf
  leaf_offsets: np.ndarray           # int64 [G + 1] leaf g holds leaf_items[leaf_offsets[g]:leaf_offsets[g+1]]
  leaf_items: np.ndarray             # int64 [N] item ids, grouped by leaf

  @property
  def num_levels(self) -> int:
    return len(self.next_node)

  @property
  def num_leaves(self) -> int:
    return len(self.sids)

  @property
  def leaf_size(self) -> np.ndarray:
    return np.diff(self.leaf_offsets)

  def items_of(self, leaf: int) -> np.ndarray:
    return self.leaf_items[self.leaf_offsets[leaf]:self.leaf_offsets[leaf + 1]]

  def items_of_groups(self, groups) -> np.ndarray:
    """Items of each decoded leaf: int64 [..., max leaf size], -1 padded; a group -1 (empty beam)
    gives a row of -1. Every item sharing the SID is listed (a collision group of g items fills g
    slots), for collision-aware metrics (`metrics.collisions`)."""
    g = np.asarray(groups, np.int64)
    if np.any(g >= self.num_leaves) or np.any(g < -1):
      raise ValueError(f"items_of_groups: groups must lie in -1..{self.num_leaves - 1}")
    width = int(self.leaf_size.max())
    live = g >= 0
    start = self.leaf_offsets[np.where(live, g, 0)]
    size = np.where(live, self.leaf_size[np.where(live, g, 0)], 0)
    slot = np.arange(width)
    ok = slot < size[..., None]
    return np.where(ok, self.leaf_items[np.where(ok, start[..., None] + slot, 0)], -1)

  def allowed(self, level: int) -> np.ndarray:
    """bool [nodes_level, K]: which codes may follow each prefix node."""
    return self.next_node[level] >= 0

  def device_arrays(self) -> tuple[jnp.ndarray, ...]:
    """The per-level child tables as device arrays (the argument beam search takes)."""
    return tuple(jnp.asarray(a) for a in self.next_node)


def build_trie(codes_NL, codebook_size: int, item_ids=None) -> SIDTrie:
  """Trie of a SID table [N, L]; `item_ids` [N] names the rows (default 0..N-1)."""
  codes = validate_codes(codes_NL, codebook_size)
  n, num_levels = codes.shape
  ids = np.arange(n, dtype=np.int64) if item_ids is None else np.asarray(item_ids, np.int64)
  if ids.shape != (n,):
    raise ValueError(f"build_trie: item_ids has shape {ids.shape}, codes have {n} rows")
  next_node, parent_id = [], np.zeros(n, np.int64)   # parent_id: each item's node at the current depth
  for l in range(num_levels):
    child_id, _ = group_ids(codes[:, :l + 1])
    table = np.full((parent_id.max() + 1, codebook_size), -1, np.int32)
    table[parent_id, codes[:, l]] = child_id
    next_node.append(table)
    parent_id = child_id
  order = np.argsort(parent_id, kind="stable")
  counts = np.bincount(parent_id)
  _, sids = group_ids(codes)
  return SIDTrie(codebook_size, tuple(next_node), sids, np.r_[0, np.cumsum(counts)].astype(np.int64), ids[order])
