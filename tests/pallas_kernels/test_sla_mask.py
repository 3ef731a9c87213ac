"""The ULTRA-HSTU semi-local attention mask on the layout [context | history | candidates].

The definition (papers.md §2.2, written here one (i, j) pair at a time, independently of
`mask.py`): a sequence of n valid tokens holds C context tokens, then history, then T candidates
at [h, n), h = n - T.
  * context keys j < C are visible from every row;
  * a history or context row i < h sees key j iff j <= i and (i - j < K1 or j < K2), history only;
  * a candidate row i >= h sees every history key j < h (context included) and itself, never
    another candidate (M-FALCON target isolation; TorchEasyRec's SLA mask);
  * padding (i >= n or j >= n) sees and is seen by nothing.
Random (K1, K2, C, T, lengths) are checked against `dense_mask` (the XLA path), the blocked XLA
path and the Pallas kernel (interpret mode on CPU), the last two by reading the mask off the
attention output: q = k = e_0, identity activation and one-hot values give out[i, j] = M[i, j].
"""
from __future__ import annotations

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from pallas_kernels.mask import MaskSpec, dense_mask
from recjax.layers.attention import attention
from recjax.layers.sla import SLABlocking


def sla_definition(n: int, L: int, K1: int, K2: int, C: int, T: int) -> np.ndarray:
  h = n - min(T, n)
  out = np.zeros((L, L), bool)
  for i in range(n):
    for j in range(n):
      if i >= h:
        out[i, j] = j < h or j == i
      elif j >= h:
        out[i, j] = False
      elif j < C:
        out[i, j] = True
      else:
        out[i, j] = j <= i and (i - j < K1 or j < K2)
  return out


def random_cases(seed: int, count: int, L: int):
  rng = np.random.default_rng(seed)
  for _ in range(count):
    K1 = int(rng.integers(1, L + 2))
    K2 = int(rng.integers(0, L // 2))
    C = int(rng.integers(0, 6))
    T = int(rng.integers(0, 6))
    lengths = np.concatenate([[0, 1, L], rng.integers(0, L + 1, size=2)])
    spec = MaskSpec(local_window=K1, global_prefix=K2, contextual_prefix=C, num_targets=T)
    yield spec, lengths


def _expected(spec: MaskSpec, lengths, L: int) -> np.ndarray:
  return np.stack([sla_definition(int(n), L, spec.local_window, spec.global_prefix or 0,
                                  spec.contextual_prefix, spec.num_targets) for n in lengths])


def test_dense_mask_equals_definition_random():
  L = 23
  for spec, lengths in random_cases(0, 40, L):
    np.testing.assert_array_equal(np.asarray(dense_mask(spec, lengths, L, L)),
                                  _expected(spec, lengths, L), err_msg=str(spec))


def test_paper_antidiagonal_form_matches_with_inclusive_bounds():
  """The paper's mask (reversed row i' = L - i): L - K1 <= i' + j <= L, or j <= K2 and j <= L - i'.
  Its bounds are inclusive, so it equals our (K1 + 1, K2 + 1): we count K1 keys including the
  diagonal and K2 global columns, as TorchEasyRec's port does."""
  L = 19
  for K1 in (1, 3, 7):
    for K2 in (0, 2, 5):
      i_rev = L - np.arange(L)[:, None]
      j = np.arange(L)[None, :]
      paper = ((L - K1 <= i_rev + j) & (i_rev + j <= L)) | ((j <= K2) & (j <= L - i_rev))
      ours = np.asarray(dense_mask(MaskSpec(local_window=K1 + 1, global_prefix=K2 + 1), None, L, L))[0]
      np.testing.assert_array_equal(ours, paper, err_msg=f"K1={K1} K2={K2}")


def _mask_from_attention(spec, lengths, L, **kw):
  """out[b, i, j] = M[b, i, j] for q = k = e_0, identity weights and one-hot values."""
  B = len(lengths)
  q = jnp.zeros((B, L, 1, 8)).at[..., 0].set(1.0)
  v = jnp.broadcast_to(jnp.eye(L)[None, :, None, :], (B, L, 1, L))
  # One compiled program per case: eager dispatch of the blocked graph is far slower.
  run = jax.jit(lambda q, v, lens: attention(q, q, v, lengths_B=lens, mask=spec, kind="pointwise",
                                             activation="identity", **kw))
  return np.asarray(run(q, v, jnp.asarray(lengths, jnp.int32))[:, :, 0, :])


def test_blocked_xla_path_realises_the_definition():
  L = 29
  for spec, lengths in random_cases(1, 6, L):
    for block in (4, 16):
      got = _mask_from_attention(spec, lengths, L, sla=SLABlocking(block))
      np.testing.assert_array_equal(got, _expected(spec, lengths, L).astype(np.float32),
                                    err_msg=f"{spec} block={block}")


@pytest.mark.parametrize("seed", [2, 3])
def test_pallas_kernel_realises_the_definition(seed):
  # Interpret mode on CPU is slow: a few random cases at L = 40 (three 16-row tiles).
  L = 40
  for spec, lengths in random_cases(seed, 2, L):
    got = _mask_from_attention(spec, lengths, L, backend="pallas")
    np.testing.assert_array_equal(got, _expected(spec, lengths, L).astype(np.float32), err_msg=str(spec))
