"""DIN: Deep Interest Network (Zhou et al., KDD 2018) on the ranking inputs: a baseline for HSTU.

Target attention: for candidate k and history token h_j, the local activation unit scores
    a_kj = MLP([h_j, e_k, h_j − e_k, h_j ⊙ e_k])        (no softmax, as in the paper)
and the user interest for k is Σ_j a_kj h_j over the real history. [interest, e_k, the candidate
token, the mean history, the user features] -> MLP -> one logit per task.

The activation unit is an MLP over (key, query) pairs, not a q·k product, so it is computed here
rather than by `layers/attention.py` (whose kernels are q·k attention).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs, ranking_head


class DIN(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 64
  attention_dims: tuple[int, ...] = (64, 32)
  mlp_dims: tuple[int, ...] = (256, 128)
  dropout: float = 0.1
  watch_head: bool = False
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    c = batch["cand_ids"].shape[1]
    inputs = RankingInputs(self.num_items, self.dim, self.num_tasks, self.user_vocab, self.item_vocab,
                           self.num_tabs, self.num_watch_buckets, name="inputs")
    hist_NHD, valid_NH = inputs.history(batch)
    n, h, d = hist_NHD.shape
    query_NCD = inputs.candidates(batch)
    keys = jnp.broadcast_to(hist_NHD[:, None], (n, c, h, d))
    q = jnp.broadcast_to(query_NCD[:, :, None], (n, c, h, d))
    a = jnp.concatenate([keys, q, keys - q, keys * q], axis=-1)
    for i, width in enumerate(self.attention_dims):
      # Sigmoid as in the authors' released code (the paper's figure names PReLU / Dice).
      a = nn.sigmoid(nn.Dense(width, name=f"activation_unit_{i}")(a))
    w_NCH = nn.Dense(1, name="activation_unit_out")(a)[..., 0] * valid_NH[:, None, :]
    interest_NCD = jnp.einsum("nch,nhd->ncd", w_NCH, hist_NHD)
    count = jnp.maximum(valid_NH.sum(1, keepdims=True), 1).astype(hist_NHD.dtype)
    hist_mean = jnp.broadcast_to((hist_NHD.sum(1) / count)[:, None], (n, c, d))
    user_NFD = inputs.user(batch)
    user = jnp.broadcast_to(user_NFD.reshape(n, 1, -1), (n, c, user_NFD.shape[1] * d))
    z = jnp.concatenate([interest_NCD, query_NCD, inputs.candidate_items(batch), hist_mean, user], axis=-1)
    logits, watch = ranking_head(z, mlp_dims=self.mlp_dims, dropout=self.dropout, num_tasks=self.num_tasks,
                                 watch_head=self.watch_head, train=train)
    return {"logits": logits, "watch_ratio": watch}
