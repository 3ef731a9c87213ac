"""Mixture of Wukong Experts (papers.md §1.8; Wukong, arXiv 2403.02545), with rank-aware decomposition.

Expert e maps tokens Z [n, D] to t_e = n_out / E output tokens:
    FMB:  MLP(vec(Z Zᵀ))  -> [t_e, D]      (dot-product interaction of every token pair + MLP)
    LCB:  L_e Z            -> [t_e, D]      (linear compression over the token axis)
    out_e = FMB + LCB
and the mixture concatenates the experts' tokens, then layer-norms each: the output tokens are
partitioned across experts (our reading of "X_global is partitioned across M experts": each
expert sees every token and owns a slice of the output, which is what expert parallelism shards).

Rank-aware decomposition (papers.md §6c). When Z = [C ; X_n] with C [n_c, D] the request's
context tokens (shared by its N candidates) and X_n [n_x, D] candidate n's tokens, the only
non-linear-in-Z step before the MLP's first activation is bilinear, so the first pre-activation
splits exactly into
    Σ_{i,j∈C} W1[i,j] <c_i, c_j>                 once per request
  + Σ_{j∈X} <A_j, x_j>,  A_j = Σ_{i∈C} (W1[i,j] + W1[j,i]) c_i      A once per request
  + Σ_{i,j∈X} W1[i,j] <x_i, x_j>                 per candidate, O(n_x² D)
and LCB into L[:, C] C (once) + L[:, X] X_n (per candidate). Per candidate the cost drops from
O(n² (D + hidden)) to O(n_x · hidden · D); `decomposed=True` computes the same numbers this way.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from recjax.layers.norms import layer_norm_no_affine


class MixtureOfWukongExperts(nn.Module):
  """Tokens -> n_out tokens. Call as (z_BND) or (c_BCD, x_BNXD[, decomposed]) for candidates."""
  n_out: int
  num_experts: int
  hidden: int

  @nn.compact
  def __call__(self, c_BCD: jax.Array, x_BNXD: jax.Array | None = None, *,
               decomposed: bool = False) -> jax.Array:
    """Returns [B, n_out, D] for tokens alone, [B, N, n_out, D] with candidate tokens."""
    if self.n_out % self.num_experts:
      raise ValueError(f"n_out={self.n_out} must be divisible by num_experts={self.num_experts}")
    e, t, hid = self.num_experts, self.n_out // self.num_experts, self.hidden
    _, nc, d = c_BCD.shape
    if x_BNXD is not None and (x_BNXD.ndim != 4 or x_BNXD.shape[0] != c_BCD.shape[0]
                               or x_BNXD.shape[3] != d):
      raise ValueError(f"candidate tokens must be [B, N, n_x, D] = [{c_BCD.shape[0]}, N, n_x, {d}], "
                       f"got {x_BNXD.shape}")
    n = nc + (0 if x_BNXD is None else x_BNXD.shape[2])
    w1_EIJH = self.param("fm_w1", nn.initializers.normal(1.0 / n), (e, n, n, hid))
    b1_EH = self.param("fm_b1", nn.initializers.zeros, (e, hid))
    w2_EHK = self.param("fm_w2", nn.initializers.normal(1.0 / math.sqrt(hid)), (e, hid, t * d))
    l_ETI = self.param("lcb", nn.initializers.normal(1.0 / math.sqrt(n)), (e, t, n))

    def finish(pre_EH, lcb_ETD):   # [..., E, H], [..., E, T, D] -> [..., n_out, D]
      fmb = jnp.einsum("...eh,ehk->...ek", nn.gelu(pre_EH), w2_EHK)
      out = fmb.reshape(fmb.shape[:-1] + (t, d)) + lcb_ETD
      return layer_norm_no_affine(out.reshape(out.shape[:-3] + (e * t, d)))

    if x_BNXD is not None and not decomposed:   # the plain form: every candidate's full Z
      n_cand = x_BNXD.shape[1]
      c_BCD = jnp.concatenate([jnp.broadcast_to(c_BCD[:, None], (c_BCD.shape[0], n_cand, nc, d)),
                               x_BNXD], axis=2)
    if x_BNXD is None or not decomposed:
      g = jnp.einsum("...id,...jd->...ij", c_BCD, c_BCD)
      pre = jnp.einsum("...ij,eijh->...eh", g, w1_EIJH) + b1_EH
      return finish(pre, jnp.einsum("...id,eti->...etd", c_BCD, l_ETI))

    # Once per request: the context-context block, A, and the context part of LCB.
    w_cc, w_cx, w_xc, w_xx = (w1_EIJH[:, :nc, :nc], w1_EIJH[:, :nc, nc:], w1_EIJH[:, nc:, :nc],
                              w1_EIJH[:, nc:, nc:])
    pre_cc_BEH = jnp.einsum("bij,eijh->beh", jnp.einsum("bid,bjd->bij", c_BCD, c_BCD), w_cc) + b1_EH
    a_BEJHD = jnp.einsum("bid,eijh->bejhd", c_BCD, w_cx + jnp.swapaxes(w_xc, 1, 2))
    lcb_c_BETD = jnp.einsum("bid,eti->betd", c_BCD, l_ETI[:, :, :nc])
    # Per candidate: only terms that touch its own n_x tokens.
    pre_BNEH = (pre_cc_BEH[:, None] + jnp.einsum("bejhd,bnjd->bneh", a_BEJHD, x_BNXD)
                + jnp.einsum("bnij,eijh->bneh", jnp.einsum("bnid,bnjd->bnij", x_BNXD, x_BNXD), w_xx))
    lcb_BNETD = lcb_c_BETD[:, None] + jnp.einsum("bnid,eti->bnetd", x_BNXD, l_ETI[:, :, nc:])
    return finish(pre_BNEH, lcb_BNETD)
