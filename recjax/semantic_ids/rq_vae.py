"""RQ-VAE tokenizer (TIGER, papers.md §6e): encoder MLP -> L residual codebooks of K codes ->
decoder MLP, trained with optax inside one jitted step.

  z = enc(x);  r_0 = z;  c_l = argmin_k ||r_l - e_{l,k}||²;  q_l = e_{l,c_l};  r_{l+1} = r_l - q_l
  ẑ = Σ_l q_l;  x̂ = dec(estimator(z, ẑ))
  loss = mean_n ||x - x̂||²  +  mean_n Σ_l ( ||sg[r_l] - q_l||² + β ||r_l - sg[q_l]||² )

Estimators (`RQVAEConfig.estimator`), both with forward value ẑ:
  "ste"       straight-through: z + sg(ẑ - z); the decoder's gradient is copied onto z.
  "rotation"  the rotation trick (Fifty et al. 2024): sg(λR) z with R the rotation taking z/|z| to
              ẑ/|ẑ| and λ = |ẑ|/|z|, so the gradient reaching z is rotated and scaled like the
              quantisation, which lets the angle between z and its code inform the encoder.

Codebooks start from residual k-means on the encoder's output for the first batch (this is what
keeps level 1 from collapsing at step 0). Dead-code reset: every `dead_code_reset_every` steps,
codes no batch item took since the last reset are moved onto random residuals of the current batch
at that level. Per-level utilisation and perplexity come from `codes.codebook_usage`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from recjax.semantic_ids import rq_kmeans
from recjax.semantic_ids.codes import LevelUsage, codebook_usage

ESTIMATORS = ("ste", "rotation")


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
  num_levels: int = 3
  codebook_size: int = 256
  latent_dim: int = 32
  hidden_dims: tuple[int, ...] = (512, 256, 128)   # encoder widths; the decoder mirrors them
  beta: float = 0.25                                 # commitment weight
  estimator: str = "ste"                             # "ste" | "rotation"
  learning_rate: float = 1e-3
  batch_size: int = 1024
  num_steps: int = 3000
  dead_code_reset_every: int = 100                   # 0 = never reset
  kmeans_iters: int = 50
  seed: int = 0
  kmeans_restarts: int = 1     # k-means runs per level of the codebook initialisation (RQKMeansConfig.restarts)

  def __post_init__(self):
    object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"RQVAEConfig.estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
    if (min(self.num_levels, self.codebook_size, self.latent_dim, self.batch_size, self.kmeans_restarts) < 1
        or self.num_steps < 0):
      raise ValueError(f"RQVAEConfig: sizes and kmeans_restarts must be >= 1 and num_steps >= 0, got {self}")
    if self.beta < 0 or self.dead_code_reset_every < 0:
      raise ValueError(f"RQVAEConfig: beta and dead_code_reset_every must be >= 0, got {self}")


class MLP(nn.Module):
  widths: Sequence[int]

  @nn.compact
  def __call__(self, x):
    for i, w in enumerate(self.widths):
      x = nn.Dense(w)(x)
      if i < len(self.widths) - 1:
        x = nn.silu(x)
    return x


def rotate_onto(z_ND: jax.Array, q_ND: jax.Array, eps: float = 1e-8) -> jax.Array:
  """The rotation trick: value q, gradient w.r.t. z rotated and scaled as z -> q (R, λ constant).

  R z = z - 2 r (r·z) + 2 q̂ (ê·z) with ê = z/|z|, q̂ = q/|q|, r = (ê + q̂)/|ê + q̂| (a Householder
  reflection through r followed by one through q̂, i.e. the rotation in the plane of ê and q̂).
  """
  zs, qs = jax.lax.stop_gradient(z_ND), jax.lax.stop_gradient(q_ND)
  zn = jnp.maximum(jnp.linalg.norm(zs, axis=-1, keepdims=True), eps)
  qn = jnp.maximum(jnp.linalg.norm(qs, axis=-1, keepdims=True), eps)
  e, qh = zs / zn, qs / qn
  r = e + qh
  r = r / jnp.maximum(jnp.linalg.norm(r, axis=-1, keepdims=True), eps)
  dot = lambda a, b: jnp.sum(a * b, axis=-1, keepdims=True)
  rz = z_ND - 2.0 * r * dot(r, z_ND) + 2.0 * qh * dot(e, z_ND)
  return (qn / zn) * rz


def quantize(z_ND: jax.Array, books_LKD: jax.Array, beta: float):
  """Residual quantisation with its VQ loss -> (ẑ [N, D], codes [N, L], residuals [N, L, D], vq loss)."""
  codes, res = rq_kmeans.residual_encode(jax.lax.stop_gradient(z_ND), jax.lax.stop_gradient(books_LKD))
  vq, r, q_sum = 0.0, z_ND, 0.0
  for l in range(books_LKD.shape[0]):
    q = books_LKD[l][codes[:, l]]
    vq = vq + jnp.mean(jnp.sum((jax.lax.stop_gradient(r) - q) ** 2, -1))
    vq = vq + beta * jnp.mean(jnp.sum((r - jax.lax.stop_gradient(q)) ** 2, -1))
    r = r - jax.lax.stop_gradient(q)
    q_sum = q_sum + q
  return q_sum, codes, res, vq


class RQVAE:
  """A trained (or initialised) RQ-VAE: params {"encoder", "decoder", "codebooks" [L, K, d]}."""

  def __init__(self, config: RQVAEConfig, input_dim: int, params=None, history=None):
    self.config, self.input_dim = config, input_dim
    self.encoder = MLP(config.hidden_dims + (config.latent_dim,))
    self.decoder = MLP(tuple(reversed(config.hidden_dims)) + (input_dim,))
    self.params = params
    self.history = history or []

  def latent(self, x_ND) -> np.ndarray:
    return np.asarray(self.encoder.apply(self.params["encoder"], rq_kmeans.as_vectors(x_ND, self.input_dim)))

  def encode(self, x_ND) -> np.ndarray:
    """Codes [N, L] int32."""
    codes, _ = rq_kmeans.residual_encode(jnp.asarray(self.latent(x_ND)), self.params["codebooks"])
    return np.asarray(codes)

  def residuals(self, x_ND) -> np.ndarray:
    """Latent residual before each level -> [N, L, d] (for `rq_kmeans.last_level_costs`)."""
    _, res = rq_kmeans.residual_encode(jnp.asarray(self.latent(x_ND)), self.params["codebooks"])
    return np.asarray(res)

  def decode(self, codes_NL) -> np.ndarray:
    z = rq_kmeans.decode(codes_NL, self.params["codebooks"])
    return np.asarray(self.decoder.apply(self.params["decoder"], z))

  def usage(self, x_ND) -> list[LevelUsage]:
    return codebook_usage(self.encode(x_ND), self.config.codebook_size)


def _loss_fn(model: RQVAE, params, x_BD):
  cfg = model.config
  z = model.encoder.apply(params["encoder"], x_BD)
  zq, codes, res, vq = quantize(z, params["codebooks"], cfg.beta)
  z_dec = z + jax.lax.stop_gradient(zq - z) if cfg.estimator == "ste" else rotate_onto(z, zq)
  x_hat = model.decoder.apply(params["decoder"], z_dec)
  recon = jnp.mean(jnp.sum((x_BD - x_hat) ** 2, -1))
  return recon + vq, {"recon": recon, "vq": vq, "codes": codes, "residuals": res}


def _make_train_step(model: RQVAE, tx: optax.GradientTransformation):
  cfg = model.config
  k = cfg.codebook_size

  @jax.jit
  def train_step(params, opt_state, usage_LK, step, key, x_BD):
    (loss, aux), grads = jax.value_and_grad(functools.partial(_loss_fn, model), has_aux=True)(params, x_BD)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    counts = jax.vmap(lambda c: jnp.bincount(c, length=k), in_axes=1)(aux["codes"])  # [L, K]
    usage_LK = usage_LK + counts
    if cfg.dead_code_reset_every:
      do_reset = (step + 1) % cfg.dead_code_reset_every == 0
      rows = jax.random.randint(key, (cfg.num_levels, k), 0, x_BD.shape[0])
      fresh = jnp.take_along_axis(jnp.swapaxes(aux["residuals"], 0, 1), rows[..., None], axis=1)  # [L, K, d]
      dead = do_reset & (usage_LK == 0)
      params = {**params, "codebooks": jnp.where(dead[..., None], fresh, params["codebooks"])}
      usage_LK = jnp.where(do_reset, 0, usage_LK)
    return params, opt_state, usage_LK, {"loss": loss, "recon": aux["recon"], "vq": aux["vq"]}

  return train_step


def fit_rq_vae(x_ND, config: RQVAEConfig = RQVAEConfig(), log_every: int = 100) -> RQVAE:
  """Trains an RQ-VAE on item vectors [N, D] (deterministic in config.seed on a fixed backend).

  history: one dict per `log_every` steps with loss, recon, vq and per-level utilisation/perplexity
  of the full catalogue's codes.
  """
  x_np = np.asarray(rq_kmeans.as_vectors(x_ND))
  n, d = x_np.shape
  if n < config.codebook_size:
    raise ValueError(f"fit_rq_vae: {n} items cannot seed {config.codebook_size} codes")
  model = RQVAE(config, d)
  rng = np.random.default_rng(config.seed)
  key = jax.random.PRNGKey(config.seed)
  k_enc, k_dec, k_km, key = jax.random.split(key, 4)
  batch = min(config.batch_size, n)
  order = rng.permutation(n)
  enc_params = model.encoder.init(k_enc, jnp.zeros((1, d)))
  dec_params = model.decoder.init(k_dec, jnp.zeros((1, config.latent_dim)))
  # k-means initialisation on the first batch (at least K rows so every code gets a seed).
  first = x_np[order[:max(batch, config.codebook_size)]]
  z0 = model.encoder.apply(enc_params, jnp.asarray(first))
  km = rq_kmeans.fit_rq_kmeans(z0, rq_kmeans.RQKMeansConfig(
      config.num_levels, config.codebook_size, config.kmeans_iters, seed=config.seed,
      restarts=config.kmeans_restarts))
  params = {"encoder": enc_params, "decoder": dec_params, "codebooks": jnp.asarray(km.codebooks_LKD)}
  tx = optax.adam(config.learning_rate)
  opt_state = tx.init(params)
  train_step = _make_train_step(model, tx)
  usage = jnp.zeros((config.num_levels, config.codebook_size), jnp.int32)
  history, pos = [], 0
  for step in range(config.num_steps):
    if pos + batch > n:
      order, pos = rng.permutation(n), 0
    xb = jnp.asarray(x_np[order[pos:pos + batch]])
    pos += batch
    key, sub = jax.random.split(key)
    params, opt_state, usage, m = train_step(params, opt_state, usage, step, sub, xb)
    if log_every and ((step + 1) % log_every == 0 or step + 1 == config.num_steps):
      model.params = params
      history.append({"step": step + 1, **{k: float(v) for k, v in m.items()},
                      "levels": [dataclasses.asdict(u) for u in model.usage(x_np)]})
  model.params = params
  model.history = history
  return model
