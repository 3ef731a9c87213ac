"""Retrieval losses over item embeddings: sampled softmax and exact full softmax.

Both take *token-packed* inputs: `user_emb [T, D]` is one row per supervised position (padding
already removed or carrying weight 0), so a batch of users with ragged histories costs only its
real tokens.

Sampled softmax follows the HSTU reference (papers.md §3.5 items 22-28): user and item vectors
are L2-normalised (eps 1e-6), logits are cosines divided by a temperature, the positive sits in
the denominator, a negative equal to the positive is removed (logit -5e4), duplicates among the
other negatives stay, and the loss is a weighted token mean.

The fast path (`sampled_softmax_loss`) is a `jax.custom_vjp` that walks the tokens in chunks so the
gathered `[chunk, N, D]` negative embeddings stay in cache instead of materialising the full
`[T, N, D]` tensor (≈ 650 MB at the ML-1M config): on a 2-core CPU this is the difference between
≈ 0.5 s and ≈ 0.15 s per step. `sampled_softmax_loss_reference` is the plain formula; tests check
that both give the same loss and gradients. On CPU, `impl="auto"` uses the fused C++ kernel of
`recjax.native` instead (one pass computing the loss and both gradients: ≈ 35 ms against ≈ 135 ms
for the scan at the ML-1M shape on 2 cores), with the scan as the fallback. On a mesh whose
item table is row-sharded, `impl="shard_map"` scores each candidate on the device that holds its
row and combines the softmax denominators across devices (`recjax/sharded_losses.py`).
"""
from __future__ import annotations

import functools

from absl import logging
import jax
import jax.numpy as jnp

from recjax import counter_rng, native, sharded_losses
from recjax.layers import sharded_embedding

REMOVED_LOGIT = -5e4  # what the reference code assigns to a negative that equals the positive
NORM_EPS = 1e-6


