"""DCNv2 (Wang et al., WWW 2021) on the ranking inputs: a baseline for Kunlun (issue 20).

Per candidate, one flat vector x_0 = [user feature embeddings (Fu x D, concatenated), the mean of
the history tokens, the candidate token, its item embedding] ([F] = (Fu + 3) D); the cross network
(`recjax/layers/cross.py`, `num_cross` full-rank layers) then the deep tower stacked on it (the
paper's "stacked" structure), dropout, one logit per task. The history enters only as a mean, as
in DLRM: DCNv2 has no sequence module.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers.cross import CrossNetwork
from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs, ranking_head


class DCNv2(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 16
  num_cross: int = 2
  mlp_dims: tuple[int, ...] = (256, 128)
  dropout: float = 0.1
  watch_head: bool = False
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    n, c = batch["cand_ids"].shape
    inputs = RankingInputs(self.num_items, self.dim, self.num_tasks, self.user_vocab, self.item_vocab,
                           self.num_tabs, self.num_watch_buckets, name="inputs")
    hist_NHD, valid_NH = inputs.history(batch)
    count = jnp.maximum(valid_NH.sum(1, keepdims=True), 1).astype(hist_NHD.dtype)
    context_NF = jnp.concatenate([inputs.user(batch).reshape(n, -1), hist_NHD.sum(1) / count], axis=-1)
    cand_NCXD = jnp.stack([inputs.candidates(batch), inputs.candidate_items(batch)], axis=2)
    cand_NCXD = self.perturb("candidates", cand_NCXD)   # a zero no-op unless a test asks for its gradient
    x0 = jnp.concatenate([jnp.broadcast_to(context_NF[:, None], (n, c, context_NF.shape[-1])),
                          cand_NCXD.reshape(n, c, -1)], axis=-1)
    z = CrossNetwork(self.num_cross, name="cross")(x0)
    logits, watch = ranking_head(z, mlp_dims=self.mlp_dims, dropout=self.dropout, num_tasks=self.num_tasks,
                                 watch_head=self.watch_head, train=train)
    return {"logits": logits, "watch_ratio": watch}
