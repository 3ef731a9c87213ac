"""Wukong (Zang et al., ICML 2024, arXiv 2403.02545) alone on the ranking inputs: a Kunlun baseline.

Per candidate, the token set Z_0 = [user feature embeddings (Fu), the mean history token, the
candidate token, its item embedding, learned filler tokens up to a multiple of `experts`] [n, D];
`num_layers` Wukong layers Z_{i+1} = LN(Z_i + MoWE_i(Z_i)) (`recjax/layers/wukong.py`: FM block +
linear compression per expert, n tokens out), then flatten -> MLP -> dropout -> one logit per
task. The history enters only as a mean, as in DLRM: Wukong has no sequence module.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from recjax.layers.norms import layer_norm_no_affine
from recjax.layers.ranking_inputs import NUM_TABS, NUM_WATCH_BUCKETS, RankingInputs, ranking_head
from recjax.layers.wukong import MixtureOfWukongExperts


class Wukong(nn.Module):
  """batch (the ranking schema) -> {"logits": [N, C, T], "watch_ratio": [N, C] or None}."""
  num_items: int
  num_tasks: int
  user_vocab: tuple[int, ...] = ()
  item_vocab: tuple[int, ...] = ()
  dim: int = 32
  num_layers: int = 2
  experts: int = 2
  expert_hidden: int = 64
  mlp_dims: tuple[int, ...] = (256,)
  dropout: float = 0.1
  watch_head: bool = False
  num_tabs: int = NUM_TABS
  num_watch_buckets: int = NUM_WATCH_BUCKETS

  @nn.compact
  def __call__(self, batch, *, train: bool = False):
    n, c = batch["cand_ids"].shape
    d = self.dim
    inputs = RankingInputs(self.num_items, d, self.num_tasks, self.user_vocab, self.item_vocab,
                           self.num_tabs, self.num_watch_buckets, name="inputs")
    hist_NHD, valid_NH = inputs.history(batch)
    count = jnp.maximum(valid_NH.sum(1, keepdims=True), 1).astype(hist_NHD.dtype)
    context_NKD = jnp.concatenate([inputs.user(batch), (hist_NHD.sum(1) / count)[:, None]], axis=1)
    cand_NCXD = jnp.stack([inputs.candidates(batch), inputs.candidate_items(batch)], axis=2)
    cand_NCXD = self.perturb("candidates", cand_NCXD)   # a zero no-op unless a test asks for its gradient
    k = context_NKD.shape[1] + 2
    fill = (-k) % self.experts
    z = jnp.concatenate([jnp.broadcast_to(context_NKD[:, None], (n, c) + context_NKD.shape[1:]), cand_NCXD],
                        axis=2)
    if fill:
      filler = self.param("filler", nn.initializers.normal(0.02), (fill, d))
      z = jnp.concatenate([z, jnp.broadcast_to(filler, (n, c, fill, d))], axis=2)
    z = z.reshape(n * c, k + fill, d)   # candidates are independent rows from here on
    for i in range(self.num_layers):
      z = layer_norm_no_affine(z + MixtureOfWukongExperts(k + fill, self.experts, self.expert_hidden,
                                                          name=f"wukong_{i}")(z))
    z = z.reshape(n, c, (k + fill) * d)
    logits, watch = ranking_head(z, mlp_dims=self.mlp_dims, dropout=self.dropout, num_tasks=self.num_tasks,
                                 watch_head=self.watch_head, train=train)
    return {"logits": logits, "watch_ratio": watch}