def l2_normalize(x: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """x / max(||x||_2, eps) over the last axis (HSTU's L2NormEmbeddingPostprocessor)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def sample_negatives(rng: jax.Array, num_tokens: int, num_negatives: int,
                     catalogue: jax.Array) -> jax.Array:
  """Per-position negatives: i.i.d. uniform draws with replacement from `catalogue` -> [T, N].

  The draws come from a counter-based hash seeded by one word of `rng` (`counter_rng`), not from
  `jax.random.randint`: at the ML-1M step's [14336, 128] on a 2-core Zen 3, ≈ 44 ms against ≈ 6 ms
  here (both including the catalogue lookup).
  """
  seed = counter_rng.seed_from(rng)
  idx = counter_rng.uniform_ints(seed, (num_tokens, num_negatives), catalogue.shape[0])
  return catalogue.at[idx].get(mode="promise_in_bounds")


def _logits(user_emb_TD, item_table_VD, ids_TK, temperature):
  """Cosine logits of each token against its candidate ids (column 0 = the positive) -> [T, K]."""
  items_TKD = item_table_VD.at[ids_TK].get(mode="promise_in_bounds")
  s_TK = jnp.einsum("td,tkd->tk", user_emb_TD, items_TKD) / temperature
  is_dup_of_pos = jnp.concatenate(
      [jnp.zeros_like(ids_TK[:, :1], bool), ids_TK[:, 1:] == ids_TK[:, :1]], axis=1)
  return jnp.where(is_dup_of_pos, REMOVED_LOGIT, s_TK)


def _chunk(x, chunk):
  return x.reshape((-1, chunk) + x.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _sampled_softmax_sum(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature, chunk):
  return _sampled_softmax_fwd(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature, chunk)[0]


def _sampled_softmax_fwd(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature, chunk):
  def body(_, xs):
    u, ids, w = xs
    s = _logits(u, item_table_VD, ids, temperature)
    lse = jax.nn.logsumexp(s, axis=-1)
    # Keep the softmax probabilities: [T, N+1] is small (8 MB at T=16k), and it saves
    # recomputing the gather in the backward pass.
    return None, (jnp.sum((lse - s[:, 0]) * w), jnp.exp(s - lse[:, None]))

  _, (loss_chunks, probs) = jax.lax.scan(
      body, None, (_chunk(user_emb_TD, chunk), _chunk(ids_TK, chunk), _chunk(weights_T, chunk)))
  residuals = (user_emb_TD, item_table_VD, ids_TK, weights_T, probs)
  return jnp.sum(loss_chunks), residuals


def _sampled_softmax_bwd(temperature, chunk, residuals, g):
  user_emb_TD, item_table_VD, ids_TK, weights_T, probs = residuals
  num_items, dim = item_table_VD.shape

  def body(d_table, xs):
    u, ids, w, p = xs
    # d loss / d logit = p - onehot(positive); chain through 1/temperature and the token weight.
    d_s = p.at[:, 0].add(-1.0) * (w * g / temperature)[:, None]            # [C, K]
    items = item_table_VD.at[ids].get(mode="promise_in_bounds")            # [C, K, D]
    d_u = jnp.einsum("ck,ckd->cd", d_s, items)
    contrib = (d_s[:, :, None] * u[:, None, :]).reshape(-1, dim)
    d_table = d_table + jax.ops.segment_sum(contrib, ids.reshape(-1), num_items)
    return d_table, d_u

  d_table, d_u = jax.lax.scan(
      body, jnp.zeros_like(item_table_VD),
      (_chunk(user_emb_TD, chunk), _chunk(ids_TK, chunk), _chunk(weights_T, chunk), probs))
  return d_u.reshape(user_emb_TD.shape), d_table, None, None


_sampled_softmax_sum.defvjp(_sampled_softmax_fwd, _sampled_softmax_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _native_sampled_softmax_sum(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature):
  return native.sampled_softmax_with_grads(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature)[0]


def _native_fwd(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature):
  # The kernel returns the gradients of the sum with the loss: one pass, kept as residuals.
  total, d_u, d_table = native.sampled_softmax_with_grads(user_emb_TD, item_table_VD, ids_TK, weights_T,
                                                          temperature)
  return total, (d_u, d_table)


def _native_bwd(temperature, residuals, g):
  d_u, d_table = residuals
  return g * d_u, g * d_table, None, None


_native_sampled_softmax_sum.defvjp(_native_fwd, _native_bwd)

SAMPLED_SOFTMAX_IMPLS = ("auto", "xla", "native", "shard_map")


def resolve_impl(impl: str) -> str:
  """"auto" -> "native" on a CPU backend where the C++ kernel builds, else "xla" (on a mesh the
  trainer picks the impl first: `train/mesh.resolve_fast_paths`)."""
  if impl not in SAMPLED_SOFTMAX_IMPLS:
    raise ValueError(f"loss.impl: sampled-softmax impl must be one of {SAMPLED_SOFTMAX_IMPLS}, got {impl!r}")
  if impl == "auto":
    return "native" if jax.default_backend() == "cpu" and native.available() else "xla"
  return impl


def sampled_softmax_loss(user_emb_TD: jax.Array, item_table_VD: jax.Array, pos_ids_T: jax.Array,
                         neg_ids_TN: jax.Array, weights_T: jax.Array, *, temperature: float,
                         chunk: int = 256, normalize: bool = True, impl: str = "auto",
                         mesh: jax.sharding.Mesh | None = None) -> jax.Array:
  """Weighted mean sampled-softmax loss over tokens.

  Args:
    user_emb_TD: [T, D] one row per supervised position.
    item_table_VD: [V, D] the (tied) item embedding table.
    pos_ids_T: [T] the id each position must predict.
    neg_ids_TN: [T, N] sampled negatives per position.
    weights_T: [T] token weights (0 for padding rows of a packed batch).
    temperature: logits are cosine / temperature.
    chunk: tokens per scan step; T is padded up to a multiple of it.
    normalize: L2-normalise user and item vectors first (HSTU protocol).
    impl: "xla" (the chunked scan above), "native" (the fused C++ kernel of `recjax.native`, CPU
      only), "auto" (native where available) or "shard_map" (`mesh` needed: the table row-sharded
      by `sharded_embedding.row_axes`, each candidate scored where its row lives,
      `sharded_losses`; a table no mesh axis divides runs "xla"). Same loss and gradients
      (tests/test_losses.py, tests/train/test_mesh.py).
    mesh: the device mesh, for impl="shard_map" only.
  Returns:
    scalar: sum_t w_t * loss_t / max(sum_t w_t, 1).
  """
  if user_emb_TD.ndim != 2 or neg_ids_TN.ndim != 2 or neg_ids_TN.shape[0] != user_emb_TD.shape[0]:
    raise ValueError(f"expected user_emb [T, D] and neg_ids [T, N], got {user_emb_TD.shape} "
                     f"and {neg_ids_TN.shape}")
  impl = resolve_impl(impl)
  if impl == "shard_map":
    if mesh is None:
      raise ValueError("loss.impl='shard_map' needs a device mesh (config.mesh of more than one device)")
    axes = sharded_embedding.row_axes(dict(mesh.shape), item_table_VD.shape[0])
    if axes is not None:   # normalised inside, only the rows each device reads
      ids_TK = jnp.concatenate([pos_ids_T[:, None], neg_ids_TN], axis=1)
      return sharded_losses.sampled_softmax_loss_sharded(
          user_emb_TD, item_table_VD, ids_TK, weights_T, mesh=mesh, axes=axes, temperature=temperature,
          chunk=chunk, normalize=normalize)
    # The table is replicated (no mesh axis divides its rows; the trainer notes it): nothing to shard.
    logging.info("loss.impl='shard_map': %d table rows divide over no axis of mesh %s; running 'xla'",
                 item_table_VD.shape[0], dict(mesh.shape))
    impl = "xla"
  if normalize:
    user_emb_TD, item_table_VD = l2_normalize(user_emb_TD), l2_normalize(item_table_VD)
  ids_TK = jnp.concatenate([pos_ids_T[:, None], neg_ids_TN], axis=1).astype(jnp.int32)
  if impl == "native":
    weights_T = weights_T.astype(user_emb_TD.dtype)
    total = _native_sampled_softmax_sum(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature)
    return total / jnp.maximum(jnp.sum(weights_T), 1.0)
  t = user_emb_TD.shape[0]
  chunk = max(1, min(chunk, t))
  pad = (-t) % chunk
  if pad:  # padded rows have weight 0 and a valid id, so they add nothing
    user_emb_TD = jnp.pad(user_emb_TD, ((0, pad), (0, 0)))
    ids_TK = jnp.pad(ids_TK, ((0, pad), (0, 0)), constant_values=1)
    weights_T = jnp.pad(weights_T, (0, pad))
  weights_T = weights_T.astype(user_emb_TD.dtype)
  total = _sampled_softmax_sum(user_emb_TD, item_table_VD, ids_TK, weights_T, temperature, chunk)
  return total / jnp.maximum(jnp.sum(weights_T), 1.0)


def sampled_softmax_loss_reference(user_emb_TD, item_table_VD, pos_ids_T, neg_ids_TN, weights_T, *,
                                   temperature: float, normalize: bool = True) -> jax.Array:
  """The plain formula (materialises [T, N, D]); the oracle for `sampled_softmax_loss`."""
  if normalize:
    user_emb_TD, item_table_VD = l2_normalize(user_emb_TD), l2_normalize(item_table_VD)
  ids_TK = jnp.concatenate([pos_ids_T[:, None], neg_ids_TN], axis=1)
  s = _logits(user_emb_TD, item_table_VD, ids_TK, temperature)
  per_token = jax.nn.logsumexp(s, axis=-1) - s[:, 0]
  return jnp.sum(per_token * weights_T) / jnp.maximum(jnp.sum(weights_T), 1.0)


def full_softmax_loss(user_emb_TD: jax.Array, item_table_VD: jax.Array, pos_ids_T: jax.Array,
                      weights_T: jax.Array, *, temperature: float, catalogue: jax.Array | None = None,
                      item_chunk: int = 65536, normalize: bool = True) -> jax.Array:
  """Exact softmax over the whole catalogue, chunked over items so memory stays O(T * item_chunk).

  A streaming logsumexp over item chunks (under `jax.checkpoint`, so the backward pass recomputes
  each chunk instead of storing [T, V]) keeps a 1M-item catalogue within a few hundred MB.
  `catalogue` restricts the denominator to those ids (default: every row but padding row 0).
  """
  if normalize:
    user_emb_TD, item_table_VD = l2_normalize(user_emb_TD), l2_normalize(item_table_VD)
  if catalogue is None:
    catalogue = jnp.arange(1, item_table_VD.shape[0], dtype=jnp.int32)
  n = catalogue.shape[0]
  item_chunk = max(1, min(item_chunk, n))
  pad = (-n) % item_chunk
  valid = jnp.pad(jnp.ones((n,), bool), (0, pad))
  cat = jnp.pad(catalogue, (0, pad), constant_values=catalogue[0])

  @jax.checkpoint
  def chunk_lse(u, ids, ok):
    s = (u @ item_table_VD[ids].T) / temperature
    return jax.nn.logsumexp(jnp.where(ok[None, :], s, -jnp.inf), axis=-1)

  def body(acc, xs):
    ids, ok = xs
    return jnp.logaddexp(acc, chunk_lse(user_emb_TD, ids, ok)), None

  init = jnp.full((user_emb_TD.shape[0],), -jnp.inf, user_emb_TD.dtype)
  lse, _ = jax.lax.scan(body, init, (cat.reshape(-1, item_chunk), valid.reshape(-1, item_chunk)))
  pos = jnp.sum(user_emb_TD * item_table_VD[pos_ids_T], axis=-1) / temperature
  per_token = lse - pos
  return jnp.sum(per_token * weights_T) / jnp.maximum(jnp.sum(weights_T), 1.0)


# ---------------------------------------------------------------------------------------------
# Ranking: multi-task binary cross-entropy (+ optional watch-ratio regression)
# ---------------------------------------------------------------------------------------------

def sigmoid_bce(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Elementwise −y log σ(x) − (1 − y) log(1 − σ(x)), stable for any x: max(x, 0) − x y + log1p(e^−|x|)."""
  return jnp.maximum(logits, 0.0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def multitask_bce_loss(logits_NT: jax.Array, labels_NT: jax.Array, weights_N: jax.Array,
                       task_weights_T, *, watch_pred_N: jax.Array | None = None,
                       watch_target_N: jax.Array | None = None, watch_weight: float = 0.0
                       ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Weighted multi-task BCE over N candidates and T binary tasks.

      loss = Σ_t τ_t · bce_t + λ · mse,   bce_t = Σ_n w_n BCE(x_nt, y_nt) / Σ_n w_n,
      mse  = Σ_n w_n (r̂_n − r_n)² / Σ_n w_n   (only when λ = watch_weight > 0)

  Args:
    logits_NT: [N, T] one logit per candidate and task.
    labels_NT: [N, T] in {0, 1}.
    weights_N: [N] candidate weights (0 = padding candidate).
    task_weights_T: [T] per-task weights τ (config), a sequence or array.
    watch_pred_N, watch_target_N: [N] predicted and true (bucketed or clipped) watch ratio for the
      optional regression head; needed when watch_weight > 0.
    watch_weight: λ.
  Returns:
    (scalar loss, {"bce_T": [T] per-task BCE, "watch_mse": scalar (0 when off)}).
  """
  if logits_NT.ndim != 2 or labels_NT.shape != logits_NT.shape:
    raise ValueError(f"logits and labels must both be [N, T], got {logits_NT.shape} and {labels_NT.shape}")
  task_weights_T = jnp.asarray(task_weights_T, jnp.float32)
  if task_weights_T.shape != (logits_NT.shape[1],):
    raise ValueError(f"need one task weight per task ({logits_NT.shape[1]}), got shape {task_weights_T.shape}")
  if weights_N.shape != logits_NT.shape[:1]:
    raise ValueError(f"weights must be [N] = [{logits_NT.shape[0]}], got {weights_N.shape}")
  weights_N = weights_N.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(weights_N), 1e-9)
  per_nt = sigmoid_bce(logits_NT.astype(jnp.float32), labels_NT.astype(jnp.float32))
  bce_T = jnp.sum(per_nt * weights_N[:, None], axis=0) / denom
  loss = jnp.sum(task_weights_T * bce_T)
  watch_mse = jnp.zeros((), jnp.float32)
  if watch_weight > 0.0:
    if watch_pred_N is None or watch_target_N is None:
      raise ValueError("watch_weight > 0 needs watch_pred_N and watch_target_N")
    if watch_pred_N.shape != weights_N.shape or watch_target_N.shape != weights_N.shape:
      raise ValueError(f"watch predictions and targets must be [N], got {watch_pred_N.shape} and "
                       f"{watch_target_N.shape}")
    err = watch_pred_N.astype(jnp.float32) - watch_target_N.astype(jnp.float32)
    watch_mse = jnp.sum(weights_N * err * err) / denom
    loss = loss + watch_weight * watch_mse
  return loss, {"bce_T": bce_T, "watch_mse": watch_mse}


# ---------------------------------------------------------------------------------------------
# Generative retrieval: next-SID cross-entropy under teacher forcing (TIGER)
# ---------------------------------------------------------------------------------------------

def next_sid_loss(logits_BLK: jax.Array, target_codes_BL: jax.Array, weights_B: jax.Array | None = None
                  ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of the L target codes, each given the true codes before it (teacher forcing).

      loss = Σ_b w_b Σ_l −log softmax(logits_bl)[c_bl] / (L Σ_b w_b)

  i.e. the mean per-token CE (T5's normalisation); L · loss is the mean −log p(SID).

  Args:
    logits_BLK: [B, L, K] the decoder's logits of level l given levels < l (`models.tiger.TIGER`).
    target_codes_BL: [B, L] int codes in 0..K-1.
    weights_B: [B] example weights (0 = padding example); None = all 1.
  Returns:
    (scalar loss, {"nll_L": [L] weighted mean CE per level, "accuracy_L": [L] argmax == target}).
  """
  if logits_BLK.ndim != 3 or target_codes_BL.shape != logits_BLK.shape[:2]:
    raise ValueError(f"next_sid_loss: need logits [B, L, K] and targets [B, L], got {logits_BLK.shape} "
                     f"and {target_codes_BL.shape}")
  b = logits_BLK.shape[0]
  weights_B = jnp.ones((b,), jnp.float32) if weights_B is None else weights_B.astype(jnp.float32)
  if weights_B.shape != (b,):
    raise ValueError(f"next_sid_loss: weights must be [B] = [{b}], got {weights_B.shape}")
  logp_BLK = jax.nn.log_softmax(logits_BLK.astype(jnp.float32), axis=-1)
  target_BL1 = target_codes_BL.astype(jnp.int32)[..., None]
  nll_BL = -jnp.take_along_axis(logp_BLK, target_BL1, axis=-1)[..., 0]
  hit_BL = (jnp.argmax(logits_BLK, axis=-1) == target_BL1[..., 0]).astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(weights_B), 1e-9)
  nll_L = weights_B @ nll_BL / denom
  return jnp.mean(nll_L), {"nll_L": nll_L, "accuracy_L": weights_B @ hit_BL / denom}
