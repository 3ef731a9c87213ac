"""MaskSpec semantics, dense masks and the block metadata the kernels use."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pallas_kernels.mask import (EMPTY, FULL, PARTIAL, MaskSpec,
                                 block_metadata, dense_mask)


def _brute_force(spec: MaskSpec, n: int, T: int, L: int) -> np.ndarray:
  """The MaskSpec docstring, one pair at a time (self-attention)."""
  h = n - min(T, n)
  out = np.zeros((L, L), bool)
  for i, j in itertools.product(range(n), range(n)):
    if T and i >= h:
      ok = j < h or j == i
    else:
      ok = not (T and j >= h)
      if ok:
        vis = j <= i if spec.causal else True
        if spec.local_window is not None:
          d = i - j if spec.causal else abs(i - j)
          win = d < spec.local_window or (
              bool(spec.global_prefix) and j < spec.global_prefix)
          vis = vis and win
        vis = vis or j < spec.contextual_prefix
        ok = vis
    out[i, j] = ok
  return out


SPECS = [
    MaskSpec(),
    MaskSpec(causal=False),
    MaskSpec(local_window=5),
    MaskSpec(local_window=5, global_prefix=3),
    MaskSpec(causal=False, local_window=4),
    MaskSpec(causal=False, local_window=4, global_prefix=2),
    MaskSpec(contextual_prefix=3),
    MaskSpec(local_window=4, global_prefix=2, contextual_prefix=3),
    MaskSpec(num_targets=3),
    MaskSpec(local_window=4, global_prefix=2, num_targets=2),
    MaskSpec(local_window=3, contextual_prefix=2, num_targets=4),
    MaskSpec(causal=False, num_targets=2),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_dense_mask_matches_definition(spec: MaskSpec):
  L = 13
  lengths = np.array([0, 1, 7, 13])
  targets = np.array([0, 3, 2, 5]) if spec.num_targets else None
  got = np.asarray(dense_mask(spec, lengths, L, L, num_targets=targets))
  for b, n in enumerate(lengths):
    T = 0 if targets is None else targets[b]
    np.testing.assert_array_equal(got[b], _brute_force(spec, n, T, L),
                                  err_msg=f"b={b} n={n} T={T}")


def test_dense_mask_cross_attention_lengths():
  m = np.asarray(dense_mask(MaskSpec(causal=False), np.array([2, 0]), 3, 5,
                            kv_lengths=np.array([4, 5])))
  assert m.shape == (2, 3, 5)
  assert m[0, :2, :4].all() and not m[0, 2:].any() and not m[0, :, 4:].any()
  assert not m[1].any()


def test_positional_mask_needs_self_attention():
  with pytest.raises(ValueError, match="self-attention"):
    dense_mask(MaskSpec(causal=True), None, 4, 8)


@pytest.mark.parametrize("bad", [dict(local_window=0), dict(global_prefix=-1),
                                 dict(contextual_prefix=-2),
                                 dict(num_targets=-1)])
def test_mask_spec_validation(bad):
  with pytest.raises(ValueError):
    MaskSpec(**bad)


def _check_ranges(meta, tight: bool):
  nonempty = meta.tiles != EMPTY
  for transpose in (False, True):
    visited = meta.visited(transpose=transpose)
    # Every tile holding a visible pair is visited ...
    assert not (nonempty & ~visited).any(), (transpose, nonempty, visited)
    if tight:
      # ... and, for these specs, no fully masked tile is.
      np.testing.assert_array_equal(visited, nonempty)
  # The two intervals per block are ordered and disjoint.
  for ranges in (meta.kv_ranges, meta.q_ranges):
    lo0, hi0, lo1, hi1 = (ranges[..., 0, 0], ranges[..., 0, 1],
                          ranges[..., 1, 0], ranges[..., 1, 1])
    assert (lo0 <= hi0).all() and (hi0 <= lo1).all() and (lo1 <= hi1).all()


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("blocks", [(4, 4), (8, 4), (4, 8)])
def test_block_ranges_cover_mask(spec: MaskSpec, blocks):
  rng = np.random.default_rng(0)
  L = 37
  lengths = np.array([0, 1, 16, 23, 37])
  targets = (rng.integers(0, 6, size=lengths.shape)
             if spec.num_targets else None)
  meta = block_metadata(spec, L, L, *blocks, lengths=lengths,
                        num_targets=targets)
  _check_ranges(meta, tight=False)


@pytest.mark.parametrize("spec", [
    MaskSpec(), MaskSpec(causal=False), MaskSpec(local_window=64),
    MaskSpec(local_window=64, global_prefix=16),
    MaskSpec(causal=False, local_window=40)], ids=str)
def test_block_ranges_are_tight(spec: MaskSpec):
  meta = block_metadata(spec, 256, 256, 32, 32)
  _check_ranges(meta, tight=True)


def test_block_metadata_kinds_and_density():
  meta = block_metadata(MaskSpec(), 64, 64, 16, 16)
  kinds = meta.tiles[0]
  assert (np.diag(kinds) == PARTIAL).all()
  assert (kinds[np.tril_indices(4, -1)] == FULL).all()
  assert (kinds[np.triu_indices(4, 1)] == EMPTY).all()
  assert meta.density == pytest.approx(10 / 16)
  # Semi-local attention visits O(L * (K1 + K2)) tiles, not O(L^2).
  sla = block_metadata(MaskSpec(local_window=64, global_prefix=32), 1024,
                       1024, 64, 64)
  assert sla.density < 0.2
