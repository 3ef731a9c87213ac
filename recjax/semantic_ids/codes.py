"""Semantic-ID code arrays: validation, per-level codebook usage (the collapse diagnostic), and
depth-truncated (coarse) SIDs.

A SID table is `codes_NL` int [N, L]: item n's code at level l lies in 0..K-1. Level 0 is the
coarsest. Every function here is numpy (the tables are small and built once).
"""
from __future__ import annotations

import dataclasses

import numpy as np


def validate_codes(codes_NL, codebook_size: int, name: str = "codes") -> np.ndarray:
  """codes as int64 [N, L] after checking shape and range; raises ValueError naming the problem."""
  codes = np.asarray(codes_NL)
  if codes.ndim != 2:
    raise ValueError(f"{name}: expected [N, L] codes, got shape {codes.shape}")
  if codes.shape[0] == 0 or codes.shape[1] == 0:
    raise ValueError(f"{name}: empty code table {codes.shape}")
  if not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"{name}: codes must be integers, got {codes.dtype}")
  bad = (codes < 0) | (codes >= codebook_size)
  if bad.any():
    n, l = np.argwhere(bad)[0]
    raise ValueError(f"{name}: row {n} level {l} has code {codes[n, l]}, outside 0..{codebook_size - 1}")
  return codes.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class LevelUsage:
  """Codebook usage at one level. Perplexity = exp(entropy of the code histogram): K for a
  perfectly uniform codebook, 1 when every item takes the same code (collapse)."""
  level: int
  used: int                # codes taken by at least one item
  utilisation: float       # used / K
  perplexity: float
  max_load: float          # share of items on the most frequent code


def codebook_usage(codes_NL, codebook_size: int) -> list[LevelUsage]:
  """Per-level utilisation and perplexity of a SID table [N, L]."""
  codes = validate_codes(codes_NL, codebook_size)
  out = []
  for l in range(codes.shape[1]):
    counts = np.bincount(codes[:, l], minlength=codebook_size)
    p = counts[counts > 0] / codes.shape[0]
    out.append(LevelUsage(level=l, used=int(np.sum(counts > 0)),
                          utilisation=float(np.sum(counts > 0) / codebook_size),
                          perplexity=float(np.exp(-np.sum(p * np.log(p)))),
                          max_load=float(counts.max() / codes.shape[0])))
  return out


def truncate(codes_NL, depth: int) -> np.ndarray:
  """Depth-truncated (coarse) SIDs: the first `depth` levels -> [N, depth]."""
  codes = np.asarray(codes_NL)
  if not 1 <= depth <= codes.shape[1]:
    raise ValueError(f"depth must lie in 1..{codes.shape[1]}, got {depth}")
  return codes[:, :depth]


def group_ids(codes_NL) -> tuple[np.ndarray, np.ndarray]:
  """Items sharing a full SID share a group -> (group_of_item [N] int64, unique SIDs [G, L]).

  Groups are numbered in lexicographic order of their SID (np.unique over rows).
  """
  codes = np.asarray(codes_NL)
  unique, inverse = np.unique(codes, axis=0, return_inverse=True)
  return inverse.reshape(-1).astype(np.int64), unique
