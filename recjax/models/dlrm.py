"""DLRM-style ranker (Naumov et al., 2019) on the ranking inputs: a baseline for HSTU.

Per candidate, a set of D-vectors: the user's feature embeddings, the mean of the history tokens
(item + action + watch + tab), the candidate token and its item embedding. Their pairwise dot
products (DLRM's interaction layer, upper triangle) are joined with the mean history and the
candidate token and fed to an MLP with one logit per task. The history enters only as a mean, so
order and recency are invisible to it (that is the point of the baseline).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs, ranking_head


class DLRM(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 64
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
    hist_x, valid = inputs.history(batch)
    count = jnp.maximum(valid.sum(1, keepdims=True), 1).astype(hist_x.dtype)
    hist_mean_ND = hist_x.sum(1) / count
    user_NFD = inputs.user(batch)
    n, fu, d = user_NFD.shape
    cand_NCD = inputs.candidates(batch)
    vecs = jnp.concatenate([jnp.broadcast_to(user_NFD[:, None], (n, c, fu, d)),
                            jnp.broadcast_to(hist_mean_ND[:, None, None], (n, c, 1, d)),
                            cand_NCD[:, :, None], inputs.candidate_items(batch)[:, :, None]], axis=2)
    dots = jnp.einsum("ncfd,ncgd->ncfg", vecs, vecs)
    iu, ju = np.triu_indices(vecs.shape[2], k=1)
    z = jnp.concatenate([dots[..., iu, ju], jnp.broadcast_to(hist_mean_ND[:, None], (n, c, d)), cand_NCD],
                        axis=-1)
    logits, watch = ranking_head(z, mlp_dims=self.mlp_dims, dropout=self.dropout, num_tasks=self.num_tasks,
                                 watch_head=self.watch_head, train=train)
    return {"logits": logits, "watch_ratio": watch}
